"""Reliability and safety (issue 8): killed writers, corrupt or odd inputs, untrusted checkpoints, paths,
parallel readers, and — running the tiny workflow for real — reproducibility and SIGKILL fault injection.

Markers feed the summary printed at the end of the test run (tests/conftest.py): ``corrupt_input``,
``fault_injection`` (tests/test_config.py marks ``malformed_config``).
"""

import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stitchlib import catalog, data, hooked, io, pipeline
from stitchlib import config as sconf

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
sys.path.insert(0, str(ROOT / "tools"))
import fault_injection as fi  # noqa: E402

corrupt = pytest.mark.corrupt_input


@pytest.fixture(scope="module")
def tiny_cfg():
    return sconf.validate(yaml.safe_load(TINY.read_text()))


def spec(cfg, net="rn-s0"):
    return sconf.network_spec(cfg, "digits", net)


def write_h5(path, layers: dict[str, np.ndarray], layout="conv"):
    """An activation file holding ``layers`` (name → (N, ...) array), labels 0..N−1."""
    n = len(next(iter(layers.values())))
    with io.ActivationWriter(path, n, {"network": "test"}) as w:
        w.append(np.arange(n), np.zeros((n, 10), np.float32), layers, {k: layout for k in layers})
    return str(path)


def files_for(s, path, n=40, rng=None, **override):
    """An activation file with every layer of network spec ``s`` at the shape the network produces."""
    rng = rng or np.random.default_rng(0)
    layers = {k: rng.standard_normal((n, *shape)).astype(np.float32)
              for k, shape in pipeline.expected_shapes(s).items()}
    return write_h5(path, {**layers, **override})


# ----------------------------------------------------------------------------- killed writers

def test_sigkilled_writer_leaves_only_an_ignorable_temp_file_cleaned_by_the_next_write(tmp_path):
    target = tmp_path / "models" / "net-s0.pt"
    code = ("import os, signal, sys; from stitchlib import io\n"
            "with io.atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'PK half a checkpoint')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", code, str(target)], cwd=ROOT)
    assert out.returncode == -signal.SIGKILL
    assert not target.exists()
    (left,) = io.temp_files_of(target)
    assert left.name.startswith(".net-s0.pt.") and left.name.endswith(".tmp") and io.is_temp_file(left)
    assert not io.is_temp_file(target) and not io.is_temp_file(tmp_path / "table1.md")
    io.save_state_dict(target, {"w": torch.arange(3.0)})
    assert io.temp_files_of(target) == [] and torch.equal(io.load_state_dict(target)["w"], torch.arange(3.0))
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by collaborators, not mkstemp's 0600


@corrupt
def test_checkpoint_is_verified_before_it_is_moved_into_place(tmp_path, monkeypatch):
    real_save = torch.save

    def save_truncated(obj, f):  # a disk that fills up mid-write
        real_save(obj, f)
        Path(f).write_bytes(Path(f).read_bytes()[:100])

    monkeypatch.setattr(torch, "save", save_truncated)
    target = tmp_path / "net.pt"
    with pytest.raises(ValueError, match=r"net\.pt is truncated or corrupt"):
        io.save_state_dict(target, {"w": torch.ones(1000)})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- corrupt checkpoints

