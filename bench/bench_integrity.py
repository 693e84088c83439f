"""What verifying artifacts costs (stitchlib.io.verify: each job hashes every checkpoint, activation file, stitch and
detector it reads, once per file, against the sha256 recorded when it was written; files above
``integrity.hash_limit_mb`` are checked by their size only).

1. sha256 throughput here, against reading the same activation file's layer (both from the page cache,
   alternating, ``--reps`` times each, so load from other processes hits both alike);
2. the default run (``make run``): every activation file each job reads, from ``snakemake -n``'s job list and the
   files' sizes (samples × the layers' shapes), hashed at that throughput, against the run's measured CPU time;
3. paper 1 on CIFAR-10: the size of one network's activation files and what one DM job would hash in full.

    python bench/bench_integrity.py [--mb 256] [--reps 3]
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from stitchlib import catalog, io, pipeline
from stitchlib import config as sconf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench_dag  # noqa: E402

MAKE_RUN_CPU_S = 51 * 60 + 36  # README: make run, 51m36s of CPU on 2 cores


def best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def activation_bytes(cfg: dict, dataset: str, net: str) -> dict[str, int]:
    """split -> bytes of a network's activation file (float32 layers, logits, int64 labels), from the layers'
    shapes and the split sizes (outliers and held-out: the OOD settings' counts)."""
    spec = sconf.network_spec(cfg, dataset, net)
    per = sum(math.prod(s) for s in pipeline.expected_shapes(spec).values()) * 4 + spec["num_classes"] * 4 + 8
    train, test = catalog.dataset(dataset).splits
    o = cfg["ood"]["outliers"]
    return {s: n * per for s, n in (("train", train), ("test", test), ("outliers", o["n"]),
                                    ("heldout", o["heldout"]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=256, help="size of the file hashed and read")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n, width = args.mb, 1 << 20  # one sample = 1 MiB of float32
        x = np.random.default_rng(0).standard_normal((64, width // 4), np.float32)
        path = tmp / "acts.h5"
        with io.ActivationWriter(path, n, {}, chunk=64) as w:
            for _ in range(0, n, 64):
                w.append(np.zeros(64, np.int64), np.zeros((64, 10), np.float32), {"a": x}, {"a": "tokens"})
        size, sha, read = path.stat().st_size, [], []
        for _ in range(args.reps):
            start = time.perf_counter()
            io.sha256(path)
            sha.append(time.perf_counter() - start)
            start = time.perf_counter()
            io.read_layer(path, "a")  # (verified once, in the first repetition)
            read.append(time.perf_counter() - start)
        rate = size / min(sha)
        print(f"sha256: {size / 1e6:.0f} MB in {min(sha):.3f} s = {rate / 1e9:.2f} GB/s on one core; reading its layer "
              f"{min(read):.3f} s: hashing a file costs {min(sha) / min(read):.1f}× reading it once")

        # the default run: what its jobs read
        cfg = sconf.validate(yaml.safe_load((ROOT / "config.yaml").read_text()))
        out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n",
                              "--configfile", str(ROOT / "config.yaml"), "--config", "results=results"], cwd=tmp,
                             capture_output=True, text=True, timeout=600)
        sizes, total, jobs = {}, 0, 0
        for block in re.findall(r"^\s+input: (.*)$", out.stdout, re.M):
            jobs += 1
            for f in {s.strip() for s in block.split(",")}:
                m = re.fullmatch(r"results/activations/(\w+)/(?:init/)?([\w.]+-s\d+)/(\w+)\.h5", f)
                if m:
                    key = m.groups()
                    if key not in sizes:
                        sizes[key] = activation_bytes(cfg, key[0], key[1])[key[2]]
                    total += sizes[key]
        files = sum(sizes.values())
        print(f"make run: {jobs} jobs read {len(sizes)} activation files ({files / 1e9:.2f} GB) {total / 1e9:.1f} GB "
              f"in all; hashing that takes {total / rate:.0f} s of CPU = {100 * total / rate / MAKE_RUN_CPU_S:.1f} % "
              f"of the run's {MAKE_RUN_CPU_S / 60:.0f} min (every file below the default hash_limit_mb 1024: "
              f"largest {max(sizes.values()) / 1e6:.0f} MB)")

        # paper scale
        paper = sconf.validate(yaml.safe_load(bench_dag.fake_config(ROOT / "configs/paper1-cifar10.yaml",
                                                                    tmp).read_text()))
        for arch in sconf.matrix_architectures(paper):
            b = activation_bytes(paper, "cifar10", sconf.network_id(arch, 0))
            dm = 2 * b["train"] + 2 * b["test"]
            print(f"paper1-cifar10 {arch}: train.h5 {b['train'] / 1e9:.1f} GB, test.h5 {b['test'] / 1e9:.1f} GB; a DM "
                  f"job reads 4 files: hashing them all {dm / rate:.0f} s per job (×{2 * 10 * 10} DM jobs), so above "
                  "hash_limit_mb (default 1024) files are checked by size only")


if __name__ == "__main__":
    main()
