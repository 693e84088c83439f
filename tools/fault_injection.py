"""Fault injection: SIGKILL the workflow at seeded random moments, audit what it left, resume, compare.

    python tools/fault_injection.py [--configfile tests/configs/tiny.yaml] [--kills 10] [--seed 0] [--chain]
                                    [--workdir DIR] [--cores 2] [--config KEY=VALUE ...]

1. **Reference.** The workflow runs uninterrupted into ``<workdir>/reference``; its duration D sets the kill times.
2. **Kills.** Snakemake starts in its own process group (``--cores N``) in a fresh folder and the whole group gets
   SIGKILL at time t; the k-th of K kills falls at D·(k + u)/K with u uniform from a generator seeded by
   ``seed + k``, so K kills spread over the whole run. Independent mode (default): one fresh folder per kill.
   ``--chain``: one folder, killed K times in a row, each restart resuming the previous one.
3. **Audit after each kill.** Every file under the results folder (logs aside) must be either a temporary file of
   :func:`stitchlib.io.atomic_path` (``.<name>.<random>.tmp``; counted, never read by any rule) or a complete
   artifact: HDF5 with its ``complete`` attribute and every dataset readable, checkpoints loaded with
   ``weights_only=True`` (these, HDF5 and JSON checked against their recorded sha256), CSV/JSON/NPZ/PNG parsed in
   full, and every CSV or Markdown table byte-identical to the reference's (a truncated table would differ).
4. **Resume** as a user would: ``snakemake --unlock``, then the same command with ``--rerun-incomplete``.
5. **Compare.** The resumed run must hold exactly the reference's files, no temporary file, and every CSV and
   Markdown table byte-identical to the reference's (CPU runs are deterministic).

Exit status 0 when every kill passes; one line per kill is printed. ``make fault-injection`` runs it;
``tests/test_reliability.py`` runs a chained three-kill subset in CI.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stitchlib import io  # noqa: E402

TABLES = (".csv", ".md")  # compared byte for byte with the reference
SKIP_DIRS = ("logs",)      # logs are appended by logging, not artifacts


# ----------------------------------------------------------------------------- running the workflow

def snakemake_cmd(results: Path, configfile: Path, cores: int, config: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", str(cores),
            "--rerun-incomplete", "--keep-going", "--nocolor", *extra, "--configfile", str(configfile),
            "--config", f"results={results}", *config]


def _unlock_if_locked(workdir: Path, configfile: Path, cores: int, config: list[str]) -> None:
    """A SIGKILLed Snakemake leaves its lock behind; ``snakemake --unlock`` removes it (as a user would)."""
    locks = workdir / ".snakemake" / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        subprocess.run(snakemake_cmd(workdir / "results", configfile, cores, list(config), "--unlock"),
                       cwd=workdir, capture_output=True, check=True)


def run_workflow(workdir: Path, configfile: Path, cores: int = 2, config: list[str] = (),
                 timeout: float = 3600) -> float:
    """Run (or resume) the workflow to completion in ``workdir`` (results in ``workdir/results``); return
    its seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    _unlock_if_locked(workdir, configfile, cores, list(config))
    start = time.monotonic()
    with open(workdir / "snakemake.log", "a") as log:
        out = subprocess.run(snakemake_cmd(workdir / "results", configfile, cores, list(config)), cwd=workdir,
                             stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"snakemake failed in {workdir} (exit {out.returncode}); see {workdir / 'snakemake.log'}")
    return time.monotonic() - start


