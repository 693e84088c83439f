import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from stitchlib import io


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def _write(path, n=10, complete=True):
    w = io.ActivationWriter(path, n, {"network": "x-s0", "spec": {"layers": ["a", "b"]}}, chunk=4)
    with w:
        for i in range(0, n, 4):
            b = min(4, n - i)
            w.append(np.arange(i, i + b), np.zeros((b, 3), np.float32),
                     {"b": np.ones((b, 2, 2, 2), np.float32), "a": np.zeros((b, 5, 4), np.float32)},
                     {"b": "conv", "a": "tokens"})
            if not complete:
                raise KeyboardInterrupt


def test_activation_file_round_trip_and_layer_order(tmp_path):
    p = tmp_path / "test.h5"
    _write(p)
    with io.open_activations(p) as f:
        assert list(f["layers"]) == ["b", "a"]  # network order, not alphabetical
        assert f["layers"]["b"].chunks == (4, 2, 2, 2) and f["layers"]["a"].attrs["layout"] == "tokens"
    assert io.read_layer(p, "b", np.array([1, 3])).shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(io.read_array(p, "labels"), np.arange(10))
    with pytest.raises(KeyError, match="no layer 'c'"):
        io.read_layer(p, "c")


def test_interrupted_or_foreign_files_are_refused(tmp_path):
    p = tmp_path / "a.h5"
    with pytest.raises(KeyboardInterrupt):
        _write(p, complete=False)
    assert not p.exists() and list(tmp_path.iterdir()) == []
    with h5py.File(p, "w") as f:  # a foreign HDF5 file: no completion attribute
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a complete stitchlib activation file"):
        io.open_activations(p)
    t = tmp_path / "trunc.h5"
    _write(t)
    t.write_bytes(t.read_bytes()[:500])
    with pytest.raises(io.IntegrityError, match=r"trunc.h5 changed after .* \(it has 500 bytes, \d+ were written\)"):
        io.open_activations(t)
    io.checksum_path(t).unlink()  # a file from before checksums were recorded: HDF5 itself refuses it
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        io.open_activations(t)


def test_nonfinite_activations_are_named(tmp_path):
    p = tmp_path / "nan.h5"
    _write(p)
    with h5py.File(p, "a") as f:
        f["layers/b"][0, 0, 0, 0] = np.nan
    io.checksum_path(p).unlink()  # as if a diverged network had written it (else: changed since it was written)
    with pytest.raises(ValueError, match="layer 'b' contains NaN"):
        io.read_layer(p, "b")


def test_checkpoints_refuse_pickled_code(tmp_path):
    good = tmp_path / "good.pt"
    io.save_state_dict(good, {"w": torch.ones(2)})
    assert torch.equal(io.load_state_dict(good)["w"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, bad)
    with pytest.raises(ValueError, match="evil.pt is refused"):
        io.load_state_dict(bad)
    good.write_bytes(good.read_bytes()[:40])
    with pytest.raises(io.IntegrityError, match="good.pt changed after"):
        io.load_state_dict(good)
    io.checksum_path(good).unlink()
    with pytest.raises(ValueError, match="good.pt is truncated or corrupt"):
        io.load_state_dict(good)


def test_inspect_command_lists_layers_and_provenance(tmp_path):
    p = tmp_path / "x.h5"
    _write(p)
    out = subprocess.run([sys.executable, "-m", "stitchlib.cli", "inspect", str(p)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "(10, 2, 2, 2)" in out.stdout and "layout=tokens" in out.stdout and "@network = x-s0" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "stitchlib.cli", "inspect", str(tmp_path / "none.h5")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
