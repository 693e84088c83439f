"""Scale rehearsal: paper 1's CIFAR-10 networks (ResNet-18 width 64, ViT-Ti/4 at 32 px) on synthetic images written
in the real CIFAR-10 layout (pickled cifar-10-batches-py, read by the workflow's own loader), the whole paper-1
workflow (training, extraction, DM and TLM on recomputed fronts, TLM with flip + crop, indices, OOD detectors on
cached fronts and their scores, Ding et al. tests) at several training-set sizes with short training and a reduced
grid (one seed, two stitch points per network).

Per rule: the measured peak memory of its largest job (each job logs its own ru_maxrss,
workflow_scripts/_runner.py), the bytes its jobs wrote (Snakemake's metadata names the rule of every output), the
ratio largest / smallest size, a linear projection to 50,000 training images, and stitchlib.footprint's estimate
for the same config at 50,000. Then the footprint of configs/paper1-cifar10.yaml.

    python bench/bench_scale.py [--sizes 500 1000 4000] [--test 1000] [--policy recompute] [--cores 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import base64
import json
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stitchlib import config as sconf  # noqa: E402
from stitchlib import footprint  # noqa: E402

PAPER = 50_000


def write_cifar(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Synthetic CIFAR-10 in torchvision's layout: 5 pickled training batches (n_train images in all), a test batch
    and batches.meta. Each class is a fixed random template under noise, so the networks have something to learn."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, (10, 3072))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(path: Path, n: int) -> None:
        labels = rng.integers(0, 10, n)
        x = 0.6 * templates[labels] + 0.4 * rng.integers(0, 256, (n, 3072))
        with open(path, "wb") as f:
            pickle.dump({"batch_label": path.name, "labels": labels.tolist(), "data": x.astype(np.uint8),
                         "filenames": [f"{i}.png" for i in range(n)]}, f)

    sizes = [n_train // 5 + (i < n_train % 5) for i in range(5)]
    for i, n in enumerate(sizes, 1):
        batch(folder / f"data_batch_{i}", n)
    batch(folder / "test_batch", n_test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": max(sizes), "num_vis": 3072,
                     "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                     "truck"]}, f)


def bench_config(data: Path, policy: str, test: int = 1000, device: str = "cpu") -> dict:
    """Paper 1's networks and settings, reduced in what costs CPU time but not memory: one seed, two stitch points
    per network, no network training (epochs 0), one TLM epoch, small detectors trained one epoch per stage."""
    return {
        "results": "results",
        "device": device,
        "datasets": {"cifar10": {"root": str(data)}},
        "architectures": {
            "resnet18": {"family": "resnet18", "params": {"width": 64}, "layers": ["layer1.0", "layer4.1"],
                         "train": {"epochs": 0}},
            "vit": {"family": "vit", "params": {"patch_size": 4, "depth": 12, "heads": 3, "hidden_dim": 192,
                                                "mlp_dim": 768}, "layers": ["block0", "block11"],
                    "train": {"epochs": 0}},
        },
        "seeds": [0],
        "stitching": {"settings": ["intra"], "methods": ["dm", "tlm"]},
        "dm": {"samples": 100},
        "tlm": {"epochs": 1, "batch_size": 256, "augment": "flip_crop" if policy == "recompute" else "none",
                "group_size": 2},
        # TLM and DM recompute their fronts (TLM with flip + crop); the detectors read theirs from the cache, so both
        # paths run: the cached one in shuffled chunks of a 512-image buffer, the evaluation in 64 MB blocks
        "cache": {"train": policy, "consumers": {"detector": "cache"}, "buffer": 512, "block_mb": 64},
        "similarity": {"samples": min(500, test)},
        "ood": {"outliers": {"n": 1000, "heldout": 500},
                "detector": {"conv": {"width": 8, "input_size": 16, "stage_blocks": [1, 1, 1, 1]},
                             "tokens": {"hidden_dim": 32, "depth": 1, "heads": 2, "mlp_dim": 64}},
                "pretrain": {"epochs": 1}, "finetune": {"epochs": 1}},
        "ding": {"sensitivity": {"ranks": 3}},
        "cross": {"architectures": [], "conv_vit": None},
        "frankenstein": {"enabled": False},
    }


def tlm_speed(folder: Path, n: int) -> float:
    """Training images per second through TLM stitches (stitches × images of the one epoch over the logged time)."""
    done = [re.search(r"trained (\d+) TLM stitches in ([\d.]+) s", p.read_text())
            for p in (folder / "results" / "logs" / "tlm").rglob("*.log")]
    return sum(int(m[1]) * n for m in done if m) / max(sum(float(m[2]) for m in done if m), 1e-9)


def measure(folder: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Per rule: the largest peak memory (MB) its jobs logged and the bytes of the outputs it wrote."""
    peak: dict[str, float] = {}
    for log in (folder / "results" / "logs").rglob("*.log"):
        rule = log.relative_to(folder / "results" / "logs").parts[0].removesuffix(".log")  # top-level: table jobs
        found = re.findall(r"peak memory (\d+) MB", log.read_text())
        if found:
            peak[rule] = max(peak.get(rule, 0.0), float(found[-1]))
    written: dict[str, int] = {}
    root = folder / ".snakemake" / "metadata"
    for meta in (p for p in root.rglob("*") if p.is_file()):
        record = json.loads(meta.read_text())
        name = "".join(meta.relative_to(root).parts)  # long names are split into folders
        path = folder / base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        written[record["rule"]] = written.get(record["rule"], 0) + sum(p.stat().st_size for p in files)
    return peak, written


