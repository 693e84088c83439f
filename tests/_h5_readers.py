"""Worker of tests/test_reliability.py's parallel-reader test (its own module: spawned processes import only
this, numpy, h5py and stitchlib.io — not torch).

Layer ``a`` of version v of the file holds ``i + 10000 v`` in every entry of sample i, so a read is correct when
every entry equals its sample index plus one common multiple of 10000 (one version, never a mix).
"""

import numpy as np

from stitchlib import io

N, SHAPE = 64, (3, 4, 4)


def values(version: int, index: np.ndarray) -> np.ndarray:
    return np.broadcast_to((index + 10000 * version)[:, None, None, None], (len(index), *SHAPE)).astype(np.float32)


def write(path: str, version: int) -> None:
    with io.ActivationWriter(path, N, {"version": version}, chunk=8) as w:
        for lo in range(0, N, 16):
            idx = np.arange(lo, lo + 16)
            w.append(idx, np.zeros((16, 2), np.float32), {"a": values(version, idx)}, {"a": "conv"})


def read_many(path: str, rounds: int, seed: int) -> list[int]:
    """Read random sorted sample subsets ``rounds`` times; return the version each read saw (raise on a mix)."""
    rng, seen = np.random.default_rng(seed), []
    for _ in range(rounds):
        idx = np.sort(rng.choice(N, size=int(rng.integers(1, N)), replace=False))
        x = io.read_layer(path, "a", idx)
        version = int(round((float(x[0, 0, 0, 0]) - idx[0]) / 10000))
        if not np.array_equal(x, values(version, idx)):
            raise AssertionError(f"read {len(idx)} samples that mix versions or are wrong (first version {version})")
        seen.append(version)
    return seen
