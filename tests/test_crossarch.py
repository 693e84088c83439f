"""Cross-architecture stitching (paper 3 / paper 1's conv ↔ ViT): stitch types, DM exactness, proportional
depth, config checks, and a tiny end-to-end run of the study's rules."""

import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stitchlib import config as sconf
from stitchlib import crossarch, models
from stitchlib import stitching as st

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"r1111": [1, 1, 1, 1], "r2121": [2, 1, 2, 1]}


def _net(blocks, seed=0, width=4):
    torch.manual_seed(seed)
    return models.build("resnet", num_classes=10, image_size=16, width=width, stage_blocks=blocks).eval()


def _spec(blocks):
    return {"family": "resnet", "params": {"width": 4, "stage_blocks": blocks},
            "layers": models.build("resnet", num_classes=10, image_size=16, width=1, stage_blocks=blocks).layer_names}


@pytest.mark.parametrize("conv_stitch", st.CONV_STITCHES)
def test_every_sender_output_to_every_receiver_input_has_the_target_shape(conv_stitch):
    """Both ways between two small ResNets of different depth, every stitch point pair: the stitch maps the
    sender's activation to the receiver's shape, and DM's rows pair up one to one."""
    x = torch.rand(3, 3, 16, 16)
    nets = {name: _net(b) for name, b in SMALL.items()}
    kinds = set()
    with torch.no_grad():
        for a in nets.values():
            for b in nets.values():
                for i in range(1, len(a.layer_names)):          # block outputs
                    for j in range(len(b.layer_names) - 1):     # block inputs (stem included)
                        h, t = a.front(x, i), b.front(x, j)
                        s = st.make_stitch(h.shape[1:], t.shape[1:], "conv", "conv", conv_stitch)
                        kinds.add(type(s).__name__)
                        assert s(h).shape == t.shape
                        assert st.rows(s.prepare(h), s.layout).shape == (len(st.rows(t, "conv")), s.weight.shape[1])
                        assert b.back(s(h), j).shape == (3, 10)
    expected = {"AffineStitch", "StrideStitch", "UpsampleStitch"} if conv_stitch == "paper3" else {"AffineStitch"}
    assert kinds == expected


def test_paper3_stitch_kernels_are_strided_conv_and_nearest_upsampling(rng):
    h = torch.as_tensor(rng.normal(size=(2, 3, 8, 8)), dtype=torch.float64)
    down = st.make_stitch((3, 8, 8), (5, 2, 2), "conv", "conv", "paper3").double()
    down.set_affine(rng.normal(size=(5, 3 * 16)), rng.normal(size=5))
    assert isinstance(down, st.StrideStitch) and down.k == 4
    by_rows = st.rows(down.prepare(h), "conv") @ down.weight.T + down.bias  # the map DM fits
    torch.testing.assert_close(st.rows(down(h), "conv"), by_rows, rtol=1e-12, atol=1e-12)
    up = st.make_stitch((3, 8, 8), (5, 16, 16), "conv", "conv", "paper3").double()
    up.set_affine(rng.normal(size=(5, 3)), rng.normal(size=5))
    expected = torch.nn.functional.conv2d(h.repeat_interleave(2, 2).repeat_interleave(2, 3),
                                          up.weight[:, :, None, None],
                                          up.bias)
    torch.testing.assert_close(up(h), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="not k×"):
        st.make_stitch((3, 8, 8), (5, 3, 3), "conv", "conv", "paper3")


