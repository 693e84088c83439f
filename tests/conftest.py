import numpy as np
import pytest
import torch

from stitchlib import data, models, train

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits16():
    """The embedded default data at 16×16: (train, test) TensorDatasets."""
    return data.load("digits", "train", image_size=16), data.load("digits", "test", image_size=16)


@pytest.fixture(scope="session")
def trained_resnet(digits16):
    """A small ResNet-18 (width 8) trained for 3 epochs on the digits: real, structured activations."""
    torch.manual_seed(0)
    net = models.build("resnet18", num_classes=10, image_size=16, width=8)
    metrics = train.train_network(net, *digits16, dict(optimizer="adam", lr=1e-3, weight_decay=1e-5, epochs=3,
                                                      batch_size=64), seed=0, device=torch.device("cpu"),
                                  progress=lambda s: None)
    assert metrics["test_accuracy"] > 0.8
    return net.eval()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------- reliability counts

RELIABILITY = {  # marker -> what a passing test of it shows (tests/test_reliability.py, tests/test_config.py)
    "malformed_config": "malformed configs rejected with the key path",
    "corrupt_input": "corrupt or odd inputs refused or given a documented value",
    "fault_injection": "SIGKILLs survived (resumed to identical tables)",
    "code_refused": "configs that would run code refused before it runs",
}


def pytest_configure(config):
    for name, what in RELIABILITY.items():
        config.addinivalue_line("markers", f"{name}: counted in the summary line '{what}'")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Tag each test's call report with its reliability markers and case count (``record_property('cases', n)``
    for a test that covers several cases, e.g. one run killed three times)."""
    report = (yield).get_result()
    if report.when == "call":
        report.reliability = [m.name for m in item.iter_markers() if m.name in RELIABILITY]


def pytest_terminal_summary(terminalreporter):
    counts = {name: [0, 0] for name in RELIABILITY}  # passed cases, failed tests
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for name in getattr(report, "reliability", []):
                if outcome == "passed":
                    counts[name][0] += int(dict(report.user_properties).get("cases", 1))
                else:
                    counts[name][1] += 1
    if any(p or f for p, f in counts.values()):
        terminalreporter.section("reliability suites")
        for name, (passed, failed) in counts.items():
            terminalreporter.write_line(f"{RELIABILITY[name]}: {passed}" + (f" ({failed} FAILED)" if failed else ""))
