import copy
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stitchlib import cli
from stitchlib import config as sconf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench_dag  # noqa: E402

DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_validates_with_defaults_filled():
    cfg = sconf.validate(DEFAULT)
    assert cfg["tlm"]["lr"] == 0.001 and cfg["tlm"]["batch_size"] == 256 and cfg["dm"]["samples"] == 100
    assert sconf.train_settings(cfg, "vit")["epochs"] == 30 and sconf.train_settings(cfg, "resnet18")["epochs"] == 10
    assert len(sconf.network_pairs(cfg, "intra")) == 6 and len(sconf.network_pairs(cfg, "inter")) == 12


def _with(path: str, value):
    cfg = copy.deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return cfg


# (key to change, malformed value, key path the message must start with, what it must say)
BAD = [
    ("tlm.epochs", -1, "tlm.epochs", "less than the minimum of 0"),
    ("train.epochs", 2.5, "train.epochs", "not of type 'integer'"),
    ("tlm.lr", "fast", "tlm.lr", "not of type 'number'"),
    ("train.batch_size", -64, "train.batch_size", "less than the minimum of 1"),
    ("train.optimizer", "adamw", "train.optimizer", "'adamw' is not one of"),
    ("seeds", [], "seeds", "should be non-empty"),
    ("seeds", [0, 0], "seeds", "non-unique"),
    ("seeds", "0,1", "seeds", "not of type 'array'"),
    ("seeds", [-1], "seeds[0]", "less than the minimum of 0"),
    ("bogus", 1, "(top level)", "'bogus' was unexpected"),
    ("threads", 0, "threads", "less than the minimum of 1"),
    ("dm.samples", 5000, "dm.samples", "larger than the digits training split (1400)"),
    ("dm.samples", "some", "dm.samples", "not valid under any of the given schemas: "),
    ("dm.rcond", -1, "dm.rcond", "less than or equal to the minimum of 0"),
    ("similarity.samples", 1000, "similarity.samples", "larger than the digits test split (397)"),
    ("similarity.measures", ["cka2"], "similarity.measures[0]", "'cka2' is not one of"),
    ("similarity.reshape", {"lcka": "squash"}, "similarity.reshape.lcka", "'squash' is not one of"),
    ("datasets", ["digits"], "datasets", "not of type 'object'"),
    ("datasets.mnist", {}, "datasets.mnist", "unknown dataset 'mnist'"),
    ("datasets.cifar10", {"root": "/no/such/folder"}, "datasets.cifar10.root",
     "/no/such/folder/cifar-10-batches-py/data_batch_1 does not exist"),
    ("datasets.svhn", {}, "datasets.svhn.root", "needs a local root holding: train_32x32.mat, test_32x32.mat"),
    ("datasets.digits.image_size", 2, "datasets.digits.image_size", "less than the minimum of 4"),
    ("architectures.resnet18", {"params": {}}, "architectures.resnet18", "'family' is a required property"),
    ("architectures.resnet18.family", "resnet1000", "architectures.resnet18.family", "is not one of ['resnet18'"),
    ("architectures.resnet18.layers", ["layer1.0", "layer9.9"], "architectures.resnet18.layers[1]",
     "resnet18 has no layer 'layer9.9'"),
    ("architectures.resnet18.layers", ["layer2.0", "layer1.0"], "architectures.resnet18.layers", "in network order"),
    ("architectures.resnet18.layers", [], "architectures.resnet18.layers", "should be non-empty"),
    ("architectures.vit.layers", ["block7"], "architectures.vit.layers[0]", "vit has no layer 'block7'"),
    ("architectures.resnet18.params", {"depth": 3}, "architectures.resnet18.params", "unknown parameter(s) ['depth']"),
    ("architectures.vit.params", {"depth": "six"}, "architectures.vit.params.depth", "expected int, got 'six'"),
    ("architectures.vit.params", {"patch_size": 5}, "architectures.vit.params.patch_size", "does not divide"),
    ("architectures.vit.train", {"epochs": "ten"}, "architectures.vit.train.epochs", "not of type 'integer'"),
    ("architectures.resnet18.train", {"epoch": 3}, "architectures.resnet18.train", "'epoch' was unexpected"),
    ("architectures.bad-name", {"family": "vit"}, "architectures", "'bad-name' does not match"),
    ("stitching.settings", ["sideways"], "stitching.settings[0]", "'sideways' is not one of"),
    ("stitching.methods", ["magic"], "stitching.methods[0]", "'magic' is not one of"),
    ("stitching.methods", [], "stitching.methods", "should be non-empty"),
    ("tlm.labels", "fuzzy", "tlm.labels", "'fuzzy' is not one of"),
    ("tlm.augment", "flip_crop", "tlm.augment", "the frozen fronts must be recomputed"),
    ("cache.test.samples", 1000, "cache.test.samples", "larger than the digits test split"),
    ("cache.consumers.tlm", "sometimes", "cache.consumers.tlm", "is not one of"),
    ("extract.dtype", "float64", "extract.dtype", "'float64' is not one of"),
    ("ood.enabled", "yes", "ood.enabled", "not of type 'boolean'"),
    ("ood.outliers.n", 0, "ood.outliers.n", "less than the minimum of 1"),
    ("tables.tie_rule", "coin", "tables.tie_rule", "'coin' is not one of"),
    ("uncertainty.replicates", 5, "uncertainty.replicates", "less than the minimum of 20"),
    ("uncertainty.method", "bca", "uncertainty.method", "'bca' is not one of"),
    ("uncertainty.level", 95, "uncertainty.level", "greater than or equal to the maximum of 1"),
    ("uncertainty.indices", ["lcka", "dm_struct"], "uncertainty.indices[1]", "'dm_struct' is not computed"),
    ("results", "../../etc; rm -rf /", "results", "does not match"),
    ("device", "tpu", "device", "'tpu' is not one of"),
    # issue 18: values that passed the schema and then broke a job, or never failed at all
    ("train.epochs", 1.0, "train.epochs", "1.0 is not of type 'integer' (a float"),
    ("tlm.epochs", 1.0e308, "tlm.epochs", "is not of type 'integer'"),
    ("tlm.batch_size", 10**30, "tlm.batch_size", "is greater than the maximum of 1048576"),
    ("cross.seed", 2**40, "cross.seed", "larger than 2147483647, the largest integer a key takes"),
    ("tlm.lr", float("nan"), "tlm.lr", "nan is not a finite number"),
    ("train.weight_decay", float("inf"), "train.weight_decay", "inf is not a finite number"),
    ("seeds", [0.0, 1.0], "seeds[0]", "0.0 is not of type 'integer'"),
    ("threads", True, "threads", "True is not of type 'integer'"),
    ("dm.rcond", 1.0, "dm.rcond", "greater than or equal to the maximum of 1"),
    ("dm.samples", "some", "dm.samples", "'some' is not of type 'integer'; or 'all' was expected"),
    ("tlm.group_size", 0, "tlm.group_size", "0 is less than the minimum of 1; or 'auto' was expected"),
    ("similarity.samples", 2, "similarity.samples", "2 is less than the minimum of 10"),
    ("architectures.resnet18.params", {"width": 0}, "architectures.resnet18.params.width",
     "0 is not an integer in [1, 4096]"),
    ("architectures.vit.params", {"patch_size": 4, "depth": 6, "heads": 5, "hidden_dim": 48, "mlp_dim": 96},
     "architectures.vit.params.heads", "5 attention heads do not divide hidden_dim 48"),
    ("architectures.vit.params", {"dropout": float("nan")}, "architectures.vit.params.dropout", "nan is not a number"),
    ("ood.detector.tokens", {"hidden_dim": 32, "heads": 3}, "ood.detector.tokens.heads",
     "3 attention heads do not divide hidden_dim 32"),
    ("ood.finetune", {"m_in": -7.0, "m_out": -25.0}, "ood.finetune.m_in", "m_in = -7.0 must be below m_out = -25.0"),
    ("ood.finetune", {"m_in": -5.0}, "ood.finetune.m_in", "must be below m_out = -7.0"),  # against the default
    ("architectures.a" + "x" * 64, {"family": "vit"}, "architectures", "is too long"),
    ("architectures.resnet18.layers", ["layer1.0", ".."], "architectures.resnet18.layers[1]", "has no layer '..'"),
]


