"""Artifacts on disk: atomic writes, provenance, checkpoints and the HDF5 activation store.

Every writer goes through :func:`atomic_path`: the content is written to a temporary file in the
destination folder and moved into place with ``os.replace`` only when complete, so a killed job never
leaves a file that looks finished. HDF5 activation files additionally carry a ``complete`` attribute
written last, and readers refuse files without it.

HDF5 activation layout (one file per network and split)::

    /labels            int64 (N,)
    /logits            float32 (N, classes)     the network's own outputs
    /layers/<name>     float32 (N, C, H, W) or (N, T, D), chunked along samples, attr ``layout``
    attrs              provenance (network, dataset, split, checkpoint sha256, versions, ...),
                       ``complete`` = True written last
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(df, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame as CSV atomically (full float precision, no index)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.10g")


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, (np.ndarray,)):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, Mapping):
        return dict(x)
    if isinstance(x, (list, tuple)):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def provenance() -> dict[str, str]:
    """Versions and git commit of the code that produced an artifact."""
    import torch

    from stitchlib import __version__

    info = {
        "stitchlib": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    try:
        repo = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ----------------------------------------------------------------------------- checkpoints

def save_state_dict(path: str | os.PathLike, state: dict) -> None:
    """Save a dict of tensors (a state dict, or nested dicts of tensors) atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state_dict(path: str | os.PathLike) -> dict:
    """Load a tensor dict with ``weights_only=True``: arbitrary pickled objects are refused."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign / malicious files
        raise ValueError(f"checkpoint {path} cannot be loaded safely as a tensor dict: {e}") from e


# ----------------------------------------------------------------------------- activations

class ActivationWriter:
    """Write an HDF5 activation file incrementally, batch by batch, then mark it complete.

    Use as a context manager; the file appears at ``path`` only after ``close`` succeeds.
    """

    def __init__(self, path: str | os.PathLike, n: int, attrs: dict[str, Any], chunk: int = 256,
                 dtype: str = "float32"):
        self.path, self.n, self.attrs, self.chunk, self.dtype = Path(path), n, attrs, chunk, dtype
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self.f = h5py.File(self._tmp, "w")
        self.f.create_group("layers", track_order=True)  # iterate layers in network order
        self.pos = 0

    def _dataset(self, name: str, sample_shape: tuple, dtype, **attrs) -> h5py.Dataset:
        if name not in self.f:
            chunks = (min(self.chunk, self.n), *sample_shape)
            d = self.f.create_dataset(name, shape=(self.n, *sample_shape), dtype=dtype, chunks=chunks)
            d.attrs.update(attrs)
        return self.f[name]

    def append(self, labels: np.ndarray, logits: np.ndarray, layers: dict[str, np.ndarray],
               layouts: dict[str, str]) -> None:
        b = len(labels)
        sl = slice(self.pos, self.pos + b)
        self._dataset("labels", (), "int64")[sl] = labels
        self._dataset("logits", logits.shape[1:], "float32")[sl] = logits
        for name, a in layers.items():
            self._dataset(f"layers/{name}", a.shape[1:], self.dtype, layout=layouts[name])[sl] = a
        self.pos += b

    def __enter__(self) -> "ActivationWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.pos != self.n:
                    raise RuntimeError(f"{self.path}: wrote {self.pos} of {self.n} samples")
                self.f.attrs.update({k: _h5_attr(v) for k, v in self.attrs.items()})
                self.f.attrs["complete"] = True  # written last: proves the file is whole
            self.f.close()
        finally:
            self._ctx.__exit__(exc_type, exc, tb)


def _h5_attr(v: Any) -> Any:
    """Scalars as themselves, strings as str, anything structured as JSON text."""
    if isinstance(v, (bool, int, float, np.number)):
        return v
    if isinstance(v, str):
        return str(v)
    return json.dumps(v, sort_keys=True, default=_jsonable)


def open_activations(path: str | os.PathLike) -> h5py.File:
    """Open an activation file read-only, refusing incomplete or foreign files with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"activation file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file (truncated or foreign?): {e}") from e
    if not f.attrs.get("complete", False) or "layers" not in f:
        f.close()
        raise ValueError(f"{path} is not a complete stitchlib activation file "
                         "(no 'complete' attribute or no /layers group); delete it and rerun")
    return f


def read_layer(path: str | os.PathLike, layer: str, index: np.ndarray | slice | None = None) -> np.ndarray:
    """Read one layer's activations (optionally a sorted index or slice of samples) as float32."""
    with open_activations(path) as f:
        if layer not in f["layers"]:
            raise KeyError(f"{path}: no layer {layer!r}; layers are {list(f['layers'])}")
        d = f["layers"][layer]
        a = d[()] if index is None else d[index]
    a = np.asarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{path}: layer {layer!r} contains NaN or infinite activations")
    return a


def layer_layout(path: str | os.PathLike, layer: str) -> str:
    """'conv' or 'tokens': how a layer's activations are laid out."""
    with open_activations(path) as f:
        if layer not in f["layers"]:
            raise KeyError(f"{path}: no layer {layer!r}; layers are {list(f['layers'])}")
        return str(f["layers"][layer].attrs["layout"])


def read_array(path: str | os.PathLike, name: str) -> np.ndarray:
    with open_activations(path) as f:
        return f[name][()]


def describe(path: str | os.PathLike) -> str:
    """Human-readable listing of an activation file: layers, shapes, dtypes, chunks and provenance."""
    lines = [str(path)]
    with open_activations(path) as f:
        for k in sorted(f.attrs):
            lines.append(f"  @{k} = {f.attrs[k]}")
        for name in ("labels", "logits"):
            if name in f:
                d = f[name]
                lines.append(f"  {name:<16} {str(d.shape):<22} {d.dtype}")
        lines.append("  layers:")
        for name, d in f["layers"].items():
            lines.append(f"    {name:<14} {str(d.shape):<22} {str(d.dtype):<8} layout={d.attrs.get('layout')}"
                         f" chunks={d.chunks}")
    return "\n".join(lines)