@corrupt
@pytest.mark.parametrize("cut", ["empty", "half", "last_bytes", "not_torch"])
def test_truncated_or_foreign_checkpoint_names_the_file(tmp_path, cut):
    p = tmp_path / "rn-s0.pt"
    io.save_state_dict(p, {"conv.weight": torch.randn(16, 3, 3, 3), "fc.bias": torch.zeros(10)})
    b = p.read_bytes()
    p.write_bytes({"empty": b"", "half": b[:len(b) // 2], "last_bytes": b[:-10], "not_torch": b"key,value\n1,2\n"}[cut])
    name = re.escape(str(p))
    with pytest.raises(io.IntegrityError, match=rf"{name} changed after .* --forcerun {name}"):
        io.load_state_dict(p)  # its recorded size and sha256 differ
    io.checksum_path(p).unlink()  # without a record (older files), torch's own reading still refuses it
    with pytest.raises(ValueError, match=rf"checkpoint {re.escape(str(p))} is truncated or corrupt .*delete it"):
        io.load_state_dict(p)


def test_malicious_pickle_checkpoint_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # unpickling would call open(marker, "w"): create a file
            return (open, (str(marker), "w"))

    p = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "extra": Payload()}, p)
    with pytest.raises(ValueError, match=r"evil\.pt is refused: it holds pickled objects other than tensors"):
        io.load_state_dict(p)
    assert not marker.exists()


@corrupt
def test_checkpoint_of_another_architecture_names_the_file(tmp_path, tiny_cfg):
    p = tmp_path / "rn-s0.pt"
    io.save_state_dict(p, {"fc.weight": torch.zeros(10, 4)})
    with pytest.raises(ValueError, match=r"checkpoint .*rn-s0\.pt does not fit resnet18"):
        pipeline.load_network(spec(tiny_cfg), p, torch.device("cpu"))


# ----------------------------------------------------------------------------- corrupt activation files

@corrupt
@pytest.mark.parametrize("kind", ["truncated", "foreign_hdf5", "not_hdf5", "killed_writer_temp"])
def test_truncated_or_foreign_activation_file_is_refused(tmp_path, tiny_cfg, kind):
    s = spec(tiny_cfg)
    p = tmp_path / "test.h5"
    files_for(s, p)
    if kind == "truncated":
        p.write_bytes(p.read_bytes()[:4096])
        expected = r"test\.h5 is not a readable HDF5 file .*delete it and rerun"
    elif kind == "foreign_hdf5":
        with h5py.File(p, "w") as f:
            f["layers/layer1.0"] = np.zeros((40, 4, 16, 16), np.float32)  # right shape, no completion attribute
        expected = r"test\.h5 is not a complete stitchlib activation file"
    elif kind == "not_hdf5":
        p.write_text("layer,value\n")
        expected = r"test\.h5 is not a readable HDF5 file"
    else:  # a writer killed before the rename: only the temporary file exists
        code = ("import os, signal, sys, numpy as np; from stitchlib import io\n"
                "w = io.ActivationWriter(sys.argv[1], 8, {})\n"
                "w.append(np.arange(4), np.zeros((4, 2), np.float32), {'a': np.ones((4, 3))}, {'a': 'tokens'})\n"
                "w.f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
        p.unlink()
        assert subprocess.run([sys.executable, "-c", code, str(p)], cwd=ROOT).returncode == -signal.SIGKILL
        assert io.temp_files_of(p)
        with pytest.raises(ValueError, match=r"\.test\.h5\..*\.tmp is not a complete stitchlib activation file"):
            io.open_activations(io.temp_files_of(p)[0])  # even read by mistake, the temp file is refused
        expected = r"activation file .*test\.h5 does not exist"
    if kind != "killed_writer_temp":  # the recorded size and sha256 differ first
        with pytest.raises(io.IntegrityError, match=r"test\.h5 changed after .* wrote it"):
            pipeline.check_activations(s, str(p))
        io.checksum_path(p).unlink()  # without a record (older files), the HDF5 checks still refuse it
    with pytest.raises((ValueError, FileNotFoundError), match=expected):
        pipeline.check_activations(s, str(p))


@corrupt
def test_layer_of_the_wrong_shape_names_file_layer_and_both_shapes(tmp_path, tiny_cfg):
    s = spec(tiny_cfg)
    assert pipeline.expected_shapes(s)["layer2.1"] == (8, 8, 8)
    good = files_for(s, tmp_path / "train.h5")
    bad = files_for(s, tmp_path / "test.h5", **{"layer2.1": np.zeros((40, 8, 4, 4), np.float32)})
    inputs = {"src_train": good, "src_test": bad, "tgt_train": good, "tgt_test": good, "tgt_ckpt": "unused.pt"}
    msg = r"test\.h5: layer 'layer2\.1' has per-sample shape \(8, 4, 4\), but the network produces \(8, 8, 8\)"
    with pytest.raises(ValueError, match=msg):  # the DM job refuses it before fitting anything
        pipeline.dm_pair(s, s, inputs, tiny_cfg["dm"], str(tmp_path / "dm.pt"), str(tmp_path / "dm.csv"))
    assert not (tmp_path / "dm.pt").exists()


@corrupt
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_activations_fail_the_indices_job_naming_file_and_layer(tmp_path, tiny_cfg, bad):
    s0, s1 = spec(tiny_cfg, "rn-s0"), spec(tiny_cfg, "rn-s1")
    x = np.random.default_rng(1).standard_normal((40, 16, 4, 4)).astype(np.float32)
    x[7, 3, 1, 2] = bad
    h5 = {"rn-s0": files_for(s0, tmp_path / "a.h5"), "rn-s1": files_for(s1, tmp_path / "b.h5", **{"layer3.1": x})}
    settings = {**tiny_cfg["similarity"], "measures": ["lcka"]}
    with pytest.raises(ValueError, match=r"b\.h5: layer 'layer3\.1': activations contain NaN or inf"):
        pipeline.similarity_indices({"rn-s0": s0, "rn-s1": s1}, h5, [("rn-s0", "rn-s1")], settings,
                                    str(tmp_path / "out.csv"))
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(ValueError, match=r"b\.h5: layer 'layer3\.1' contains NaN or infinite values \(1 of"):
        io.read_layer(h5["rn-s1"], "layer3.1")  # what DM, TLM, detectors and OOD scores read through


@corrupt
def test_diverged_network_fails_extraction_naming_network_and_layer(tmp_path, tiny_cfg):
    s = spec(tiny_cfg)
    torch.manual_seed(0)
    net = pipeline.build_network(s)
    state = {k: v.fill_(float("nan")) if k == "blocks.3.conv1.weight" else v  # block 3: layer2.1
             for k, v in net.state_dict().items()}
    io.save_state_dict(tmp_path / "rn-s0.pt", state)
    with pytest.raises(ValueError, match=r"rn-s0 \(checkpoint .*rn-s0\.pt\) produces NaN or infinite activations at "
                                         r"layer 'layer2\.1' on split 'test'"):
        pipeline.extract(s, str(tmp_path / "rn-s0.pt"), {"test": str(tmp_path / "test.h5")}, device="cpu")
    assert not (tmp_path / "test.h5").exists()


@corrupt
def test_constant_layer_gives_documented_nan_and_a_logged_reason(tmp_path, tiny_cfg, caplog):
    s0, s1 = spec(tiny_cfg, "rn-s0"), spec(tiny_cfg, "rn-s1")
    h5 = {"rn-s0": files_for(s0, tmp_path / "a.h5"),
          "rn-s1": files_for(s1, tmp_path / "b.h5", **{"layer2.1": np.full((40, 8, 8, 8), 0.5, np.float32)})}
    settings = {**tiny_cfg["similarity"], "measures": ["lcka", "opd"]}
    out = tmp_path / "out.csv"
    with caplog.at_level("WARNING", logger="stitchlib.pipeline"):
        pipeline.similarity_indices({"rn-s0": s0, "rn-s1": s1}, h5, [("rn-s0", "rn-s1")], settings, str(out))
    t = pd.read_csv(out)
    dead = t.target_layer == "layer2.1"
    assert len(t) == 2 * 16 and t[dead].value.isna().all() and t[~dead].value.notna().all()
    assert "layer 'layer2.1' is constant over the samples" in caplog.text


# ----------------------------------------------------------------------------- datasets

@corrupt
@pytest.mark.parametrize("case", ["cifar_root_inside", "imagenet_no_classes", "imagenet_train_is_file", "svhn_empty"])
def test_dataset_folder_with_the_wrong_layout_names_path_and_expected_layout(tmp_path, case):
    if case == "cifar_root_inside":  # the common slip: root is the extracted folder itself
        root = tmp_path / "cifar-10-batches-py"
        root.mkdir()
        for f in ("data_batch_1", "test_batch"):
            (root / f).touch()
        name, msg = "cifar10", (rf"{root}/cifar-10-batches-py/data_batch_1 does not exist; dataset 'cifar10' expects "
                                rf"under {root}: cifar-10-batches-py/data_batch_1, cifar-10-batches-py/test_batch "
                                rf"\(root points inside the dataset: use its parent {tmp_path}\)")
    elif case == "imagenet_no_classes":
        root = tmp_path
        (root / "train").mkdir()
        (root / "val" / "n01440764").mkdir(parents=True)
        name, msg = "imagenet", rf"{root}/train holds no class folders; dataset 'imagenet' expects under {root}: " \
            "train/, val/"
    elif case == "imagenet_train_is_file":
        root = tmp_path
        (root / "train").write_text("")
        name, msg = "imagenet", rf"{root}/train is not a folder; dataset 'imagenet' expects under {root}: train/, val/"
    else:
        root = tmp_path
        name, msg = "svhn", rf"{root}/train_32x32.mat does not exist; dataset 'svhn' expects under {root}"
    with pytest.raises(FileNotFoundError, match=f"datasets.{name}.root: {msg}"):
        catalog.check_dataset(name, str(root))
    with pytest.raises(FileNotFoundError, match=msg):  # a job that loads the data stops the same way
        data.load(name, "test", root=str(root))


# ----------------------------------------------------------------------------- integrity (issue 18)

def flip_byte(path, offset: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x01
    Path(path).write_bytes(bytes(data))


def tensor_data_offset(path) -> int:
    """Where the first tensor's bytes start inside a torch.save zip archive (stored uncompressed)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if re.search(r"/data/\d+$", i.filename))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        name, extra = struct.unpack("<HH", f.read(30)[26:30])
    return info.header_offset + 30 + name + extra


@corrupt
def test_a_flipped_byte_in_a_checkpoints_tensor_data_is_refused_naming_the_job_to_rerun(tmp_path, monkeypatch):
    monkeypatch.setitem(io._JOB, "writer", "rule train (dataset=digits, net=rn-s0)")
    p = tmp_path / "rn-s0.pt"
    io.save_state_dict(p, {"conv.weight": torch.randn(1000)})
    before = torch.load(p, weights_only=True)["conv.weight"]
    flip_byte(p, tensor_data_offset(p) + 401)
    changed = torch.load(p, weights_only=True)["conv.weight"]  # what loaded silently before: other weights
    assert not torch.equal(before, changed)
    name = re.escape(str(p))
    with pytest.raises(io.IntegrityError, match=rf"{name} changed after rule train \(dataset=digits, net=rn-s0\) "
                                                rf"wrote it \(its sha256 is .* --forcerun {name}"):
        io.load_state_dict(p)


@corrupt
def test_an_activation_layer_overwritten_with_zeros_is_refused(tmp_path, tiny_cfg):
    s = spec(tiny_cfg)
    p = files_for(s, tmp_path / "test.h5")
    with h5py.File(p, "r+") as f:  # the layer's values change; the file's size and HDF5 structure do not
        f["layers/layer2.1"][...] = 0
    with pytest.raises(io.IntegrityError, match=r"test\.h5 changed after .* \(its sha256 is"):
        io.read_layer(p, "layer3.1")  # any read of the file: it is verified when first opened


@corrupt
def test_files_above_the_hash_limit_are_checked_by_size_without_hashing(tmp_path, monkeypatch, tiny_cfg):
    monkeypatch.setitem(io._JOB, "hash_limit", 0)  # integrity.hash_limit_mb: 0: no file is hashed in full
    hashed = []
    monkeypatch.setattr(io, "sha256", lambda path, block=0: hashed.append(path) or "0" * 64)
    p = files_for(spec(tiny_cfg), tmp_path / "test.h5")
    io.read_layer(p, "layer3.1")
    Path(p).write_bytes(Path(p).read_bytes()[:-100])
    with pytest.raises(io.IntegrityError, match=r"\(it has \d+ bytes, \d+ were written\)"):
        io.read_layer(p, "layer3.1")
    assert len(hashed) == 1  # once, by the writer: reading checked the size only


@corrupt
def test_each_file_is_hashed_once_per_process_and_again_when_it_changes(tmp_path, monkeypatch, tiny_cfg):
    real, calls = io.sha256, []
    monkeypatch.setattr(io, "sha256", lambda path, block=1 << 20: calls.append(Path(path).name) or real(path))
    s = spec(tiny_cfg)
    p = files_for(s, tmp_path / "test.h5")
    calls.clear()
    for layer in s["layers"] * 3:
        io.read_layer(p, layer)
    pipeline.check_activations(s, p)
    assert calls == ["test.h5"]
    with h5py.File(p, "r+") as f:
        f.attrs["note"] = "edited"
    with pytest.raises(io.IntegrityError):
        io.read_layer(p, s["layers"][0])


@corrupt
@pytest.mark.parametrize("kind", ["empty", "not_json", "no_spec"])
def test_a_broken_detector_spec_names_the_file(tmp_path, kind):
    pt, js = tmp_path / "layer1.0.pt", tmp_path / "layer1.0.json"
    io.save_state_dict(pt, {"w": torch.zeros(1)})
    io.write_json(js, {"network": "rn-s0"} if kind == "no_spec" else {"detector": {}})
    if kind != "no_spec":
        js.write_text("" if kind == "empty" else "{'detector': None")
        with pytest.raises(io.IntegrityError, match=r"layer1\.0\.json changed after"):
            pipeline.load_detector(str(pt), str(js), torch.device("cpu"))
        io.checksum_path(js).unlink()  # no record: JSON's own error, with the file
    match = r"layer1\.0\.json is not a detector spec" if kind == "no_spec" else r"layer1\.0\.json is not valid JSON"
    with pytest.raises(ValueError, match=match):
        pipeline.load_detector(str(pt), str(js), torch.device("cpu"))


@corrupt
def test_an_emptied_stitch_file_names_the_command_that_recomputes_it(tmp_path, tiny_cfg):
    s = spec(tiny_cfg)
    h5 = files_for(s, tmp_path / "test.h5")
    st = tmp_path / "rn-s0__rn-s0.pt"
    io.save_state_dict(st, {"layer1.0->layer1.0": {"weight": torch.zeros(1), "bias": torch.zeros(1)}})
    st.write_bytes(b"")
    with pytest.raises(io.IntegrityError, match=rf"it has 0 bytes, \d+ were written\).*snakemake --cores N --forcerun "
                                                rf"{re.escape(str(st))}"):
        pipeline._load_stitches(str(st), s, s, h5, h5)


# ----------------------------------------------------------------------------- factories (issue 18)

refused = pytest.mark.code_refused


@refused
def test_a_builtin_factory_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match=r"params.factory: os.system is a builtin_function_or_method, not a Python "
                                         "function or an nn.Module class"):
        hooked.HookedNetwork.build("os.system", {"command": f"touch {marker}"}, ["x"], (3, 8, 8))
    assert not marker.exists()


@refused
@pytest.mark.parametrize("factory,message", [
    ("collections.OrderedDict", "is the class OrderedDict, not a torch.nn.Module"),
    ("torchvision.models.list_models", "is declared to return list, not a torch.nn.Module"),
    ("stitchlib.catalog.factory_allowlist", r"\(\*\*kwargs\) returned a NoneType, not a torch.nn.Module"),
])
def test_a_factory_must_build_an_nn_module(factory, message):
    with pytest.raises(ValueError, match=rf"^params.factory: {re.escape(factory)}.*{message}"):
        hooked.HookedNetwork.build(factory, {}, ["x"], (3, 8, 8))


@refused
def test_untrusted_configs_allow_only_listed_factories_in_the_job_too(monkeypatch):
    monkeypatch.setenv("STITCHLIB_UNTRUSTED", "1")
    monkeypatch.setenv("STITCHLIB_ALLOWED_FACTORIES", "torchvision.models.vision_transformer")
    with pytest.raises(ValueError, match=r"params.factory: torchvision.models.resnet18 is not allowed"):
        hooked.resolve_factory("torchvision.models.resnet18")
    assert hooked.resolve_factory("torchvision.models.vision_transformer.VisionTransformer")


# ----------------------------------------------------------------------------- safety

@pytest.fixture(scope="module")
def workflow_rules(tmp_path_factory):
    """The rules of the workflow as Snakemake parses them for the tiny config (results folder ``results``)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=ROOT / "Snakefile",
                          config_settings=ConfigSettings(configfiles=[TINY], config={"results": "results"}),
                          workdir=tmp_path_factory.mktemp("rules"))
        return list(wf._workflow.rules)


ESCAPES = ["..", ".", "../x", "a/b", "/etc/passwd", "x/../../y", "", "a\nb", "$(touch x)", "a b", "`id`"]


def test_wildcards_cannot_leave_the_results_folder(workflow_rules):
    outputs = [str(o) for r in workflow_rules for o in r.output]
    assert len(outputs) > 20
    for pattern in outputs:
        assert pattern.startswith("results/"), pattern
        assert not pattern.endswith(io.TMP_SUFFIX), pattern  # a temporary file is never an output
        for segment in pattern.split("/"):
            for name, regex in re.findall(r"\{(\w+)(?:,((?:[^{}]|\{\d*,?\d*\})+))?\}", segment):
                assert regex, f"{pattern}: wildcard {name!r} has no constraint (Snakemake's default .+ matches '/')"
                whole = segment == f"{{{name},{regex}}}"
                for bad in ESCAPES:
                    if bad in (".", "..") and not whole:
                        continue  # inside a name ("{layer}.pt"), a dot cannot form a parent-directory segment
                    assert not re.fullmatch(regex, bad), f"{pattern}: {name}={bad!r} would be accepted"
    escapes = ["results/models/digits/../../../etc/passwd.pt", "results/../elsewhere/models/digits/rn-s0.pt",
               "results/activations/digits/../rn-s0/test.h5", "/etc/results/models/digits/rn-s0.pt"]
    for r in workflow_rules:
        for o in r.output:
            for path in escapes:
                assert not o.regex().match(path), f"rule {r.name} would produce {path}"


def test_no_rule_passes_config_strings_to_a_shell(workflow_rules):
    for r in workflow_rules:
        assert not r.shellcmd and not r.is_run and not getattr(r, "wrapper", None), r.name
        if r.output:  # target rules such as `all` only collect inputs
            assert r.script and r.script.startswith("../workflow_scripts/"), r.name
    sources = [*ROOT.glob("stitchlib/*.py"), *ROOT.glob("workflow_scripts/*.py"), *ROOT.glob("rules/*.smk")]
    for src in sources:
        text = src.read_text()
        for danger in (r"shell\s*=\s*True", r"\bos\.system\(", r"\bos\.popen\(", r"(?<![\w.])eval\(",
                       r"(?<![\w.])exec\("):
            assert not re.search(danger, text), f"{src.name}: {danger}"


# ----------------------------------------------------------------------------- concurrency

def test_parallel_readers_of_one_file_while_it_is_atomically_replaced(tmp_path):
    import _h5_readers as readers

    path = str(tmp_path / "shared.h5")
    readers.write(path, 0)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        jobs = pool.starmap_async(readers.read_many, [(path, 150, seed) for seed in range(4)])
        for version in range(1, 6):  # one writer, as in the workflow: temp file, then rename
            readers.write(path, version)
        seen = [v for vs in jobs.get(timeout=300) for v in vs]
    assert len(seen) == 600 and set(seen) <= set(range(6))
    assert io.temp_files_of(path) == [] and readers.read_many(path, 3, 0) == [5, 5, 5]


# ----------------------------------------------------------------------------- the workflow, for real

# CI subset: the tiny config's ResNet networks only (half the jobs; every kind of artifact still made).
CI_CONFIG = ['stitching={"architectures": ["rn"]}']


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted run of the CI subset: (results folder, seconds)."""
    work = tmp_path_factory.mktemp("reference")
    seconds = fi.run_workflow(work, TINY, cores=2, config=CI_CONFIG)
    return work / "results", seconds


@pytest.mark.workflow
def test_same_config_twice_on_the_cpu_gives_identical_tables(tmp_path, reference_run):
    reference, _ = reference_run
    fi.run_workflow(tmp_path, TINY, cores=2, config=CI_CONFIG)
    assert fi.compare_runs(tmp_path / "results", reference) == []
    tables = [p for p in fi.artifacts(reference) if p.suffix in fi.TABLES]
    assert len(tables) > 20 and any(p.parts[:2] == ("tables", "digits") for p in tables)


@pytest.mark.workflow
@pytest.mark.fault_injection
def test_sigkill_at_random_moments_then_resume_gives_identical_tables(tmp_path, reference_run, record_property):
    """Three SIGKILLs of the whole process group, chained (each restart resumes the last); after each, every
    file at an output path is a complete artifact; the resumed run's tables equal the uninterrupted run's."""
    reference, seconds = reference_run
    lines = []
    problems = fi.trial(tmp_path, reference, fi.chain_times(seconds, 3, seed=0), TINY, cores=2, config=CI_CONFIG,
                        report=lines.append)
    print("\n".join(lines))
    assert problems == []
    record_property("cases", 3)


@pytest.mark.workflow
@pytest.mark.corrupt_input
def test_a_corrupt_input_fails_its_job_only_and_the_advised_command_recomputes_it(tmp_path, reference_run):
    """A finished run whose rn-s0 checkpoint got one flipped byte in its tensor data afterwards (its time stamp
    kept, so Snakemake does not retrain it; torch would load it silently): the DM job that loads it fails naming
    the file, the job that wrote it and the command that recomputes it; the other DM job still runs (--keep-going);
    that command then restores the reference's result byte for byte."""
    reference, _ = reference_run
    shutil.copytree(reference, tmp_path / "results", symlinks=True)
    res = tmp_path / "results"
    ckpt = res / "models/digits/rn-s0.pt"
    stamp = ckpt.stat()
    flip_byte(ckpt, tensor_data_offset(ckpt) + 11)
    os.utime(ckpt, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    targets = [res / f"stitching/digits/dm/{pair}.csv" for pair in ("rn-s0__rn-s0", "rn-s1__rn-s1")]
    for t in targets:
        t.unlink()
    cmd = fi.snakemake_cmd(res, TINY, 2, CI_CONFIG)
    out = subprocess.run([*cmd[:3], *map(str, targets), *cmd[3:]], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode != 0
    assert not targets[0].exists() and targets[1].exists()  # the healthy pair finished
    log = (res / "logs/dm/digits/rn-s0__rn-s0.log").read_text()
    assert f"{ckpt} changed after rule train (dataset=digits, net=rn-s0) wrote it" in log, log[-3000:]
    advice = re.search(r"snakemake --cores N (--forcerun \S+)", log).group(1).split()
    assert advice == ["--forcerun", str(ckpt)]
    out = subprocess.run([*cmd[:3], str(targets[0]), *cmd[3:], *advice], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:]
    assert targets[0].read_bytes() == (reference / "stitching/digits/dm/rn-s0__rn-s0.csv").read_bytes()


def test_every_file_the_ood_scores_job_reads_is_declared(tmp_path):
    """It loads each target layer's detector weights, JSON spec and energies through the network's detector index:
    the index is its input, and the index's inputs are those files (a changed spec reruns both)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=ROOT / "Snakefile",
                          config_settings=ConfigSettings(configfiles=[TINY], config={"results": "results"}),
                          workdir=tmp_path)
        rules = {r.name: r for r in wf._workflow.rules}

        def inputs_of(name, **wildcards):
            (inputs,) = rules[name].input  # unpack(<input function>)
            function = getattr(inputs._file, "callable", None) or inputs._file
            return function(SimpleNamespace(dataset="digits", **wildcards))

        scores = inputs_of("ood_scores", src="rn-s0", tgt="rn-s1")
        index = inputs_of("detectors", net="rn-s1")
        produces_index = rules["detectors"].is_producer("results/ood/digits/detectors/rn-s1.json")
    layers = ["layer1.0", "layer2.1", "layer3.1", "layer4.1"]
    assert scores["detectors"] == "results/ood/digits/detectors/rn-s1.json" and produces_index
    for key, ext in (("weights", "pt"), ("spec", "json"), ("energies", "npz")):
        assert index[key] == [f"results/ood/digits/detectors/rn-s1/{x}.{ext}" for x in layers]