@pytest.mark.malformed_config
@pytest.mark.parametrize("path,value,key,detail", BAD, ids=[f"{b[0]}={b[1]!r:.20}" for b in BAD])
def test_malformed_config_is_rejected_with_key_path(path, value, key, detail):
    with pytest.raises(sconf.ConfigError) as e:
        sconf.validate(_with(path, value))
    message = str(e.value)
    assert re.match(rf"(config key )?{re.escape(key)}: ", message), message  # the key path comes first
    assert detail in message, message


@pytest.mark.malformed_config
def test_bootstrap_tie_rule_needs_the_resamples():
    cfg = _with("tables.tie_rule", "bootstrap")
    assert sconf.validate(cfg)["tables"]["tie_rule"] == "bootstrap"
    cfg["uncertainty"] = {"enabled": False}
    with pytest.raises(sconf.ConfigError, match="^tables.tie_rule: 'bootstrap' needs the resamples"):
        sconf.validate(cfg)


@pytest.mark.malformed_config
def test_inter_needs_two_seeds():
    with pytest.raises(sconf.ConfigError, match="^stitching.settings: 'inter' needs at least two seeds"):
        sconf.validate(_with("seeds", [0]))


def test_digits_split_sizes_match_the_data():
    from stitchlib import data

    assert [len(data.load("digits", split)) for split in ("train", "test")] == [sconf.DIGITS_TRAIN_SIZE,
                                                                              sconf.DIGITS_TEST_SIZE]