def test_identity_upsample_then_stride_stitch_reproduces_the_network():
    """Where shapes allow an identity: nearest ×2 (identity 1×1) then a 2×2 stride-2 conv averaging each patch
    (identity over channels) gives back the map, so the stitched network is the network, at every cut point."""
    net, x = _net([2, 1, 2, 1]), torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        y = net(x)
        for i, name in enumerate(net.layer_names):
            h = net.front(x, i)
            c, (hh, ww) = h.shape[1], h.shape[2:]
            up = st.make_stitch((c, hh, ww), (c, 2 * hh, 2 * ww), "conv", "conv", "paper3")
            down = st.make_stitch((c, 2 * hh, 2 * ww), (c, hh, ww), "conv", "conv", "paper3")
            up.set_affine(torch.eye(c), torch.zeros(c))
            down.set_affine(torch.kron(torch.eye(c), torch.full((1, 4), 0.25)), torch.zeros(c))
            torch.testing.assert_close(net.back(down(up(h)), i), y, rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("src,tgt,layouts", [
    ((3, 8, 8), (4, 2, 2), ("conv", "conv")),      # 4×4 stride-4 conv
    ((3, 2, 2), (4, 8, 8), ("conv", "conv")),      # nearest ×4 + 1×1
    ((3, 8, 8), (17, 4), ("conv", "tokens")),      # conv → ViT tokens
    ((17, 3), (4, 8, 8), ("tokens", "conv")),      # ViT tokens → conv
])
def test_dm_recovers_a_planted_stitch_of_every_type(rng, src, tgt, layouts):
    planted = st.make_stitch(src, tgt, *layouts, "paper3").double()
    w, b = rng.normal(size=tuple(planted.weight.shape)), rng.normal(size=len(planted.bias))
    planted.set_affine(w, b)
    x = torch.as_tensor(rng.normal(size=(60, *src)))
    with torch.no_grad():
        y = planted(x)
    fitted = st.fit_dm(st.make_stitch(src, tgt, *layouts, "paper3"), [x[:25], x[25:]], [y[:25], y[25:]])
    np.testing.assert_allclose(fitted.weight.detach().numpy(), w, atol=1e-3)
    np.testing.assert_allclose(fitted.bias.detach().numpy(), b, atol=1e-3)


def test_conv_vit_stitches_in_both_directions_at_every_layer_pair():
    torch.manual_seed(0)
    rn = models.build("resnet18", num_classes=10, image_size=16, width=4).eval()
    vit = models.build("vit", num_classes=10, image_size=16, patch_size=4, depth=3, heads=2, hidden_dim=8,
                       mlp_dim=16).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        for a, b, kind in [(rn, vit, st.ConvToTokens), (vit, rn, st.TokensToConv)]:
            for i in range(len(a.layer_names)):
                for j in range(len(b.layer_names)):
                    h, t = a.front(x, i), b.front(x, j)
                    s = st.make_stitch(h.shape[1:], t.shape[1:], a.layout, b.layout)
                    assert isinstance(s, kind) and s(h).shape == t.shape and b.back(s(h), j).shape == (2, 10)
        h = rn.front(x, "layer1.0")
        s = st.make_stitch(h.shape[1:], (17, 8), "conv", "tokens")
        s.set_affine(torch.randn(8, 4), torch.randn(8))
        out = s(h)
        torch.testing.assert_close(out[:, 0], out[:, 1:].mean(1))  # CLS = mean of the patch tokens (pool)


def test_proportional_depth_bucketing_by_hand():
    """R1111 (4 blocks) → R2222 (8 blocks). Sender outputs at 1/4, 2/4, 3/4, 1; receiver inputs at 0, 1/8, …, 7/8.
    Equal: 1/4 = 2/8, 2/4 = 4/8, 3/4 = 6/8. Later: 2 + 4 + 6 + 8 = 20 receivers below each sender. Earlier: 9."""
    s, r = crossarch.senders(_spec([1, 1, 1, 1])), crossarch.receivers(_spec([2, 2, 2, 2]))
    assert s["layers"] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert r["layers"] == ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0"]
    assert [crossarch.depth(s, x) for x in s["layers"]] == [Fraction(k, 4) for k in (1, 2, 3, 4)]
    assert [crossarch.depth(r, x) for x in r["layers"]] == [Fraction(k, 8) for k in range(8)]
    rel = [crossarch.relation(crossarch.depth(s, a), crossarch.depth(r, b)) for a in s["layers"] for b in r["layers"]]
    assert (rel.count("later"), rel.count("earlier"), rel.count("equal")) == (20, 9, 3)
    assert [(a, b) for a in s["layers"] for b in r["layers"]
            if crossarch.relation(crossarch.depth(s, a), crossarch.depth(r, b)) == "equal"] == \
        [("layer1.0", "layer1.1"), ("layer2.0", "layer2.1"), ("layer3.0", "layer3.1")]
    assert crossarch.receiver_block(r, "stem") == "layer1.0"
    # a network with itself: equal exactly where the receiver resumes at the sender's cut (same stitch point)
    same = _spec([2, 1, 2, 1])
    for a in crossarch.senders(same)["layers"]:
        for b in crossarch.receivers(same)["layers"]:
            assert (crossarch.relation(crossarch.depth(same, a), crossarch.depth(same, b)) == "equal") == (a == b)


def test_summary_and_depth_matrix_on_a_hand_made_table():
    df = pd.DataFrame({"grid": "resnets", "condition": "trained", "method": "tlm", "source": ["a", "a", "a", "b"],
                       "target": "b", "relation": ["later", "later", "earlier", "equal"],
                       "accuracy": [0.9, 0.7, 0.2, 1.0], "source_depth": [1.0, 0.5, 0.25, 0.5],
                       "target_depth": [0.0, 0.25, 0.5, 0.5]})
    row = crossarch.summary(df).iloc[0]
    assert (row.later, row.earlier, row.equal) == (pytest.approx(0.8), 0.2, 1.0)
    assert (row.n_later, row.n_earlier, row.n_equal, row.network_pairs) == (2, 1, 1, 2)
    m = crossarch.depth_matrix(df, bins=2).to_numpy()
    # rows: sender depth bins [0, ½), [½, 1] (depth 1 in the last bin); columns: receiver depth bins
    np.testing.assert_allclose(m, [[np.nan, 0.2], [0.8, 1.0]])


def _cross_cfg(**cross):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["cross"].update(cross)
    return cfg


@pytest.mark.parametrize("cross,message", [
    ({"architectures": ["r1111", "nope"]}, "cross.architectures[1]: 'nope' is not under architectures"),
    ({"architectures": ["resnet18"]}, "cross.architectures[0]: 'resnet18' has family 'resnet18'"),
    ({"conv_vit": ["resnet18", "r1111"]}, "cross.conv_vit: name one conv network and one vit"),
    ({"conv_vit": ["resnet18", "vit2"]}, "cross.conv_vit[1]"),
    ({"controls": ["random_middle"]}, "cross.controls[0]"),
    ({"stitch": "lanczos"}, "cross.stitch"),
    ({"tlm": {"preset": "paper9"}}, "cross.tlm.preset"),
    ({"dm": {"samples": 5000}}, "cross.dm.samples"),
])
def test_bad_cross_config_names_the_key(cross, message):
    with pytest.raises(sconf.ConfigError) as e:
        sconf.validate(_cross_cfg(**cross))
    assert message in str(e.value), str(e.value)


def test_cross_settings_and_grid_of_the_default():
    cfg = sconf.validate(_cross_cfg())
    tlm = sconf.cross_tlm_settings(cfg)
    assert {k: tlm[k] for k in sconf.TLM_PRESETS["paper3"]} == sconf.TLM_PRESETS["paper3"]
    assert tlm["labels"] == "hard"  # the rest from the top-level tlm settings
    assert sconf.cross_tlm_settings(sconf.validate(_cross_cfg(tlm={"preset": "paper3", "epochs": 2})))["epochs"] == 2
    assert sconf.cross_tlm_settings(sconf.validate(_cross_cfg(tlm={"preset": "none"}))) == cfg["tlm"]
    jobs = sconf.cross_pairs(cfg)
    assert len(jobs) == 3 * 9 + 2 and jobs[-1] == ("conv_vit", "trained", "vit-s0", "resnet18-s0")
    assert sconf.networks(cfg) == [f"{a}-s{s}" for a in ("resnet18", "vit") for s in (0, 1, 2)]


def _fake_cifar(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    for f in ("data_batch_1", "test_batch"):
        (tmp_path / "cifar-10-batches-py" / f).touch()


def _smk(*args, cwd):
    out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *args], cwd=cwd,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = (out.stdout + out.stderr).split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


@pytest.mark.workflow
def test_paper3_config_dry_run_has_the_full_grid(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "paper3-cifar10.yaml").read_text())
    raw["datasets"]["cifar10"]["root"] = str(tmp_path)
    _fake_cifar(tmp_path)
    cfg = sconf.validate(raw)
    assert len(cfg["cross"]["architectures"]) == 16
    assert {cfg["architectures"][a]["params"]["width"] for a in cfg["cross"]["architectures"]} == {64}
    path = tmp_path / "paper3.yaml"
    path.write_text(yaml.safe_dump(raw))
    counts = _smk("-n", "cross", "--configfile", str(path), cwd=tmp_path)
    # 16 networks trained and extracted, their 16 initialisations, 16 × 16 = 256 ordered pairs trained and under
    # each of the 2 controls
    assert counts == {"train": 16, "extract": 16, "cross_init": 16, "cross_pair": 3 * 256, "cross_report": 1,
                      "cross": 1}


