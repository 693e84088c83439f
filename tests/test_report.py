import numpy as np
import pandas as pd
import pytest

from stitchlib import plotting, report


def _long(measure, values, setting="intra", source="n-s0", target="n-s0"):
    """values[i][j]: similarity of source layer i to target layer j."""
    rows = []
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            rows.append({"measure": measure, "setting": setting, "source": source, "target": target,
                         "source_arch": "n", "target_arch": "n", "source_layer": f"L{i}",
                         "target_layer": f"L{j}", "source_index": i, "target_index": j, "value": v})
    return pd.DataFrame(rows)


def test_identification_counts_ties_fractionally_or_strictly():
    # target L0: L0 unique best; L1: tie between L0 and L1; L2: L0 best (wrong)
    acc = _long("TLM", [[1.0, 0.9, 0.9], [0.5, 0.9, 0.2], [0.1, 0.1, 0.3]])
    frac = report.identification(acc, "fractional").iloc[0]
    assert frac.identified == pytest.approx(1.5) and frac.targets == 3 and frac.percent == pytest.approx(50)
    assert report.identification(acc, "strict").iloc[0].identified == 1


def test_distances_pick_the_smallest():
    d = _long("DM (struct.)", [[0.0, 0.5], [0.4, 0.1]])
    assert report.identification(d).iloc[0].percent == 100
    assert report.identification(_long("DM (func.)", [[0.0, 0.5], [0.4, 0.1]])).iloc[0].percent == 0


def test_table1_markdown_layout():
    long = pd.concat([_long("TLM", [[1, 0], [0, 1]]), _long("DM (struct.)", [[0, 1], [1, 0]], setting="inter",
                                                          source="n-s0", target="n-s1")])
    md = report.table1_markdown(report.identification(long))
    assert md.splitlines()[0] == "| measure | intra n | inter n |"
    assert "| TLM | 100.00% | – |" in md and "| DM (struct.) | – | 100.00% |" in md


def test_heatmap_writes_png(tmp_path):
    m = report.mean_matrix(_long("TLM", np.eye(3)), "TLM", "n", "intra")
    assert list(m.index) == ["L0", "L1", "L2"]
    plotting.heatmap(m, tmp_path / "h.png", "t")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


U = {"replicates": 400, "seed": 0, "level": 0.95, "method": "bc", "enabled": True}


def test_table1_intervals_resample_networks_and_images():
    """Inter pairs (a, b) identify every layer, (b, a) none: with no image noise the only valid network draws
    hold both pairs (a draw of one network has no inter pair), so the interval is the point. Image replicates
    that swap the best layer in a share of resamples give that share as P(best) and widen the interval."""
    ab = _long("LCKA", [[0.9, 0.1], [0.1, 0.9]], "inter", "n-s0", "n-s1")
    ba = _long("LCKA", [[0.1, 0.9], [0.9, 0.1]], "inter", "n-s1", "n-s0")
    long = pd.concat([ab, ba], ignore_index=True)
    flat = np.repeat(long.value.to_numpy()[:, None], U["replicates"], 1)
    t, layers = report.identification_intervals(long, flat, "fractional", U)
    row = t.iloc[0]
    assert row.percent == 50 and (row.low, row.high) == (50, 50) and row.over == "images, networks"
    assert 150 < row.replicates < 250  # about half the draws hold both networks
    assert (layers.p_best == 0.5).all() and set(layers.target_layer) == {"L0", "L1"}
    noisy = flat.copy()
    noisy[0, :100] = 0.05  # pair (a, b), target L0: source L1 is the best in the first quarter of resamples
    t, layers = report.identification_intervals(long, noisy, "fractional", U)
    assert layers.set_index("target_layer").p_best["L0"] == pytest.approx((0.75 + 0) / 2)
    assert t.iloc[0].low < 50 == t.iloc[0].percent
    t_boot, _ = report.identification_intervals(long, noisy, "bootstrap", U)
    assert t_boot.iloc[0].percent == pytest.approx(100 * (0.75 + 1 + 0 + 0) / 4) and t_boot.iloc[0].over == "networks"
    # no image replicates (NaN rows): intervals over the networks only, and the point rule is unchanged
    t_net, _ = report.identification_intervals(long, np.full_like(flat, np.nan), "strict", U)
    assert t_net.iloc[0].over == "networks"
    assert t_net.iloc[0].percent == report.identification(long, "strict").percent[0]


def test_heatmap_marks_cells_that_overlap_the_best(tmp_path):
    long = _long("TLM", [[0.90, 0.2], [0.89, 0.8], [0.1, 0.81]])
    reps = np.repeat(long.value.to_numpy()[:, None], 200, 1) + np.random.default_rng(0).normal(0, 0.02, (6, 200))
    m, lo, hi = report.matrix_intervals(long, reps, "TLM", "n", "intra", U)
    marks = report.overlaps_best(m, lo, hi, True)
    np.testing.assert_array_equal(marks, [[True, False], [True, True], [False, True]])
    plotting.heatmap(m, tmp_path / "h.png", "t", marks=marks)
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