def test_network_ids_round_trip():
    assert sconf.parse_network(sconf.network_id("my_net", 12)) == ("my_net", 12)


def test_paper1_config_validates_against_a_cifar_layout(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "paper1-cifar10.yaml").read_text())
    raw["datasets"]["cifar10"]["root"] = str(tmp_path)
    with pytest.raises(sconf.ConfigError, match="datasets.cifar10.root"):
        sconf.validate(raw)
    (tmp_path / "cifar-10-batches-py").mkdir()
    for f in ("data_batch_1", "test_batch"):
        (tmp_path / "cifar-10-batches-py" / f).touch()
    with pytest.raises(sconf.ConfigError, match="ood.outliers.path"):
        sconf.validate(raw)
    raw["ood"]["outliers"]["path"] = bench_dag.fake_outliers(tmp_path / "300K.npy")
    cfg = sconf.validate(raw)
    assert cfg["similarity"]["samples"] == 1000 and cfg["ood"]["detector"]["conv"]["width"] == 64
    assert len(sconf.networks(cfg)) == 20
    assert len(sconf.network_pairs(cfg, "inter")) == 2 * 90


def test_stitching_architectures_selects_paper1_networks():
    cfg = sconf.validate(_with("stitching.architectures", ["resnet18"]))
    assert sconf.networks(cfg) == ["resnet18-s0", "resnet18-s1", "resnet18-s2"]
    assert len(sconf.network_pairs(cfg, "inter")) == 6
    with pytest.raises(sconf.ConfigError, match=r"stitching.architectures\[0\]: 'nope'"):
        sconf.validate(_with("stitching.architectures", ["nope"]))


# ----------------------------------------------------------------------------- issue 18: the raw files

def _yaml(tmp_path, text: str, name="my.yaml") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


TINY_YAML = (ROOT / "tests" / "configs" / "tiny.yaml").read_text()


@pytest.mark.malformed_config
@pytest.mark.parametrize("text,message", [
    (TINY_YAML + "seeds: [0, 2]\n", r"my.yaml:\d+:1: config key seeds is given twice \(first on line \d+\)"),
    (TINY_YAML.replace("tlm: {epochs: 1}", "tlm:\n  epochs: 1\n  lr: 0.1\n  epochs: 3"),
     r"my.yaml:\d+:3: config key tlm.epochs is given twice"),
    ("seeds: [0, 1\ndatasets: {digits: {}}\n", r"my.yaml:2:9: not valid YAML: .*flow sequence on line 1"),
    ("- a\n- b\n", r"my.yaml: the top level must be a mapping of keys, not list"),
])
def test_raw_config_file_errors_give_line_and_column(tmp_path, text, message):
    with pytest.raises(sconf.ConfigError, match=message):
        sconf.load(_yaml(tmp_path, text))


