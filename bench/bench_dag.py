"""How long Snakemake takes to build the DAG of each paper config (a dry run), against a trivial workflow of
14,000 jobs as the baseline — every cluster job re-parses the workflow, so this cost is paid per submission
too. Paper configs are pointed at empty files with the expected data layout (nothing is read).

    python bench/bench_dag.py [--trivial 14000] [--bound 30]
"""

from __future__ import annotations

import argparse
import re
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


def fake_config(path: Path, work: Path) -> Path:
    raw = yaml.safe_load(path.read_text())
    for name, d in raw["datasets"].items():
        root = work / "data" / name
        fake_layout(name, root)
        d["root"] = str(root)
    outliers = raw.get("ood", {}).get("outliers", {})
    if outliers.get("source") == "npy":
        outliers["path"] = fake_outliers(work / "300K.npy")
    out = work / f"{path.stem}.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


def dry_run(args: list[str], cwd: Path) -> tuple[float, int]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", *args], cwd=cwd,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"dry run failed: {args}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    total = re.search(r"^total\s+(\d+)$", out.stdout, re.M)
    return seconds, int(total.group(1)) if total else 0


def trivial_snakefile(work: Path, jobs: int) -> Path:
    path = work / "Trivial.smk"
    path.write_text(f"rule all:\n    input: expand('out/{{i}}.txt', i=range({jobs}))\n\n"
                    "rule one:\n    output: 'out/{i}.txt'\n    shell: 'touch {output}'\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trivial", type=int, default=14000, help="jobs of the baseline workflow")
    ap.add_argument("--bound", type=float, default=30.0, help="seconds a paper config's DAG may take")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base_s, base_jobs = dry_run(["--snakefile", str(trivial_snakefile(work, args.trivial))], work)
        print(f"{'workflow':32s} {'jobs':>7s} {'seconds':>8s} {'vs trivial':>10s} {'s/1k jobs':>9s}  within bound")
        print(f"{'trivial (baseline)':32s} {base_jobs:7d} {base_s:8.1f} {1.0:10.2f} {1000 * base_s / base_jobs:9.2f}")
        for cfg in sorted((ROOT / "configs").glob("paper*.yaml")):
            s, jobs = dry_run(["--snakefile", str(ROOT / "Snakefile"), "--configfile", str(fake_config(cfg, work))],
                              work)
            print(f"{cfg.stem:32s} {jobs:7d} {s:8.1f} {s / base_s:10.2f} {1000 * s / max(jobs, 1):9.2f}  "
                  f"{'yes' if s <= args.bound else 'NO'} (≤ {args.bound:.0f} s)")


if __name__ == "__main__":
    main()
