"""The single-file HTML report: every table and figure embedded, checked in a headless browser."""

import re
import shutil
import subprocess

import pytest

from stitchlib import html_report, plotting

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _outputs(tmp_path):
    import pandas as pd

    res = tmp_path / "results"
    (res / "tables/digits").mkdir(parents=True)
    (res / "tables/digits/table1.md").write_text("## Table 1\n\n| measure | intra |\n|---|---|\n| LCKA | 100.00% |\n")
    (res / "tables/digits/table1.csv").write_text("measure,intra\nLCKA,100\n")
    m = pd.DataFrame([[1.0, 0.5], [0.4, 0.9]], index=["L0", "L1"], columns=["L0", "L1"])
    plotting.heatmap(m, res / "figures/digits/intra/rn/lcka.png", "LCKA")
    plotting.heatmap(m, res / "figures/digits/ood/a.png", "A")
    plotting.heatmap(m, res / "figures/digits/ood/b.png", "B")
    return res, [res / "tables/digits/table1.md", res / "tables/digits/table1.csv",
                 res / "figures/digits/intra/rn/lcka.png", res / "figures/digits/ood"]


def test_report_embeds_tables_figures_and_config(tmp_path):
    res, outputs = _outputs(tmp_path)
    out = tmp_path / "report.html"
    html_report.write(out, outputs, {"seeds": [0, 1], "tlm": {"epochs": 3}}, res)
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 3 and "<td>LCKA</td>" in text
    assert "Tables (digits)" in text and "Figures (digits): intra" in text and "epochs: 3" in text


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it where apt works)")
def test_report_figures_load_in_a_headless_browser(tmp_path):
    res, outputs = _outputs(tmp_path)
    out = tmp_path / "report.html"
    html_report.write(out, outputs, {"seeds": [0]}, res)
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images-total="(\d+)"', dom)
    assert loaded and total, dom[:500]
    assert int(total.group(1)) == 3 and int(loaded.group(1)) == 3