@pytest.mark.workflow
@pytest.mark.malformed_config
def test_snakemake_reports_duplicate_keys_and_yaml_errors_with_their_position(tmp_path, record_property):
    """Under snakemake too: a --configfile with a key given twice, and a broken default config.yaml."""
    smk = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n"]
    dup = _yaml(tmp_path, TINY_YAML + "seeds: [0, 2]\n")
    out = subprocess.run([*smk, "--configfile", str(dup)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and re.search(r"my.yaml:\d+:1: config key seeds is given twice", out.stdout + out.stderr)
    _yaml(tmp_path, "seeds: [0, 1\n", "config.yaml")  # the default config file, read by the Snakefile
    out = subprocess.run(smk, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "config.yaml:2:1: not valid YAML" in out.stdout + out.stderr, out.stdout[-2000:]
    record_property("cases", 2)


def test_check_config_prints_warnings_and_errors_with_the_key(tmp_path, capsys):
    ok = _yaml(tmp_path, TINY_YAML + "similarity: {samples: 20}\n")
    assert cli.main(["check-config", "--no-build", str(ok)]) == 0
    out = capsys.readouterr()
    assert "warning: similarity.samples: 20 test images make the indices biased towards 1 (rule: at least 100" \
        in out.err and "samples: 20" in out.out
    assert cli.main(["check-config", "--no-build", str(_yaml(tmp_path, TINY_YAML + "tlm: {}\n"))]) == 1
    assert "config key tlm is given twice" in capsys.readouterr().err


@pytest.mark.parametrize("path,value,message", [
    ("tlm.epochs", 0, "tlm.epochs: 0 epochs train nothing (TLM results equal DM's)"),
    ("train.warmup_epochs", 10, "architectures.resnet18.train.warmup_epochs: 10 warm-up epochs of 10"),
    ("train.schedule", "multistep", None),
])
def test_values_that_mislead_are_warned_with_the_rule(path, value, message):
    cfg = _with(path, value)
    if message is None:  # milestones past the last epoch
        cfg["train"]["milestones"] = [5, 40]
        message = "architectures.resnet18.train.milestones: [40] are not below epochs = 10"
    with pytest.warns(sconf.ConfigWarning, match=re.escape(message)):
        sconf.validate(cfg)


# ----------------------------------------------------------------------------- issue 18: files named by the config

@pytest.mark.malformed_config
def test_results_must_not_be_a_file(tmp_path):
    (tmp_path / "out").write_text("")
    for results in (tmp_path / "out", tmp_path / "out" / "results"):
        with pytest.raises(sconf.ConfigError, match=rf"^results: .* must be a folder, but {tmp_path}/out is a file"):
            sconf.validate(_with("results", str(results)))


def _npy(path, shape, dtype="uint8", cut=0):
    a = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    del a
    if cut:
        path.write_bytes(path.read_bytes()[:-cut])
    return str(path)


@pytest.mark.malformed_config
@pytest.mark.parametrize("kind,message", [
    ("float", "holds a float32 array of shape (5, 8, 8, 3); outlier images must be uint8"),
    ("grey", "holds a uint8 array of shape (5, 8, 8); outlier images must be uint8 of shape (N, H, W, 3)"),
    ("truncated", "is 1078 bytes, but its header promises 1088 (shape (5, 8, 8, 3)): truncated"),
    ("csv", "is not a .npy array file"),
])
def test_outlier_file_is_checked_from_its_header(tmp_path, kind, message):
    p = tmp_path / "300K.npy"
    if kind == "csv":
        p.write_text("a,b\n1,2\n")
    else:
        _npy(p, (5, 8, 8) if kind == "grey" else (5, 8, 8, 3), "float32" if kind == "float" else "uint8",
             cut=10 if kind == "truncated" else 0)
    cfg = _with("ood.outliers", {"source": "npy", "path": str(p)})
    with pytest.raises(sconf.ConfigError, match=rf"^ood.outliers.path: {re.escape(str(p))}.*{re.escape(message)}"):
        sconf.validate(cfg)


def test_an_outlier_file_smaller_than_n_is_warned(tmp_path):
    cfg = _with("ood.outliers", {"source": "npy", "path": _npy(tmp_path / "o.npy", (5, 8, 8, 3)), "n": 10})
    with pytest.warns(sconf.ConfigWarning, match="ood.outliers.n: 10 outlier images asked for, but .* holds 5"):
        sconf.validate(cfg)


def _custom(tmp_path, state_dict="nets/mine-s{seed}.pt", **extra):
    cfg = copy.deepcopy(DEFAULT)
    cfg["architectures"] = {"mine": {"family": "custom", "params": {
        "factory": "torchvision.models.resnet18", "kwargs": {"num_classes": 10}, "points": ["layer1", "layer2"],
        "state_dict": str(tmp_path / state_dict), **extra}}}
    cfg.update(stitching={"architectures": None}, cross={}, frankenstein={"enabled": False})
    return cfg


@pytest.mark.malformed_config
def test_custom_state_dicts_are_one_real_file_per_network(tmp_path):
    import torch

    (tmp_path / "nets").mkdir()
    for seed in (0, 1, 2):
        torch.save({"w": torch.zeros(1)}, tmp_path / f"nets/mine-s{seed}.pt")
    sconf.validate(_custom(tmp_path))
    with pytest.raises(sconf.ConfigError, match=r"params.state_dict: '.*nets/mine.pt' has no \{seed\}, so the "
                                                r"networks of seeds \[0, 1, 2\] would all import the same weights"):
        sconf.validate(_custom(tmp_path, "nets/mine.pt"))
    (tmp_path / "nets/mine-s2.pt").unlink()
    (tmp_path / "nets/mine-s2.pt").symlink_to(tmp_path / "nets/mine-s0.pt")
    with pytest.raises(sconf.ConfigError, match=r"mine-s2.pt \(seed 2, dataset digits\) is the same file as that "
                                                r"of seed 0"):
        sconf.validate(_custom(tmp_path))
    (tmp_path / "nets/mine-s2.pt").unlink()
    (tmp_path / "nets/mine-s2.pt").write_text("layer,weight\n")  # a CSV where the weights should be
    with pytest.raises(sconf.ConfigError, match=r"mine-s2.pt is not a PyTorch file \(it starts with b'layer,we'"):
        sconf.validate(_custom(tmp_path))
    import zipfile

    with zipfile.ZipFile(tmp_path / "nets/mine-s2.pt", "w") as z:
        z.writestr("weights.npy", b"")
    with pytest.raises(sconf.ConfigError, match=r"mine-s2.pt is a zip archive without the data.pkl of torch.save"):
        sconf.validate(_custom(tmp_path))


@pytest.mark.malformed_config
@pytest.mark.parametrize("factory,message", [
    ("torchvision.modles.resnet18", "torchvision has no module 'modles' (factory module torchvision.modles); "
                                    "similar: ['models']"),
    ("stitchlib.hoked:make", "stitchlib has no module 'hoked'"),
])
def test_a_typo_in_the_factory_module_is_found_without_importing(tmp_path, factory, message):
    (tmp_path / "nets").mkdir()
    with pytest.raises(sconf.ConfigError, match=rf"^architectures.mine.params.factory: {re.escape(message)}"):
        sconf.validate(_custom(tmp_path, factory=factory))


@pytest.mark.malformed_config
def test_check_config_builds_the_networks_to_find_what_only_torch_knows(tmp_path, capsys):
    import torch

    (tmp_path / "nets").mkdir()
    for seed in (0, 1, 2):
        torch.save({"w": torch.zeros(1)}, tmp_path / f"nets/mine-s{seed}.pt")
    cfg = _custom(tmp_path, kwargs={"num_class": 10})  # a typo in a keyword argument
    cfg.update(ood={"enabled": False}, ding={"enabled": False})
    path = _yaml(tmp_path, yaml.safe_dump(cfg))
    assert cli.main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "error: architectures.mine.params.kwargs: torchvision.models.resnet18(**{'num_class': 10}) failed: " \
           "TypeError" in err and "num_class" in err, err
    cfg = _custom(tmp_path)
    cfg.update(ood={"enabled": False}, ding={"enabled": False})
    assert cli.main(["check-config", str(_yaml(tmp_path, yaml.safe_dump(cfg)))]) == 1  # weights of another network
    assert "architectures.mine.params.state_dict: " in (err := capsys.readouterr().err) and "does not fit" in err


# ----------------------------------------------------------------------------- issue 18: untrusted configs

@pytest.mark.code_refused
@pytest.mark.parametrize("case", ["factory", "private", "yte", "results"])
def test_untrusted_configs_refuse_code_and_escapes(tmp_path, monkeypatch, case):
    monkeypatch.setenv("STITCHLIB_UNTRUSTED", "1")
    (tmp_path / "nets").mkdir()
    if case in ("factory", "private"):
        factory = "os.system" if case == "factory" else "torchvision.models._api.get_model"
        with pytest.raises(sconf.ConfigError, match=rf"params.factory: {factory} is not allowed: STITCHLIB_UNTRUSTED "
                                                    "is set, so a factory must be a public callable under "
                                                    "torchvision.models"):
            sconf.validate(_custom(tmp_path, factory=factory))
    elif case == "yte":
        with pytest.raises(sconf.ConfigError, match="__use_yte__: .* asks Snakemake to render YTE templates"):
            sconf.load(_yaml(tmp_path, "__use_yte__: true\n" + TINY_YAML))
    else:
        with pytest.raises(sconf.ConfigError, match="results: '../out' leaves the working directory"):
            sconf.validate(_with("results", "../out"))
