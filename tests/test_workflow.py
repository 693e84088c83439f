"""Workflow tests: dry-runs of the default config, config errors before any job, lint, and one tiny
end-to-end run on the digits followed by an incremental-rebuild check."""

import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from stitchlib import catalog, footprint
from stitchlib import config as sconf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench_dag  # noqa: E402

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
pytestmark = pytest.mark.workflow


def smk(*args, cwd, check=True):
    out = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=1200)
    if check and out.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def write_config(tmp_path, base: Path, **changes) -> Path:
    cfg = yaml.safe_load(base.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_default_config_dry_run_job_counts(tmp_path):
    out = smk("-n", "--configfile", str(ROOT / "config.yaml"), cwd=tmp_path)
    # paper 1: 2 architectures × 3 seeds = 6 networks; per arch 3 intra + 6 inter pairs = 9 → 18 pairs per method
    # one OOD detector per (network, layer): 3 × 8 ResNet blocks + 3 × 6 ViT blocks = 42; Ding tests: probes and
    # low-rank families per network, specificity per architecture. Paper 3: 3 small ResNets (trained + their
    # initialisations), 9 ordered pairs × (trained, random sender, random receiver) + resnet18 ↔ vit = 29 pair jobs.
    # Paper 2: Tiny-10 and ResNet-20 at 3 widths × 2 seeds = 8 networks; Figs. 2–3 on both ordered pairs of each of
    # the 4 architectures (8 jobs), Fig. 4 on both Tiny-10 pairs, Figs. 5 and 7 one job each (12 frankenstein_run)
    assert job_counts(out.stdout) == {"train": 17, "extract": 17, "dm": 18, "tlm": 18, "indices": 2,
                                      "similarity_table": 1, "table1": 1, "heatmaps": 1, "all": 1,
                                      "outliers": 6, "detector": 42, "detectors": 6, "ood_scores": 18,
                                      "ood_figures": 1,
                                      "probes": 6, "sensitivity": 6, "specificity": 2, "ding_tables": 1,
                                      "cross_init": 3, "cross_pair": 29, "cross_report": 1,
                                      "frankenstein_run": 12, "frankenstein_inits": 1, "frankenstein_sparsity": 1,
                                      "frankenstein_figures": 1, "report": 1}
    cfg = sconf.load(ROOT / "config.yaml")
    counts = {rule: r.jobs for rule, r in footprint.estimate(cfg).items()}
    assert counts == {k: v for k, v in job_counts(out.stdout).items() if k != "all"}  # `stitchlib plan`'s jobs
    requests = footprint.resources(cfg)  # every job asks what the estimates say
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: .*?mem_mb=(\d+)", out.stdout, re.M)
    assert len(jobs) == sum(counts.values()) and all(int(mb) == requests[rule]["mem_mb"] for rule, mb in jobs)


def test_one_table_builds_only_its_ancestors(tmp_path):
    cfg = write_config(tmp_path, ROOT / "config.yaml", **{"stitching.methods": ["dm"]})
    out = smk("-n", "results/tables/digits/table1.md", "--configfile", str(cfg), cwd=tmp_path)
    assert job_counts(out.stdout) == {"train": 6, "extract": 6, "dm": 18, "indices": 2, "similarity_table": 1,
                                      "table1": 1}


@pytest.mark.parametrize("change,message", [
    ({"tlm.epochs": -1}, "tlm.epochs"),
    ({"architectures.resnet18.layers": ["layer5.0"]}, "architectures.resnet18.layers[0]"),
    ({"architectures.resnet18.family": "resnet1000"}, "'resnet1000' is not one of"),
    ({"datasets.cifar10": {"root": "/nowhere"}}, "/nowhere/cifar-10-batches-py"),
])
def test_bad_config_stops_before_any_job(tmp_path, change, message):
    cfg = write_config(tmp_path, ROOT / "config.yaml", **change)
    out = smk("--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


def test_lint_is_clean(tmp_path):
    out = smk("--lint", "--configfile", str(ROOT / "config.yaml"), cwd=ROOT)
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


def test_tiny_end_to_end_then_tlm_change_reruns_only_tlm_and_descendants(tmp_path):
    tiny = ROOT / "tests" / "configs" / "tiny.yaml"
    smk("--cores", "2", "--configfile", str(tiny), cwd=tmp_path)
    res = tmp_path / "results"
    t = pd.read_csv(res / "tables/digits/table1.csv")
    assert set(t.measure) == {"TLM", "DM (func.)", "DM (struct.)", "PWCCA", "OPD", "LCKA", "LCKA (debiased)",
                              "mean CCA", "SVCCA", "R²_LR"}
    intra = t[t.setting == "intra"].set_index(["measure", "arch"]).percent
    for m in ("DM (struct.)", "LCKA", "OPD", "PWCCA"):  # a layer is most similar to itself
        assert intra[m, "rn"] == 100 and intra[m, "vit"] == 100, m
    assert set(zip(t.setting, t.arch)) == {("intra", "rn"), ("inter", "rn"), ("intra", "vit"), ("inter", "vit")}
    assert t.percent.between(0, 100).all()
    md = (res / "tables/digits/table1.md").read_text()
    assert "| DM (struct.) |" in md
    # Intervals (uncertainty: 200 replicates): over networks and test images where replicates exist, networks
    # only († in the Markdown) for the indices not in uncertainty.indices; per target layer P(best).
    assert (t.low <= t.high).all() and t.low.between(0, 100).all() and t.high.between(0, 100).all()
    over = t.groupby("measure").over.first()
    assert over["LCKA"] == over["TLM"] == over["DM (func.)"] == "images, networks" and over["PWCCA"] == "networks"
    assert (t[t.measure.isin(["PWCCA", "OPD"])].low == t[t.measure.isin(["PWCCA", "OPD"])].high).all()  # 2 seeds
    assert "| PWCCA | 100.00% [100.0, 100.0]† |" in md and "## P(best)" in md
    layers = pd.read_csv(res / "tables/digits/table1_layers.csv")
    assert layers.p_best.between(0, 1).all() and len(layers) == 10 * (4 + 2) * 2
    long = pd.read_csv(res / "matrices/digits/similarity.csv")
    with np.load(res / "matrices/digits/similarity.npz") as z:
        reps = z["replicates"]
    assert reps.shape == (len(long), 200)
    has = ~np.isnan(reps).all(1)
    assert set(long.measure[has]) == {"TLM", "DM (func.)", "DM (struct.)", "LCKA", "LCKA (debiased)"}
    with np.load(res / "stitching/digits/tlm/rn-s0__rn-s1.npz") as z:  # per-image terms behind each CSV row
        tlm = pd.read_csv(res / "stitching/digits/tlm/rn-s0__rn-s1.csv")
        np.testing.assert_allclose(z["correct"].mean(1), tlm.accuracy, rtol=1e-6)
        np.testing.assert_allclose(z["err"].sum(1) / z["norm"].sum(1), tlm.struct, rtol=1e-5)
        assert z["receiver"].mean() == pytest.approx(tlm.receiver_accuracy[0], rel=1e-6)
    for fig in ["intra/rn/tlm.png", "inter/vit/dm_struct.png", "intra/rn/dm_func.png", "inter/rn/lcka.png"]:
        assert (res / "figures/digits" / fig).read_bytes()[:4] == b"\x89PNG"
    dm = pd.read_csv(res / "stitching/digits/dm/rn-s0__rn-s0.csv")
    assert len(dm) == 16  # the 4 configured layers, all pairs
    diag = dm[dm.source_layer == dm.target_layer]
    assert (diag.relative_accuracy == 1.0).all() and (diag.struct < 1e-6).all()  # DM self-stitch = identity

    ood = pd.read_csv(res / "matrices/digits/ood.csv")
    assert len(ood) == 2 * (2 * 16 + 2 * 16 + 2 * 4 + 2 * 4) and ood.auroc.between(0, 1).all()
    self_dm = ood[(ood.method == "dm") & (ood.setting == "intra") & (ood.source_layer == ood.target_layer)]
    assert (self_dm.auroc - 0.5).abs().max() < 0.05  # the DM self-stitch is the identity: in-distribution
    figs = sorted(p.name for p in (res / "figures/digits/ood").iterdir())
    assert "tlm_rn_intra.png" in figs and "dm_vit_inter.png" in figs and "energy_tlm_rn-s0_layer1.0.png" in figs
    assert all(d.stem for d in (res / "ood/digits/detectors/rn-s0").glob("*.json"))

    # Ding et al. tests: Tables 2 and 3 filled for both architectures, with the reference consistent.
    for t in (2, 3):
        table = pd.read_csv(res / f"tables/digits/table{t}.csv")
        assert set(table.measure) == {"LCKA", "PWCCA", "OPD", "DM (func.)", "DM (struct.)"}
        md = (res / f"tables/digits/table{t}.md").read_text()
        assert table.tau.dropna().between(-1, 1).all() and "nan" not in md
        assert "| digits | rn |" in md and "| digits | vit |" in md
    sens = pd.read_csv(res / "ding/digits/sensitivity/rn-s0.csv")
    assert set(sens.layer) == {"layer3.1", "layer4.1"} and sens.groupby("layer").reference.sum().eq(1).all()
    ref = sens[sens.reference]
    net_acc = pd.read_csv(res / "stitching/digits/dm/rn-s0__rn-s0.csv").receiver_accuracy.iloc[0]
    assert (ref.dm_accuracy == net_acc).all()
    assert (ref[["d_lcka", "d_opd", "d_dm_struct_stitched"]].abs() < 1e-9).all().all()
    full = sens[sens["rank"] == sens.channels]
    assert (full.probe_accuracy.to_numpy() == pd.read_csv(res / "ding/digits/probes/rn-s0.csv").set_index("layer")
            .probe_accuracy[full.layer].to_numpy()).all()  # the full-rank member is the layer itself
    spec = pd.read_csv(res / "ding/digits/specificity/rn.csv")
    assert len(spec) == 2 * 4 and spec.reference.sum() == 1

    # One HTML file holds every table and figure of the run.
    page = (res / "report.html").read_text()
    figures = list((res / "figures").rglob("*.png"))
    assert page.count("data:image/png;base64,") == len(figures) > 40 and "Table 3: specificity test" in page
    assert "P(best)" in page and "95 % interval over the networks" in page

    # Snakemake's own report: the tables and figures flagged with report(...), under their paper's category.
    smk("--report", str(tmp_path / "snakemake-report.html"), "--configfile", str(tiny), cwd=tmp_path)
    html = (tmp_path / "snakemake-report.html").read_text()
    assert "table1.csv" in html and "Paper 1" in html and "Tables 2-3" in html and "layer identification" in html

    # Nothing left to do; a TLM change reruns TLM and what depends on it, never training or extraction.
    assert "Nothing to be done" in smk("-n", "--configfile", str(tiny), cwd=tmp_path).stdout
    changed = write_config(tmp_path, tiny, **{"tlm.epochs": 2})
    counts = job_counts(smk("-n", "--configfile", str(changed), cwd=tmp_path).stdout)
    assert counts == {"tlm": 8, "similarity_table": 1, "table1": 1, "heatmaps": 1, "all": 1, "ood_scores": 8,
                      "ood_figures": 1, "report": 1}
    # Rebuilding Table 2 after a change to the probes touches only the Ding jobs (and the report).
    changed = write_config(tmp_path, tiny, **{"ding.probe.l2": 1e-3})
    counts = job_counts(smk("-n", "--configfile", str(changed), cwd=tmp_path).stdout)
    assert counts == {"probes": 4, "sensitivity": 4, "specificity": 2, "ding_tables": 1, "report": 1, "all": 1}


def test_tiny_end_to_end_recomputing_every_front_with_augmentation(tmp_path):
    cfg = ROOT / "tests" / "configs" / "tiny-recompute.yaml"
    smk("results/tables/digits/table1.md", "results/figures/digits/ood", "--cores", "2", "--configfile", str(cfg),
        cwd=tmp_path)
    res = tmp_path / "results"
    acts = res / "activations/digits/rn-s0"
    files = sorted(p.name for p in acts.iterdir() if not p.name.startswith("."))  # not the checksum sidecars
    assert files == ["test.h5", "train.h5"]  # no outlier caches: recomputed
    with h5py.File(acts / "train.h5") as f:
        assert f.attrs["fronts"] == "summary" and len(f["layers"]) == 0 and len(f["pooled/layer2.1"]) == 1400
    with h5py.File(acts / "test.h5") as f:
        assert len(f["index"]) == 300  # the cached test subset
    dm = pd.read_csv(res / "stitching/digits/dm/rn-s0__rn-s0.csv")
    diag = dm[dm.source_layer == dm.target_layer]
    assert (diag.relative_accuracy == 1.0).all() and (diag.struct < 1e-6).all()  # recomputed K fronts: identity
    tlm = pd.read_csv(res / "stitching/digits/tlm/rn-s0__rn-s0.csv")
    assert len(tlm) == 4 and tlm.accuracy.between(0, 1).all()
    assert "fronts: recompute, flip_crop" in (res / "logs/tlm/digits/rn-s0__rn-s0.log").read_text()
    ood = pd.read_csv(res / "matrices/digits/ood.csv")
    self_dm = ood[(ood.method == "dm") & (ood.source_layer == ood.target_layer)]
    assert len(ood) == 2 * 4 and (self_dm.auroc - 0.5).abs().max() < 0.05
    assert "fronts: recompute" in (res / "logs/detector/digits/rn-s0/layer4.1.log").read_text()


def _fake_data(tmp_path, raw: dict) -> dict:
    """Point a paper config at empty files with the expected layout, so it validates and dry-runs here."""
    for name, d in raw["datasets"].items():
        root = tmp_path / "data" / name
        for p in {"cifar10": ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"],
                  "svhn": ["train_32x32.mat", "test_32x32.mat"], "imagenet": ["train/n0/a.JPEG", "val/n0/a.JPEG"],
                  "celeba": ["celeba/img_align_celeba/000001.jpg",
                             *(f"celeba/{f}" for f in catalog.CELEBA_FILES)]}[name]:
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            (root / p).touch()
        d["root"] = str(root)
    if raw.get("ood", {}).get("outliers", {}).get("source") == "npy":
        raw["ood"]["outliers"]["path"] = bench_dag.fake_outliers(tmp_path / "300K.npy")
    return raw


@pytest.mark.parametrize("name,dataset,seeds", [("paper1-cifar10", "cifar10", 10), ("paper1-svhn", "svhn", 10),
                                                ("paper1-imagenet", "imagenet", 5)])
def test_paper1_configs_dry_run_with_tables_2_and_3(tmp_path, name, dataset, seeds):
    raw = _fake_data(tmp_path, yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    res = raw["results"]
    out = smk("-n", f"{res}/tables/{dataset}/table2.md", f"{res}/tables/{dataset}/table1.md",
              "--configfile", str(cfg), cwd=tmp_path)
    nets, pairs = 2 * seeds, 2 * seeds * seeds  # intra (s, s) and inter (s, t ≠ s) ordered pairs per architecture
    assert job_counts(out.stdout) == {"train": nets, "extract": nets, "dm": pairs, "tlm": pairs, "indices": 2,
                                      "similarity_table": 1, "table1": 1, "probes": nets, "sensitivity": nets,
                                      "specificity": 2, "ding_tables": 1}


@pytest.mark.parametrize("name,archs", [("paper2-cifar10", {"tiny10", "resnet20", "resnet20x2", "resnet20x3",
                                                             "resnet20x4"}), ("paper2-celeba", {"inception"})])
def test_paper2_configs_dry_run_counts(tmp_path, name, archs):
    raw = _fake_data(tmp_path, yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = smk("-n", "frankenstein", "--configfile", str(cfg), cwd=tmp_path)
    seeds = len(raw["frankenstein"]["seeds"])
    pairs = seeds * (seeds - 1)
    # Figs. 2–3: every pair of each architecture; Fig. 4: every pair of `network`; Figs. 5, 7: one job each
    assert job_counts(out.stdout) == {"train": seeds * len(archs), "extract": seeds * len(archs),
                                      "frankenstein_run": len(archs) * pairs + pairs + 2, "frankenstein_inits": 1,
                                      "frankenstein_sparsity": 1, "frankenstein_figures": 1, "frankenstein": 1}


def test_curves_on_every_pair_add_one_lowrank_and_sparsity_job_per_pair(tmp_path):
    """frankenstein.curves: every_pair runs Figs. 7 and 8 on both ordered pairs of `network` (bands over seeds)."""
    cfg = write_config(tmp_path, ROOT / "config.yaml", **{"frankenstein.curves": "every_pair"})
    counts = job_counts(smk("-n", "frankenstein", "--configfile", str(cfg), cwd=tmp_path).stdout)
    assert counts["frankenstein_run"] == 13 and counts["frankenstein_sparsity"] == 2
