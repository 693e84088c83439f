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
