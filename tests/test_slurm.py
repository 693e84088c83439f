"""The SLURM profile: its shape (always), and a real one-node SLURM cluster running the tiny config through it
(opt-in: STITCHLIB_SLURM_TEST=1, as root, with apt or SLURM installed; `make slurm-test` runs the same script)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
GPU_RULES = {"train", "extract", "outliers", "detector", "ood_scores", "dm", "tlm", "probes", "sensitivity",
             "specificity", "cross_init", "cross_pair", "frankenstein_run", "frankenstein_inits",
             "frankenstein_sparsity"}
sys.path.insert(0, str(ROOT / "tools" / "slurm"))


def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def workflow_rules() -> dict[str, bool]:
    """Every rule of rules/*.smk and the Snakefile → whether it runs something (a target rule does not)."""
    rules = {}
    for f in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", f.read_text(), re.M):
            rules[m.group(1)] = bool(re.search(r"^\s+(script|shell|run|wrapper|notebook):", m.group(2), re.M))
        for m in re.finditer(r"^use rule (\w+) as (\w+) with:", f.read_text(), re.M):  # runs what its parent runs
            rules[m.group(2)] = rules[m.group(1)]
    return rules


def test_profile_uses_the_slurm_executor_and_leaves_partition_and_account_to_the_user():
    p = profile()
    assert p["executor"] == "slurm"
    assert isinstance(p["jobs"], int) and p["jobs"] >= 1
    for key in ("latency-wait", "rerun-incomplete", "keep-going", "retries"):
        assert key in p, key
    d = p["default-resources"]
    assert d["slurm_partition"] == "CHANGE_ME" and d["slurm_account"] == "CHANGE_ME"
    text = PROFILE.read_text()
    assert re.search(r"slurm_partition:.*# EDIT", text) and re.search(r"slurm_account:.*# EDIT", text)


def test_every_rule_that_runs_has_runtime_and_cpus_and_requests_its_estimated_memory():
    rules = workflow_rules()
    running = {r for r, runs in rules.items() if runs}
    assert {"train", "tlm", "detector", "table1"} <= running and "all" not in running
    res = profile()["set-resources"]
    assert not set(res) - set(rules), f"profile names rules the workflow lacks: {set(res) - set(rules)}"
    text = "".join(f.read_text() for f in (ROOT / "rules").glob("*.smk"))
    for rule in sorted(running):
        assert rule in res, f"profiles/slurm sets no resources for rule {rule}"
        r = res[rule]
        assert isinstance(r.get("runtime"), int) and r["runtime"] > 0, rule
        assert isinstance(r.get("cpus_per_task"), int) and r["cpus_per_task"] >= 1, rule
        assert "mem_mb" not in r, f"profiles/slurm overrides the estimated memory of rule {rule}"
        for key in ("mem_mb", "disk_mb"):  # the rule's own request comes from stitchlib.footprint
            assert f'{key}=requested("{rule}", "{key}")' in text, (rule, key)


def test_gpu_rules_ask_one_gpu_and_nothing_uses_gres_in_slurm_extra():
    res = profile()["set-resources"]
    for rule, r in res.items():
        assert r.get("gpu", 0) == (1 if rule in GPU_RULES else 0), rule
    text = PROFILE.read_text()
    extra = [line for line in text.splitlines() if "slurm_extra" in line and not line.lstrip().startswith("#")]
    assert not any(re.search(r"--gres|--gpus|-G\b", line) for line in extra), extra
    for r in [*res.values(), profile()["default-resources"]]:
        assert not re.search(r"--gres|--gpus", str(r.get("slurm_extra", ""))), r


def test_threads_match_cpus_per_task():
    p = profile()
    for rule, threads in p.get("set-threads", {}).items():
        assert p["set-resources"][rule]["cpus_per_task"] == threads, rule


def test_plugin_is_pinned_and_installed():
    req = (ROOT / "requirements.txt").read_text()
    m = re.search(r"^snakemake-executor-plugin-slurm==(2\.\d+\.\d+)\b", req, re.M)
    assert m, "requirements.txt pins snakemake-executor-plugin-slurm 2.x"
    assert f"snakemake-executor-plugin-slurm=={m.group(1)}" in (ROOT / "envs" / "stitchlib.yaml").read_text()
    from importlib.metadata import version

    assert version("snakemake-executor-plugin-slurm") == m.group(1)


def test_profile_dry_runs_the_tiny_config(tmp_path):
    """Snakemake accepts the profile (every option, every resource) and plans the tiny workflow with it."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n",
                          "--profile", str(PROFILE.parent), "--configfile", str(ROOT / "tests/configs/tiny.yaml")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "tlm" in out.stdout and "Job stats" in out.stdout
    # What the jobs get once Snakemake has merged every profile it loads (it adds the workflow's profiles/default,
    # whose values win): the user's partition and account must survive.
    train = re.search(r"^rule train:\n((?:    .*\n)+)", out.stdout, re.M).group(1)
    assert "slurm_partition=CHANGE_ME" in train and "slurm_account=CHANGE_ME" in train, train


def test_test_profile_adapts_only_what_the_test_cluster_needs():
    from test_profile import adapt

    p = profile()
    t = adapt(p, cpus=1, mem_mb=3000, gpu=True)
    assert t["executor"] == "slurm" and "set-threads" not in t
    assert t["default-resources"]["slurm_partition"] == "debug"
    for rule, r in t["set-resources"].items():
        assert r["cpus_per_task"] == 1 and r.get("mem_mb", 0) <= 3000
        assert r["runtime"] == p["set-resources"][rule]["runtime"]
        assert r.get("gpu") == p["set-resources"][rule].get("gpu")
    assert not any("gpu" in r for r in adapt(p, cpus=1, mem_mb=3000, gpu=False)["set-resources"].values())


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_slurm_test_passes_an_absolute_python_and_the_script_resolves_relative_paths(tmp_path):
    """`make slurm-test` once failed at once: it passed PYTHON=.venv/bin/python, which the script ran after changing
    into its work folder. The Makefile's command, then the script's own handling of relative PYTHON, config and work
    folder (--check: no root, no daemons; it dry-runs the local command from its work folder)."""
    made = subprocess.run(["make", "-n", "-C", str(ROOT), "slurm-test", "E2E_ARGS=--check"], capture_output=True,
                          text=True, timeout=60)
    (line,) = [x for x in made.stdout.splitlines() if "tools/slurm/e2e.sh" in x]
    assert re.fullmatch(r"PYTHON=/\S+/\.venv/bin/python tools/slurm/e2e\.sh --check", line), line
    (tmp_path / "venv/bin").mkdir(parents=True)
    (tmp_path / "venv/bin/python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (tmp_path / "venv/bin/python").chmod(0o755)
    shutil.copy(ROOT / "tests/configs/tiny.yaml", tmp_path / "tiny.yaml")
    env = {**os.environ, "PYTHON": "venv/bin/python", "SLURM_TEST_CONFIG": "tiny.yaml", "SLURM_TEST_DIR": "work",
           "PYTHONPATH": str(ROOT)}
    script = [str(ROOT / "tools/slurm/e2e.sh"), "--check"]
    out = subprocess.run([*script, "--groups", "detector=d"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"python {tmp_path}/venv/bin/python; config {tmp_path}/tiny.yaml; work folder {tmp_path}/work" in out.stderr
    assert "check OK" in out.stderr and (tmp_path / "work/profile/config.yaml").is_file()
    (tmp_path / "link").symlink_to(ROOT.parent)  # a work folder that would hold the repository: refused, not emptied
    for key, value, message in (("PYTHON", "nope/python", f"PYTHON: {tmp_path}/nope/python is not an executable"),
                                ("SLURM_TEST_DIR", "link", "holds the repository"), ("SLURM_TEST_DIR", "/", "holds")):
        bad = subprocess.run(script, cwd=tmp_path, env={**env, key: value}, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def _slurm_test_unavailable() -> str | None:
    if os.environ.get("STITCHLIB_SLURM_TEST") != "1":
        return "opt-in: STITCHLIB_SLURM_TEST=1 (or `make slurm-test`) runs a real one-node SLURM cluster"
    if os.geteuid() != 0:
        return "needs root to install and start the SLURM daemons"
    if not (shutil.which("apt-get") or shutil.which("slurmctld")):
        return "needs apt-get (Debian/Ubuntu) or an installed SLURM"
    return None


@pytest.mark.skipif(_slurm_test_unavailable() is not None, reason=str(_slurm_test_unavailable()))
def test_tiny_config_through_a_real_slurm_cluster_gives_the_local_tables(tmp_path):
    env = {**os.environ, "SLURM_TEST_DIR": str(tmp_path / "work"), "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "tools/slurm/e2e.sh")], env=env, capture_output=True, text=True,
                         timeout=3600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "identical" in out.stderr
