"""Energy-based OOD detectors on real activations of a small ResNet-18 trained on the digits (conftest)."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from stitchlib import models, ood, stitching, train

torch.set_num_threads(1)

LAYER = "layer2.1"  # (16, 8, 8) at width 8, 16 px: upsampled to the detector's 16×16 input
N_TRAIN = 600
CFG = {"pretrain": {"epochs": 2, "batch_size": 64}, "finetune": {"epochs": 2, "batch_size": 128}}


@pytest.fixture(scope="module")
def acts(trained_resnet, digits16):
    """In-distribution layer activations (train subset, test split), outlier activations (china, flower)."""
    (xtr, ytr), (xte, yte) = digits16[0].tensors, digits16[1].tensors
    sub = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))[:N_TRAIN]
    with torch.no_grad():
        front = lambda x: trained_resnet.front(x, LAYER)  # noqa: E731
        return {"train": front(xtr[sub]), "train_labels": ytr[sub], "test": front(xte), "test_labels": yte,
                "china": front(ood.outlier_images(N_TRAIN, 16, "china", seed=0)),
                "flower": front(ood.outlier_images(300, 16, "flower", seed=1))}


@pytest.fixture(scope="module")
def detector(acts):
    torch.manual_seed(0)
    det = ood.build_detector("conv", acts["train"].shape[1:], 10, width=8, input_size=16)
    metrics = ood.train_detector(det, acts["train"], acts["train_labels"], acts["china"], CFG, seed=0,
                                 device=torch.device("cpu"), progress=lambda s: None)
    return det, metrics


# ----------------------------------------------------------------------------- metrics

def test_metrics_match_sklearn_and_hand_values():
    e_in, e_out = np.array([-3.0, -2.0, -1.0, 0.0]), np.array([-1.5, 1.0, 2.0])
    m = ood.ood_metrics(e_in, e_out)
    # score −E, ID positive: 10 of 12 (in, out) pairs ordered correctly; 4 ID positives at ranks 1, 2, 4, 5;
    # TPR 100 % (the first level ≥ 95 %) needs threshold 0, above which 1 of 3 outliers lies.
    assert m["auroc"] == pytest.approx(10 / 12)
    assert m["aupr"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 5) / 4)
    assert m["fpr95"] == pytest.approx(1 / 3)
    y, s = np.r_[np.ones(4), np.zeros(3)], -np.r_[e_in, e_out]
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["aupr"] == pytest.approx(average_precision_score(y, s))
    assert ood.ood_metrics([-9.0, -8.0], [1.0, 2.0]) == pytest.approx(
        {"auroc": 1.0, "aupr": 1.0, "fpr95": 0.0, "energy_in_mean": -8.5, "energy_other_mean": 1.5})
    # ranking in, out, in, in, out, in, out: TPR 3/4 first at FPR 1/3, TPR 1 first at FPR 2/3
    e_in, e_out = [-5.0, -3.0, -2.0, 0.0], [-4.0, -1.0, 1.0]
    assert ood.ood_metrics(e_in, e_out)["fpr95"] == pytest.approx(2 / 3)
    assert ood.ood_metrics(e_in, e_out, tpr_level=0.75)["fpr95"] == pytest.approx(1 / 3)
    assert ood.ood_metrics([1.0, 2.0], [-9.0, -8.0])["auroc"] == 0.0  # other set looks *more* in-distribution
    same = np.random.default_rng(0).normal(size=2000)
    assert ood.ood_metrics(same[:1000], same[1000:])["auroc"] == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="non-finite"):
        ood.ood_metrics([0.0, np.nan], [1.0])


def test_oe_loss_by_hand():
    k = 10
    logits_in, logits_out = torch.zeros(2, k), torch.full((3, k), 10.0)
    e_in, e_out = -math.log(k), -(10 + math.log(k))  # −logsumexp
    expected = math.log(k) + 0.1 * ((e_in + 25) ** 2 + (-7 - e_out) ** 2)
    got = ood.oe_loss(logits_in, torch.tensor([0, 3]), logits_out, m_in=-25, m_out=-7, weight=0.1)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # margins already met: only the cross-entropy remains
    assert ood.oe_loss(logits_out, torch.tensor([1, 2, 3]), logits_in, -5, -3, 0.1).item() == \
        pytest.approx(math.log(k), rel=1e-5)


# ----------------------------------------------------------------------------- detectors

def test_conv_detector_takes_layer_channels_and_upsamples(acts):
    shape = acts["train"].shape[1:]
    det = ood.build_detector("conv", shape, 10, width=4, input_size=16, stage_blocks=[1, 1])
    assert det.net.stem[0].in_channels == shape[0]
    seen = []
    det.net.stem.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    assert det(acts["train"][:5]).shape == (5, 10)
    assert seen == [(5, shape[0], 16, 16)]
    with pytest.raises(ValueError, match="unknown layout"):
        ood.build_detector("graph", shape, 10)
    with pytest.raises(ValueError, match="per-sample shape"):
        ood.build_detector("tokens", shape, 10)
    with pytest.raises(ValueError, match="heads"):
        ood.build_detector("conv", shape, 10, heads=3)


def test_trained_detector_energies_finite(detector, acts):
    det, metrics = detector
    e = ood.energy(det, acts["test"], batch_size=100)
    assert e.shape == (len(acts["test"]),) and np.isfinite(e).all()
    assert metrics["train_accuracy"] > 0.6
    assert len(metrics["pretrain_loss"]) == len(metrics["finetune_loss"]) == 2
    assert metrics["pretrain_loss"][1] < metrics["pretrain_loss"][0]
    # outlier exposure separates training outliers from ID in energy
    assert ood.energy(det, acts["china"][:200]).mean() > e.mean() + 2


def test_detector_flags_planted_channel_permutation(detector, acts):
    det, _ = detector
    perm = torch.randperm(acts["test"].shape[1], generator=torch.Generator().manual_seed(1))
    m = ood.ood_scores(det, acts["test"], acts["test"][:, perm])
    assert m["auroc"] > 0.9, m


def test_dm_self_stitch_stays_in_distribution(detector, acts):
    det, _ = detector
    st = stitching.AffineStitch.between(acts["train"].shape[1:], acts["train"].shape[1:], "conv")
    stitching.fit_dm(st, [acts["train"]], [acts["train"]])
    with torch.no_grad():
        stitched = st(acts["test"])
    m = ood.ood_scores(det, acts["test"], stitched)
    assert abs(m["auroc"] - 0.5) < 0.05, m


def test_held_out_flower_outliers_are_detected(detector, acts):
    det, _ = detector
    m = ood.ood_scores(det, acts["test"], acts["flower"])
    assert m["auroc"] > 0.8, m
    assert m["fpr95"] < 0.5, m


def test_finetune_lr_steps_per_epoch(monkeypatch, acts):
    """Every optimiser step of an epoch sees lr · lr_factor(cfg, epoch): cosine stepped per epoch, not per batch."""
    seen: list[float] = []
    step = torch.optim.Adam.step

    def recording_step(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    n, cfg = 96, {"pretrain": {"epochs": 1, "batch_size": 32, "lr": 5e-4},
                  "finetune": {"epochs": 3, "batch_size": 32, "lr": 2e-3, "schedule": "cosine"}}
    det = ood.build_detector("conv", acts["train"].shape[1:], 10, width=4, input_size=8, stage_blocks=[1])
    metrics = ood.train_detector(det, acts["train"][:n], acts["train_labels"][:n], acts["china"][:40], cfg,
                                 seed=0, device="cpu", progress=lambda s: None)
    pre_steps, fin_steps = n // 32, n // 16  # fine-tuning batches hold 16 ID + 16 outliers
    assert seen[:pre_steps] == [5e-4] * pre_steps
    fin = np.array(seen[pre_steps:]).reshape(3, fin_steps)
    expected = [2e-3 * train.lr_factor(cfg["finetune"], e) for e in range(3)]
    assert np.allclose(fin, np.array(expected)[:, None])
    assert expected[0] > expected[1] > expected[2] > 0
    assert metrics["finetune_lr"] == pytest.approx(expected)


def test_vit_detector_trains_on_tokens(digits16):
    torch.manual_seed(0)
    vit = models.ViT(10, 16, patch_size=4, depth=2, heads=2, hidden_dim=32, mlp_dim=64).eval()
    x, y = digits16[0].tensors
    with torch.no_grad():
        tokens, out_tokens = vit.front(x[:256], 1), vit.front(ood.outlier_images(128, 16, "china", 0), 1)
    assert tokens.shape == (256, 17, 32)
    det = ood.build_detector("tokens", tokens.shape[1:], 10, hidden_dim=24, depth=1, heads=2, mlp_dim=48)
    assert isinstance(det.proj, torch.nn.Linear) and det.proj.in_features == 32
    seen = {}
    det.encoder.register_forward_hook(lambda m, i, o: seen.update(enc=o))
    det.head.register_forward_hook(lambda m, i, o: seen.update(head=i[0]))
    det(tokens[:3])
    assert torch.equal(seen["head"], seen["enc"][:, 0])  # classification on token 0
    metrics = ood.train_detector(det, tokens, y[:256], out_tokens,
                                 {"pretrain": {"epochs": 3, "batch_size": 32}, "finetune": {"epochs": 1}},
                                 seed=0, device="cpu", progress=lambda s: None)
    assert metrics["pretrain_loss"][-1] < metrics["pretrain_loss"][0] - 0.1
    assert np.isfinite(ood.energy(det, tokens)).all()
    assert ood.build_detector("tokens", (17, 24), 10, hidden_dim=24, depth=1, heads=2, mlp_dim=48).proj \
        .__class__ is torch.nn.Identity


@pytest.mark.parametrize("layout,shape,size", [("conv", (16, 8, 8), {"width": 4, "input_size": 8}),
                                               ("tokens", (5, 12), {"hidden_dim": 8, "depth": 1, "heads": 2,
                                                                    "mlp_dim": 16})])
def test_save_and_load_roundtrip(tmp_path, layout, shape, size):
    torch.manual_seed(0)
    det = ood.build_detector(layout, shape, 7, **size).eval()
    spec = json.loads(json.dumps(ood.detector_spec(det)))
    torch.save(ood.detector_state(det), tmp_path / "det.pt")
    back = ood.load_detector(spec, torch.load(tmp_path / "det.pt", weights_only=True))
    h = torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.equal(back(h), det(h))
    assert not back.training and spec["layout"] == layout and spec["num_classes"] == 7


# ----------------------------------------------------------------------------- outliers

def test_outlier_images_are_seeded_photo_crops():
    a = ood.outlier_images(20, 16, "china", seed=0)
    assert a.shape == (20, 3, 16, 16) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1 and a.std() > 0.05
    assert torch.equal(a, ood.outlier_images(20, 16, "china", seed=0))
    assert not torch.equal(a, ood.outlier_images(20, 16, "china", seed=1))
    b = ood.outlier_images(200, 16, "flower", seed=0)
    c = ood.outlier_images(200, 16, "china", seed=0)
    assert (b.mean((0, 2, 3)) - c.mean((0, 2, 3))).abs().max() > 0.05  # two different photographs
    with pytest.raises(ValueError, match="outlier source"):
        ood.outlier_images(2, 16, "digits")


def test_outlier_images_npy(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "rand.npy", arr)
    x = ood.outlier_images_npy(tmp_path / "rand.npy", 10, 32, seed=0)
    assert x.shape == (10, 3, 32, 32)
    pool = torch.as_tensor(arr).permute(0, 3, 1, 2).float() / 255
    assert all((pool == xi).all((1, 2, 3)).any() for xi in x)  # exact source images, no duplicates below
    assert len({tuple(xi.flatten()[:8].tolist()) for xi in x}) == 10
    assert ood.outlier_images_npy(tmp_path / "rand.npy", 4, 16).shape == (4, 3, 16, 16)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        ood.outlier_images_npy(tmp_path / "missing.npy", 4, 32)