def _session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` (Linux /proc): anything a killed run left behind."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # after the command: state, ppid, pgrp, session
            out.append(int(stat.parent.name))
    return out


def run_and_kill(workdir: Path, configfile: Path, after: float, cores: int, config: list[str]) -> dict:
    """Start the workflow in its own process group and SIGKILL the group ``after`` seconds later."""
    workdir.mkdir(parents=True, exist_ok=True)
    _unlock_if_locked(workdir, configfile, cores, list(config))
    with open(workdir / "snakemake.log", "a") as log:
        proc = subprocess.Popen(snakemake_cmd(workdir / "results", configfile, cores, list(config)), cwd=workdir,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=after)
        finished = True  # the run ended before the kill time
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = False
    time.sleep(0.2)
    escaped = _session_members(proc.pid)
    for pid in escaped:  # started by this run, outside its process group: kill them too, and report it
        os.kill(pid, signal.SIGKILL)
    return {"finished_before_kill": finished, "escaped_processes": len(escaped)}


# ----------------------------------------------------------------------------- auditing what is on disk

def _check_artifact(path: Path) -> None:
    """Raise if ``path`` is not a complete artifact of its kind."""
    suffix = path.suffix
    if suffix == ".h5":
        import h5py

        with io.open_activations(path) as f:
            f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
    elif suffix == ".pt":
        io.load_state_dict(path)
    elif suffix == ".csv":
        import pandas as pd

        pd.read_csv(path)
    elif suffix == ".json":
        io.read_json(path)
    elif suffix == ".npz":
        import numpy as np

        with np.load(path) as z:
            for k in z.files:
                z[k]
    elif suffix == ".png":
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    elif suffix in (".md", ".txt"):
        path.read_text(encoding="utf-8")
    else:
        raise KeyError(suffix)


@dataclass
class Audit:
    checked: int = 0
    temps: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def artifacts(results: Path) -> list[Path]:
    """Every file under ``results`` but logs, Snakemake's own markers and the checksum records beside artifacts
    (checked with their artifact: readers verify them), as paths relative to it."""
    if not results.is_dir():
        return []
    out = []
    for p in sorted(results.rglob("*")):
        rel = p.relative_to(results)
        record = p.name.startswith(".") and p.name.endswith(io.CHECKSUM_SUFFIX)
        if p.is_file() and rel.parts[0] not in SKIP_DIRS and not p.name.startswith(".snakemake") and not record:
            out.append(rel)
    return out


def audit(results: Path, reference: Path | None = None) -> Audit:
    """Check every file under ``results``: a temporary file of an interrupted write, or a complete artifact
    (and, with ``reference``, a table byte-identical to the reference's)."""
    a = Audit()
    for rel in artifacts(results):
        path = results / rel
        if io.is_temp_file(path):
            a.temps.append(str(rel))
            continue
        try:
            _check_artifact(path)
        except KeyError:
            a.unchecked.append(str(rel))
            continue
        except Exception as e:  # noqa: BLE001 - any failure to read is the finding
            a.problems.append(f"{rel}: {type(e).__name__}: {e}")
            continue
        a.checked += 1
        if reference is not None and path.suffix in TABLES:
            ref = reference / rel
            if not ref.is_file():
                a.problems.append(f"{rel}: not produced by the reference run")
            elif path.read_bytes() != ref.read_bytes():
                a.problems.append(f"{rel}: differs from the reference run")
    return a


def compare_runs(results: Path, reference: Path) -> list[str]:
    """Differences between two finished runs: missing or extra files, temporary files, tables that differ."""
    got = {str(p) for p in artifacts(results)}
    want = {str(p) for p in artifacts(reference)}
    problems = [f"missing: {p}" for p in sorted(want - got)] + [f"extra: {p}" for p in sorted(got - want)]
    problems += [f"{p}: differs" for p in sorted(got & want) if Path(p).suffix in TABLES
                 and (results / p).read_bytes() != (reference / p).read_bytes()]
    return problems


# ----------------------------------------------------------------------------- trials

def kill_times(duration: float, kills: int, seed: int) -> list[float]:
    """Kill k of K at D·(k + u_k)/K, u_k ~ U(0, 1) seeded by ``seed + k``: spread over the whole run."""
    return [duration * (k + random.Random(seed + k).random()) / kills for k in range(kills)]


def chain_times(duration: float, kills: int, seed: int) -> list[float]:
    """Chained kills: restart k runs D·(0.5 + u_k)/(K + 1) seconds before its kill, so the K kills fall
    across the whole run (each restart resumes the last) and the final resume still has work to do."""
    return [duration * (0.5 + random.Random(seed + k).random()) / (kills + 1) for k in range(kills)]


def trial(workdir: Path, reference: Path, times: list[float], configfile: Path, cores: int = 2,
          config: list[str] = (), report=print) -> list[str]:
    """Kill a run at each of ``times`` (seconds after each restart) in one folder, auditing after each kill;
    then resume to completion and compare with ``reference``. Returns the problems found (empty = passed)."""
    results, problems = workdir / "results", []
    for t in times:
        info = run_and_kill(workdir, configfile, t, cores, list(config))
        a = audit(results, reference)
        incomplete = len(list((workdir / ".snakemake" / "incomplete").glob("*")))
        report(f"  kill after {t:6.1f} s: {a.checked:4d} complete artifacts, {len(a.temps)} temporary files of "
               f"killed writes, {incomplete} outputs marked incomplete by Snakemake"
               + (" (the run had already finished)" if info["finished_before_kill"] else "")
               + (f", {info['escaped_processes']} processes outside the group" if info["escaped_processes"] else "")
               + (f"; unchecked: {a.unchecked}" if a.unchecked else ""))
        problems += [f"after the kill at {t:.1f} s: {p}" for p in a.problems]
        if info["escaped_processes"]:
            problems.append(f"after the kill at {t:.1f} s: {info['escaped_processes']} job processes escaped "
                            "the process group")
    try:
        run_workflow(workdir, configfile, cores, list(config))  # resume to completion
    except RuntimeError as e:
        return problems + [f"resuming failed: {e}"]
    final = audit(results, reference)
    problems += [f"after resuming: {p}" for p in final.problems]
    problems += [f"after resuming: temporary file left: {p}" for p in final.temps]
    problems += [f"after resuming: {p}" for p in compare_runs(results, reference)]
    report(f"  resumed: {final.checked} artifacts, tables {'identical to' if not problems else 'DIFFER from'} "
           "the uninterrupted run")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", type=Path, default=ROOT / "tests" / "configs" / "tiny.yaml")
    ap.add_argument("--kills", type=int, default=10, help="number of SIGKILLs (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="kill k uses seed + k")
    ap.add_argument("--chain", action="store_true", help="kill one run repeatedly instead of one run per kill")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a new folder under /tmp (kept)")
    ap.add_argument("--config", nargs="*", default=[], help="extra KEY=VALUE overrides for snakemake --config")
    args = ap.parse_args(argv)
    configfile = args.configfile.resolve()
    workdir = (args.workdir or Path(f"/tmp/stitchlib-fault-injection-{os.getpid()}")).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    print(f"fault injection: {configfile.relative_to(ROOT) if configfile.is_relative_to(ROOT) else configfile}, "
          f"{args.kills} SIGKILLs ({'chained' if args.chain else 'one fresh run each'}), seed {args.seed}, "
          f"--cores {args.cores}, in {workdir}")
    duration = run_workflow(workdir / "reference", configfile, args.cores, args.config)
    reference = workdir / "reference" / "results"
    print(f"uninterrupted reference run: {duration:.1f} s, {len(artifacts(reference))} artifacts")
    failures = 0
    start = time.monotonic()
    if args.chain:
        problems = trial(workdir / "chain", reference, chain_times(duration, args.kills, args.seed), configfile,
                         args.cores, args.config)
        failures += bool(problems)
        for p in problems:
            print("  FAIL", p)
    else:
        for k, t in enumerate(kill_times(duration, args.kills, args.seed)):
            print(f"kill {k + 1}/{args.kills} (seed {args.seed + k}):")
            problems = trial(workdir / f"kill-{k:02d}", reference, [t], configfile, args.cores, args.config)
            failures += bool(problems)
            for p in problems:
                print("  FAIL", p)
            if not problems:
                shutil.rmtree(workdir / f"kill-{k:02d}")
    print(f"fault injections: {args.kills} SIGKILLs, {'1 chained run' if args.chain else f'{args.kills} runs'}, "
          f"{failures} failed; {time.monotonic() - start:.0f} s after the reference run")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
