"""Artifacts on disk: atomic writes, provenance, checkpoints and the HDF5 activation store.

Every writer goes through :func:`atomic_path`: the content is written to a temporary file in the
destination folder and moved into place with ``os.replace`` only when complete, so a killed job never
leaves a file that looks finished. What proves an artifact complete: its presence at the final path
(nothing else ever appears there), plus for HDF5 activation files a ``complete`` attribute written last
(readers refuse files without it) and for checkpoints a load of the temporary file with
``weights_only=True`` before it is moved into place. A job killed mid-write (SIGKILL, full disk, node
failure) leaves at most a hidden ``.<name>.<random>.tmp`` beside the output: no rule ever reads or
produces such a name, and the next successful write of the same output removes it.

Readers name the file, and where it applies the layer, and say what was expected: a truncated or foreign
file, a layer of the wrong shape or non-finite activations are errors, never silently used.

HDF5 activation layout (one file per network and split)::

    /labels            int64 (N,)
    /logits            float32 (N, classes)     the network's own outputs
    /layers/<name>     float32 (N, C, H, W) or (N, T, D), chunked along samples, attr ``layout``
    /index             int64 (N,)               only for a subset: which images of the split, in file order
    /pooled/<name>     float64 (N, C)           training split: each layer pooled (conv: mean over positions,
                                                tokens: the CLS token), the linear probes' features
    /lowrank/<name>/{mean,basis,variances}      training split: the principal directions of each layer's rows
                                                (positions or tokens), the sensitivity test's low-rank family
    attrs              provenance (network, dataset, split, checkpoint sha256, versions, ...), ``fronts``
                       (``cached``: /layers holds every image; ``summary``: training consumers recompute the
                       fronts and /layers is empty), ``complete`` = True written last

Training consumers read a cached layer through :class:`ChunkedLayer` in the order of :func:`epoch_order`
(chunk-level shuffle plus an in-buffer shuffle), evaluation reads sequential blocks (:func:`blocks`): a job
holds a bounded number of images of a layer, never a whole training split.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import platform
import re
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from stitchlib import __version__

if TYPE_CHECKING:
    import torch

TMP_SUFFIX = ".tmp"


def temp_files_of(path: str | os.PathLike) -> list[Path]:
    """Temporary files :func:`atomic_path` created for ``path`` that are still on disk (killed writers):
    ``.<name>.<random>.tmp``, the random part without dots (so ``x.h5``'s never include ``x.h5.bak``'s)."""
    path = Path(path)
    own = re.compile(rf"\.{re.escape(path.name)}\.[^.]+{re.escape(TMP_SUFFIX)}")
    return sorted(p for p in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}") if own.fullmatch(p.name))


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_path` (``.<name>.<random>.tmp``)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TMP_SUFFIX) and name.count(".") >= 3


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, checksum: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file is ``.<name>.<random>.tmp`` in the destination folder (same file system, so
    ``os.replace`` is atomic). It gets the permissions a plainly created file would (``0666 & ~umask``,
    not mkstemp's owner-only 0600), so collaborators sharing a results folder can read it. After a
    successful move, temporary files left at the same path by earlier killed writers are removed
    (only one job writes a given output at a time: Snakemake's contract). ``checksum``: record the finished
    file's size and sha256 in :func:`checksum_path` before the move (see :func:`verify`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if checksum:
            _record(tmp, path)
        os.replace(tmp, path)
        for stale in temp_files_of(path):
            stale.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, its checksum recorded (jobs read metrics and detector specs back: :func:`read_json`)."""
    with atomic_path(path, checksum=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON artifact, verified (:func:`verify`); a broken one is an error naming the file."""
    verify(path)
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and rerun the job that wrote it") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(df, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame as CSV atomically (full float precision, no index)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.10g")


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """Write named numpy arrays as an (uncompressed) .npz atomically, its checksum recorded (jobs read them back:
    :func:`read_npz`)."""
    with atomic_path(path, checksum=True) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz artifact, verified (:func:`verify`; no pickled objects are loaded)."""
    verify(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return dict(z)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz ({e}); delete it and rerun the job that wrote it") from None


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


# ----------------------------------------------------------------------------- integrity

CHECKSUM_SUFFIX = ".sha256"
_JOB = {"writer": "a stitchlib call outside the workflow", "hash_limit": 1024 << 20}
_VERIFIED: set[tuple[int, int, int, int]] = set()


class IntegrityError(ValueError):
    """An artifact is not what its writer recorded: corrupt, truncated, or replaced since."""


def checksum_path(path: str | os.PathLike) -> Path:
    """Where the size and sha256 of artifact ``path`` are recorded: the hidden ``.<name>.sha256`` beside it, in
    ``sha256sum`` format (``cd`` to its folder and ``sha256sum -c .<name>.sha256`` checks it by hand)."""
    path = Path(path)
    return path.with_name(f".{path.name}{CHECKSUM_SUFFIX}")


def set_job(writer: str, hash_limit_mb: int | None = None) -> None:
    """Name the job that writes artifacts from now on (recorded beside each), and the size up to which an artifact
    read is hashed in full (config ``integrity.hash_limit_mb``; larger ones are checked by size only). Workflow jobs
    call it first (workflow_scripts/_runner.py)."""
    _JOB["writer"] = writer
    if hash_limit_mb is not None:
        _JOB["hash_limit"] = hash_limit_mb << 20


def _record(tmp: Path, path: Path) -> None:
    """Record the finished temporary file ``tmp``'s size and sha256 as those of ``path``, before it moves there:
    a killed job leaves at most a record without its file, never a file without its record."""
    meta = {"bytes": tmp.stat().st_size, "written_by": _JOB["writer"],
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with atomic_path(checksum_path(path)) as side:
        side.write_text(f"{sha256(tmp)}  {path.name}\n# {json.dumps(meta)}\n")


def verify(path: str | os.PathLike) -> None:
    """Check artifact ``path`` against the size and sha256 recorded when it was written, once per file per process
    (the same file opened again is not re-hashed): the sha256 of files up to the hash limit (:func:`set_job`),
    the size of larger ones. Raises :class:`IntegrityError` naming the file, the job that wrote it and the command
    that recomputes it. A file without a record (written before stitchlib recorded them) is logged, not refused."""
    path = Path(path)
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return
    side = checksum_path(path)
    try:
        first, _, rest = side.read_text().partition("\n")
        digest, meta = first.split()[0], json.loads(rest.removeprefix("# ").strip() or "{}")
    except FileNotFoundError:
        logging.getLogger(__name__).warning("%s: no recorded checksum (%s); not verified", path, side.name)
        _VERIFIED.add(key)
        return
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{path}: its checksum record {side} is unreadable ({e}); recompute the file: "
                             f"snakemake --cores N --forcerun {path} (or delete both and rerun)") from None
    problem = None
    if meta.get("bytes") is not None and meta["bytes"] != st.st_size:
        problem = f"it has {st.st_size} bytes, {meta['bytes']} were written"
    elif st.st_size <= _JOB["hash_limit"] and (found := sha256(path)) != digest:
        problem = f"its sha256 is {found[:16]}…, {digest[:16]}… was written"
    if problem:
        raise IntegrityError(f"{path} changed after {meta.get('written_by', 'its job')} wrote it ({problem}): the "
                             "file is corrupt or was replaced. Recompute it and everything that depends on it: "
                             f"snakemake --cores N --forcerun {path} (or delete it and rerun snakemake)")
    _VERIFIED.add(key)


def provenance() -> dict[str, str]:
    """Versions and git commit of the code that produced an artifact."""
    import torch

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
    """Save a dict of tensors (a state dict, or nested dicts of tensors) atomically.

    The temporary file is loaded back with ``weights_only=True`` and its keys compared before it is moved
    into place: a checkpoint at its final path has been read successfully at least once.
    """
    import torch

    with atomic_path(path, checksum=True) as tmp:
        torch.save(state, tmp)
        back = _load(tmp, Path(path))
        if _keys(back) != _keys(state):
            raise RuntimeError(f"checkpoint {path}: reading the written file back gave different keys")


def _keys(d: Any, prefix: str = "") -> set[str]:
    if not isinstance(d, Mapping):
        return {prefix}
    return {k for name, v in d.items() for k in _keys(v, f"{prefix}/{name}")}


REDO = "delete it and rerun the job that wrote it"
USERS = "save your network's weights with torch.save(model.state_dict(), path)"  # advice for a file of your own


def _load(path: Path, name: Path, advice: str = REDO) -> dict:
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip / EOF / unpickling errors: truncated, foreign, or pickled code
        refused = re.search(r"Unsupported (?:global|class):? (GLOBAL )?([\w.]+)", str(e))
        if isinstance(e, pickle.UnpicklingError) and refused:
            raise ValueError(f"checkpoint {name} is refused: it holds pickled objects other than tensors and plain "
                             f"containers ({refused.group(2)}), which weights_only=True will not execute; stitchlib "
                             "never writes such files (do not load it unless you trust its source"
                             + ("; a whole pickled model is not a state dict: " + advice if advice == USERS else "")
                             + ")") from e
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "unexpected end of file")
        raise ValueError(f"checkpoint {name} is truncated or corrupt ({type(e).__name__}: {first}); {advice}") from e
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint {name} holds a {type(state).__name__}, not a state dict (a mapping of names to "
                         f"tensors); {advice}")
    return state


def load_state_dict(path: str | os.PathLike, artifact: bool = True) -> dict:
    """Load a tensor dict with ``weights_only=True``: arbitrary pickled objects are refused.

    Raises FileNotFoundError when ``path`` is missing and ValueError naming the file when it is truncated,
    not a torch file, or holds anything but tensors and plain containers. ``artifact``: a file stitchlib wrote,
    checked against its recorded checksum first (:func:`verify`); False for a file of your own (none recorded).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if artifact:
        verify(path)
    return _load(path, path, REDO if artifact else USERS)


# ----------------------------------------------------------------------------- activations

class ActivationWriter:
    """Write an HDF5 activation file incrementally, batch by batch, then mark it complete.

    Use as a context manager; the file appears at ``path`` only after ``close`` succeeds.
    """

    def __init__(self, path: str | os.PathLike, n: int, attrs: dict[str, Any], chunk: int = 256,
                 dtype: str = "float32"):
        self.path, self.n, self.attrs, self.chunk, self.dtype = Path(path), n, attrs, chunk, dtype
        self._ctx = atomic_path(self.path, checksum=True)
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
               layouts: dict[str, str], **per_sample: np.ndarray) -> None:
        """One batch: labels, logits, ``layers`` (name → activations, written in the file's dtype) and any other
        per-sample arrays by dataset path (e.g. ``index``, ``pooled/<layer>``, kept in their own dtype)."""
        b = len(labels)
        sl = slice(self.pos, self.pos + b)
        self._dataset("labels", labels.shape[1:], "int64")[sl] = labels  # (N,) classes or (N, A) attributes
        self._dataset("logits", logits.shape[1:], "float32")[sl] = logits
        for name, a in layers.items():
            self._dataset(f"layers/{name}", a.shape[1:], self.dtype, layout=layouts[name])[sl] = a
        for name, a in per_sample.items():
            self._dataset(name, a.shape[1:], a.dtype)[sl] = a
        self.pos += b

    def put(self, name: str, a: np.ndarray) -> None:
        """A whole array at dataset path ``name`` (e.g. ``lowrank/<layer>/basis``)."""
        self.f.create_dataset(name, data=a)

    def __enter__(self) -> ActivationWriter:
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
    verify(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file (truncated or foreign?): {e}; delete it and "
                         "rerun the job that wrote it") from e
    if not f.attrs.get("complete", False) or "layers" not in f:
        f.close()
        raise ValueError(f"{path} is not a complete stitchlib activation file "
                         "(no 'complete' attribute or no /layers group); delete it and rerun")
    return f


def check_layer_shapes(path: str | os.PathLike, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise ValueError naming the file, the layer, the expected and the stored per-sample shape when a
    layer of ``expected`` (name → per-sample shape the network produces) is missing or differs. A training
    summary (no cached fronts) is checked by its pooled features: (C,) of a conv map, (D,) of tokens."""
    with open_activations(path) as f:
        summary = f.attrs.get("fronts") == "summary"
        group = f["pooled"] if summary else f["layers"]
        for layer, shape in expected.items():
            if layer not in group:
                raise ValueError(f"{path}: no layer {layer!r}; layers are {list(group)}")
            found, shape = tuple(group[layer].shape[1:]), tuple(shape)
            if summary:
                shape = shape[-1:] if len(shape) == 2 else shape[:1]
            if found != shape:
                raise ValueError(f"{path}: layer {layer!r} has per-sample shape {found}, but the network "
                                 f"produces {tuple(shape)} there; the file was written by a different network or "
                                 "is corrupt: delete it and rerun")


def read_layer(path: str | os.PathLike, layer: str, index: np.ndarray | slice | None = None) -> np.ndarray:
    """Read one layer's activations (optionally a sorted index or slice of samples) as float32."""
    with open_activations(path) as f:
        if layer not in f["layers"]:
            raise KeyError(f"{path}: no layer {layer!r}; layers are {list(f['layers'])}")
        d = f["layers"][layer]
        a = d[()] if index is None else d[index]
    return _finite(np.asarray(a, dtype=np.float32), path, layer)


def _finite(a: np.ndarray, path, layer: str) -> np.ndarray:
    if not np.isfinite(a).all():
        bad = a.size - int(np.isfinite(a).sum())
        raise ValueError(f"{path}: layer {layer!r} contains NaN or infinite values ({bad} of {a.size} read); "
                         "activations must be finite (a diverged network or a corrupt file)")
    return a


# ----------------------------------------------------------------------------- streamed reading

def epoch_order(n: int, chunk: int, buffer: int, generator) -> torch.Tensor:
    """One epoch's order of the samples 0…n−1, a function of (the generator's seed and state, n, chunk, buffer)
    only, so that reading a cache and recomputing from images give the same batches.

    n ≤ buffer: a uniform permutation (``torch.randperm``). Otherwise the ⌈n/chunk⌉ chunks of ``chunk``
    consecutive samples in random order, taken ``buffer // chunk`` at a time (a window), and each window's
    samples in random order: a reader of the cache holds one window (two where a batch spans both) and reads
    each chunk once per epoch.
    """
    import torch

    if n <= buffer:
        return torch.randperm(n, generator=generator)
    per = max(1, buffer // chunk)
    chunks = torch.randperm(-(-n // chunk), generator=generator).tolist()
    parts = []
    for w in range(0, len(chunks), per):
        ids = torch.cat([torch.arange(c * chunk, min((c + 1) * chunk, n)) for c in chunks[w:w + per]])
        parts.append(ids[torch.randperm(len(ids), generator=generator)])
    return torch.cat(parts)


class ChunkedLayer:
    """Rows of one cached dataset (a layer, or e.g. ``logits``) by sample index, through a least-recently-used
    cache of whole chunks of ``chunk`` samples: at most ``capacity`` chunks are held, so batches drawn in
    :func:`epoch_order` with ``capacity = 2 · buffer / chunk`` read every chunk once per epoch and hold at most
    two buffers. Rows come back as float32 (float16 caches widened), checked finite."""

    def __init__(self, path: str | os.PathLike, layer: str, chunk: int, capacity: int, name: str | None = None):
        self.path, self.layer, self.chunk, self.capacity = Path(path), layer, chunk, max(1, capacity)
        self.f = open_activations(path)
        name = name or f"layers/{layer}"
        if name not in self.f:
            summary = self.f.attrs.get("fronts") == "summary"
            self.f.close()
            hint = " (this training split holds only its summary, written when no consumer reads cached fronts: " \
                "see cache.train)" if summary else ""
            raise KeyError(f"{path}: no {name!r}{hint}")
        self.d = self.f[name]
        self.n = len(self.d)
        self._chunks: dict[int, np.ndarray] = {}  # insertion order = recency

    def _get(self, c: int) -> np.ndarray:
        if c in self._chunks:
            self._chunks[c] = self._chunks.pop(c)
        else:
            a = np.asarray(self.d[c * self.chunk:(c + 1) * self.chunk], dtype=np.float32)
            self._chunks[c] = _finite(a, self.path, self.layer)
        return self._chunks[c]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.arange(self.n)[idx] if isinstance(idx, slice) else np.asarray(idx, dtype=np.int64)
        which = idx // self.chunk
        out = np.empty((len(idx), *self.d.shape[1:]), np.float32)
        for c in np.unique(which):
            sel = which == c
            out[sel] = self._get(int(c))[idx[sel] - c * self.chunk]
        while len(self._chunks) > self.capacity:
            self._chunks.pop(next(iter(self._chunks)))
        return out

    def close(self) -> None:
        self._chunks.clear()
        self.f.close()

    def __enter__(self) -> ChunkedLayer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def block_size(bytes_per_image: int, block_mb: int, multiple: int = 256) -> int:
    """Images per block so that a block holds at most ``block_mb`` MB (at least ``multiple``, and a multiple of it:
    sums over batches of ``multiple`` then run in the same order whatever the block size)."""
    return max(1, int(block_mb * 2 ** 20 // max(1, bytes_per_image)) // multiple) * multiple


def blocks(path: str | os.PathLike, names: list[str], block: int) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Sequential blocks of ``block`` samples of the datasets ``names`` (``layers/<l>``, ``labels``, ``logits``) of
    one activation file, layers as float32 checked finite: evaluation streams the test split this way."""
    with open_activations(path) as f:
        for name in names:
            if name not in f:
                raise KeyError(f"{path}: no {name!r}; layers are {list(f['layers'])}")
        n = len(f["labels"])
        for s in range(0, n, block):
            out = {}
            for name in names:
                a = f[name][s:s + block]
                if name.startswith("layers/"):
                    a = _finite(np.asarray(a, np.float32), path, name[len("layers/"):])
                out[name] = a
            yield slice(s, min(s + block, n)), out


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
