"""How long Snakemake takes to build the DAG of each paper config (a dry run), against a trivial workflow of
14,000 jobs as the baseline — every cluster job re-parses the workflow, so this cost is paid per submission
too. Paper configs are pointed at empty files with the expected data layout (nothing is read). Also: paper 1 on
CIFAR-10 scaled to ≥ 20,000 jobs (more seeds), and the default config's `snakemake -n` against an empty workflow's
(Snakemake's own start-up), each the median of --repeat runs.

    python bench/bench_dag.py [--trivial 14000] [--bound 30] [--scaled-seeds 56] [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from stitchlib import catalog

ROOT = Path(__file__).resolve().parents[1]
def fake_layout(name: str, root: Path) -> None:
    """Empty files where catalog.DATASETS says a local dataset keeps its data ("x/": a class folder, "x/*": a
    file inside)."""
    for p in catalog.dataset(name).layout:
        path = root / (p[:-1] + "f" if p.endswith("/*") else p + "c/f" if p.endswith("/") else p)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def fake_outliers(path: Path, n: int = 300000) -> str:
    """A .npy header of n 32×32 RGB uint8 images and a sparse file of their size (the config check reads the
    header and the size only)."""
    import numpy as np

    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, 32, 32, 3)})
        f.truncate(f.tell() + n * 32 * 32 * 3)
    return str(path)


def fake_config(path: Path, work: Path, seeds: int | None = None) -> Path:
    raw = yaml.safe_load(path.read_text())
    if seeds:
        raw["seeds"] = list(range(seeds))
    for name, d in raw["datasets"].items():
        root = work / "data" / name
        fake_layout(name, root)
        d["root"] = str(root)
    outliers = raw.get("ood", {}).get("outliers", {})
    if outliers.get("source") == "npy":
        outliers["path"] = fake_outliers(work / "300K.npy")
    out = work / f"{path.stem}{f'-{seeds}seeds' if seeds else ''}.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


def dry_run(args: list[str], cwd: Path, repeat: int = 1) -> tuple[float, int]:
    """Median seconds of ``repeat`` dry runs, and the number of jobs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", *args], cwd=cwd,
                             capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if out.returncode:
            raise SystemExit(f"dry run failed: {args}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    total = re.search(r"^total\s+(\d+)$", out.stdout, re.M)
    return statistics.median(times), int(total.group(1)) if total else 0


def trivial_snakefile(work: Path, jobs: int) -> Path:
    path = work / "Trivial.smk"
    path.write_text(f"rule all:\n    input: expand('out/{{i}}.txt', i=range({jobs}))\n\n"
                    "rule one:\n    output: 'out/{i}.txt'\n    shell: 'touch {output}'\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trivial", type=int, default=14000, help="jobs of the baseline workflow")
    ap.add_argument("--bound", type=float, default=30.0, help="seconds a paper config's DAG may take")
    ap.add_argument("--scaled-seeds", type=int, default=56, help="seeds of the scaled paper 1 run (56: 20,507 jobs)")
    ap.add_argument("--repeat", type=int, default=3, help="dry runs per workflow (the median is printed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        empty = work / "Empty.smk"
        empty.write_text("rule all:\n    output: 'x'\n    shell: 'touch {output}'\n")
        empty_s, _ = dry_run(["--snakefile", str(empty)], work, args.repeat)
        default_s, default_jobs = dry_run(["--snakefile", str(ROOT / "Snakefile"), "--configfile",
                                           str(ROOT / "config.yaml")], work, args.repeat)
        print(f"snakemake -n: empty workflow {empty_s:.2f} s, the default config ({default_jobs} jobs) "
              f"{default_s:.2f} s (+{default_s - empty_s:.2f} s; target ≤ 1.5 s)\n")
        base_s, base_jobs = dry_run(["--snakefile", str(trivial_snakefile(work, args.trivial))], work)
        print(f"{'workflow':32s} {'jobs':>7s} {'seconds':>8s} {'vs trivial':>10s} {'s/1k jobs':>9s}  within bound")
        print(f"{'trivial (baseline)':32s} {base_jobs:7d} {base_s:8.1f} {1.0:10.2f} {1000 * base_s / base_jobs:9.2f}")
        runs = [(cfg.stem, fake_config(cfg, work)) for cfg in sorted((ROOT / "configs").glob("paper*.yaml"))]
        paper1 = ROOT / "configs" / "paper1-cifar10.yaml"
        runs.append((f"paper1-cifar10, {args.scaled_seeds} seeds", fake_config(paper1, work, args.scaled_seeds)))
        for name, cfg in runs:
            s, jobs = dry_run(["--snakefile", str(ROOT / "Snakefile"), "--configfile", str(cfg)], work)
            print(f"{name:32s} {jobs:7d} {s:8.1f} {s / base_s:10.2f} {1000 * s / max(jobs, 1):9.2f}  "
                  f"{'yes' if s <= args.bound else 'NO'} (≤ {args.bound:.0f} s)")


if __name__ == "__main__":
    main()