@pytest.mark.workflow
def test_tiny_cross_study_end_to_end(tmp_path):
    counts = _smk("--cores", "2", "cross", "--configfile", str(ROOT / "tests" / "configs" / "tiny_cross.yaml"),
                  cwd=tmp_path)
    assert counts["cross_pair"] == 2 * 4 + 2 and counts["cross_init"] == 2
    res = tmp_path / "results"
    t = pd.read_csv(res / "tables/digits/cross/summary.csv")
    assert set(zip(t.grid, t.condition, t.method)) == {(g, c, m) for m in ("dm", "tlm") for g, c in
                                                       [("resnets", "trained"), ("resnets", "random_sender"),
                                                        ("conv_vit", "trained")]}
    # r111 (3 blocks) and r1111 (4): 3·3 + 3·4 + 4·3 + 4·4 = 49 stitches per condition and method
    assert (t.n_later + t.n_earlier + t.n_equal)[t.grid == "resnets"].eq(49).all()
    rows = pd.read_csv(res / "matrices/digits/cross/stitches.csv")
    # conv ↔ ViT: rn's 4 configured points are all block outputs, 3 of them block inputs; the 2-block ViT's
    # outputs block0, block1, inputs block0: rn → vit 4 · 1, vit → rn 2 · 3
    conv_vit = rows[rows.grid == "conv_vit"].groupby(["method", "source_arch"]).size()
    assert conv_vit.to_dict() == {(m, a): n for m in ("dm", "tlm") for a, n in (("rn", 4), ("vit", 6))}
    assert rows.accuracy.between(0, 1).all() and len(rows) == 2 * (2 * 49 + 10)
    self_dm = rows[(rows.method == "dm") & (rows.condition == "trained") & (rows.source == rows.target)
                   & (rows.relation == "equal") & (rows.grid == "resnets")]
    assert len(self_dm) == 2 + 3 and (self_dm.accuracy == self_dm.receiver_accuracy).all()  # DM self-stitch = identity
    for f in ["triangle_tlm.png", "triangle_dm.png", "pairs_resnets_trained_tlm.png",
              "pairs_resnets_random_sender_dm.png", "pairs_conv_vit_trained_tlm.png"]:
        assert (res / "figures/digits/cross" / f).read_bytes()[:4] == b"\x89PNG"
    assert "| resnets | trained | tlm |" in (res / "tables/digits/cross/summary.md").read_text()