def project(sizes: list[int], values: list[float], to: int = PAPER) -> float:
    """Linear least squares in the training-set size, evaluated at ``to``."""
    if len(sizes) < 2:
        return float(values[0])
    slope, icpt = np.polyfit(np.asarray(sizes, float), np.asarray(values, float), 1)
    return float(icpt + slope * to)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 4000])
    ap.add_argument("--test", type=int, default=1000, help="test images (the same at every size)")
    ap.add_argument("--policy", choices=["recompute", "cache"], default="recompute")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cuda: the rehearsal on a GPU (then record TLM images/s)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/stitchlib-bench-scale"))
    args = ap.parse_args()

    runs, seconds = {}, {}
    for n in args.sizes:
        folder = args.out / f"{args.policy}-{n}"
        if (folder / "results" / "report.html").exists() and (folder / "seconds").exists():  # measured before
            runs[n], seconds[n] = measure(folder), float((folder / "seconds").read_text())
            print(f"size {n}: measured before ({seconds[n] / 60:.1f} min)", flush=True)
            continue
        write_cifar(folder / "data", n, args.test)
        cfg_path = folder / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(bench_config(folder / "data", args.policy, args.test, args.device)))
        start = time.time()
        out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--configfile",
                              str(cfg_path), "--cores", str(args.cores), "-q"], cwd=folder, capture_output=True,
                             text=True)
        seconds[n] = time.time() - start
        (folder / "seconds").write_text(f"{seconds[n]:.0f}")
        if out.returncode:
            sys.exit(f"size {n}: snakemake failed\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        runs[n] = measure(folder)
        print(f"size {n}: {seconds[n] / 60:.1f} min, TLM {tlm_speed(folder, n):.0f} stitch-images/s "
              f"({args.policy}, {args.device})", flush=True)

    sizes = args.sizes
    at_paper = sconf.validate(bench_config(args.out / "data-not-needed", args.policy, args.test, args.device) | {
        "datasets": {"cifar10": {"root": None, "download": True}}})
    est = footprint.estimate(at_paper)  # catalog's CIFAR-10: 50,000 training images
    at_size = {n: footprint.estimate(at_paper, (n, args.test)) for n in sizes}
    rules = sorted({r for _, (peak, _) in runs.items() for r in peak})
    head = " ".join(f"{n:>8}" for n in sizes)
    print(f"\npolicy {args.policy}, test {args.test} images, {args.cores} cores; peak memory (MB) of a rule's largest "
          f"job, measured")
    print(f"{'rule':<14}{head}  largest/smallest  projected {PAPER}  estimated {PAPER}  estimated at the sizes")
    worst = 0.0
    for r in rules:
        vals = [runs[n][0].get(r, float("nan")) for n in sizes]
        ratio = vals[-1] / vals[0]
        worst = max(worst, ratio)
        estimate = est[r].mem / 2 ** 20 if r in est else float("nan")
        there = " ".join(f"{at_size[n][r].mem / 2 ** 20:.0f}" if r in at_size[n] else "-" for n in sizes)
        print(f"{r:<14}" + " ".join(f"{v:>8.0f}" for v in vals) + f"  {ratio:>16.2f}  {project(sizes, vals):>12.0f}"
              f"  {estimate:>12.0f}  {there}")
    print(f"largest ratio: {worst:.2f} (target ≤ 1.25)")
    print("\nbytes written (MB), measured")
    print(f"{'rule':<14}{head}  projected {PAPER}  estimated {PAPER}")
    for r in sorted({r for _, (_, w) in runs.items() for r in w}):
        vals = [runs[n][1].get(r, 0) / 1e6 for n in sizes]
        print(f"{r:<14}" + " ".join(f"{v:>8.1f}" for v in vals) + f"  {project(sizes, vals):>12.1f}"
              f"  {est[r].disk / 1e6 if r in est else float('nan'):>12.1f}")
    print("\n" + " ".join(f"size {n}: {seconds[n] / 60:.1f} min" for n in sizes) +
          f", {sum(seconds.values()) / 60:.1f} min in all")

    raw = yaml.safe_load((ROOT / "configs" / "paper1-cifar10.yaml").read_text())
    raw["datasets"]["cifar10"] |= {"root": None, "download": True}
    raw["ood"]["outliers"]["source"] = "sample_photos"  # the same sizes; no 300K Random Images file needed
    text, _ = footprint.report(sconf.validate(raw), limit_gb=16)
    print("\nconfigs/paper1-cifar10.yaml (stitchlib plan):\n" + text)


if __name__ == "__main__":
    main()
