"""Multi-label tasks (stitchlib.tasks), the embedded digits_attributes data, CelebA from a local root and
paper 2's Inception V1 (googlenet family) on the multi-label path."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from stitchlib import catalog, data, models, tasks, train
from stitchlib import config as sconf

MC, ML = tasks.get("multiclass"), tasks.get("multilabel")


# ----------------------------------------------------------------------------- scoring

def test_multiclass_is_cross_entropy_and_top1():
    torch.manual_seed(0)
    logits, y = torch.randn(7, 5), torch.randint(0, 5, (7,))
    torch.testing.assert_close(MC.loss(logits, y), F.cross_entropy(logits, y))
    torch.testing.assert_close(MC.loss(logits, y, reduction="none"), F.cross_entropy(logits, y, reduction="none"))
    assert MC.correct(logits, y) == (logits.argmax(1) == y).sum().item()
    assert MC.accuracy(logits.numpy(), y.numpy()) == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_multilabel_is_bce_and_mean_attribute_accuracy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, -0.1]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(ML.loss(logits, y), F.binary_cross_entropy_with_logits(logits, y))
    per = ML.loss(logits, y, reduction="none")
    assert per.shape == (2,)
    torch.testing.assert_close(per, F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1))
    # sample 0: 2 of 3 attributes right (0.5 > 0 predicts on); sample 1: 2 of 3 (1.0 > 0 predicts on)
    assert ML.correct(logits, y) == pytest.approx(4 / 3)
    assert ML.accuracy(logits, y.long()) == pytest.approx(2 / 3)  # int {0, 1} targets (an HDF5 cache) work too
    assert ML.loss(logits, y.long()).item() == pytest.approx(ML.loss(logits, y).item())


@pytest.mark.parametrize("task,targets", [(MC, torch.tensor([1, 0, 3])),
                                          (ML, torch.tensor([[1.0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 0]]))])
def test_stacked_stitches_score_like_separate_batches(task, targets):
    """train_tlm pushes K stitches' outputs through g>j at once: (K, N, C) logits against targets expanded to
    (K, N[, A]) give each stitch its own per-sample losses."""
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4)
    stacked = task.loss(logits, targets.expand(2, *targets.shape), reduction="none")
    assert stacked.shape == (2, 3)
    for k in range(2):
        torch.testing.assert_close(stacked[k], task.loss(logits[k], targets, reduction="none"))
    assert task.correct(logits, targets.expand(2, *targets.shape)) == \
        pytest.approx(task.correct(logits[0], targets) + task.correct(logits[1], targets))
    teacher = torch.randn(3, 4)
    assert task.soft_loss(teacher, teacher).abs().item() < 1e-6  # matching the teacher costs nothing
    soft = task.soft_loss(logits, teacher, 2.0, reduction="none")
    assert soft.shape == (2, 3) and (soft >= -1e-6).all()
    # cross-entropy to the reference's distribution = its entropy + KL: smallest at the reference itself
    xent = task.soft_cross_entropy(logits, teacher, reduction="none")
    assert xent.shape == (2, 3) and (xent >= task.soft_cross_entropy(teacher, teacher, reduction="none") - 1e-6).all()
    torch.testing.assert_close(xent - task.soft_cross_entropy(teacher, teacher, reduction="none"),
                               task.soft_loss(logits, teacher, reduction="none"))


def test_targets_of_the_wrong_shape_are_clear_errors():
    with pytest.raises(ValueError, match=r"multilabel targets \(attribute vectors\) must have shape \(2, 3\)"):
        ML.loss(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"multiclass targets \(class indices\) must have shape \(2,\)"):
        MC.correct(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        tasks.get("regression")


def test_datasets_name_their_task():
    assert tasks.for_dataset("digits") is MC and tasks.for_dataset("cifar10") is MC
    assert tasks.for_dataset("celeba") is ML and tasks.for_dataset("digits_attributes") is ML
    assert catalog.dataset("celeba").num_classes == 40
    assert tasks.of(TensorDataset(torch.zeros(1))) is MC  # a dataset built by hand: multiclass


# ----------------------------------------------------------------------------- digits_attributes

def test_digits_attributes_are_the_digits_attributes():
    digits = data.load("digits", "test")
    ds = data.load("digits_attributes", "test")
    assert ds.task == "multilabel" and digits.task == "multiclass"
    x, a = ds.tensors
    torch.testing.assert_close(x, digits.tensors[0])  # the same images and split
    assert a.dtype == torch.float32 and a.shape == (len(x), 4)
    table = {d: [d % 2 == 0, d >= 5, d in (2, 3, 5, 7), d in (0, 6, 8, 9)] for d in range(10)}
    want = torch.tensor([table[int(d)] for d in digits.tensors[1]], dtype=torch.float32)
    assert torch.equal(a, want)
    assert tuple(data.DIGIT_ATTRIBUTES) == catalog.DIGITS_ATTRIBUTES == ("even", "at_least_5", "prime", "closed_loop")


def test_train_network_takes_the_task_from_the_loaded_dataset():
    """No training (0 epochs): the evaluation alone must score float attribute vectors as multi-label."""
    tr, te = data.load("digits_attributes", "train"), data.load("digits_attributes", "test")
    net = models.build("resnet18", num_classes=4, image_size=8, width=2)
    m = train.train_network(net, tr, te, dict(optimizer="adam", lr=1e-3, epochs=0, batch_size=512), seed=0,
                            device=torch.device("cpu"), progress=lambda s: None)
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["train_loss"] == []


def test_googlenet_learns_the_digit_attributes_and_cuts_exactly():
    """Paper 2's Inception V1 on the multi-label path for real: torchvision GoogLeNet (full width) at 16 px,
    2 epochs on 512 training digits, beats the majority-class baseline of each attribute on the test split."""
    tr, te = (data.load("digits_attributes", split, image_size=16) for split in ("train", "test"))
    sub = TensorDataset(*(t[:512] for t in tr.tensors))  # built by hand: the task is given explicitly
    torch.manual_seed(0)
    net = models.build("googlenet", num_classes=4, image_size=16)
    # batch 16: the BN running variances start at 1 while torchvision's std-0.01 init gives tiny activations;
    # ~60 steps are needed before eval-mode outputs mean anything (real runs take thousands)
    m = train.train_network(net, sub, te, dict(optimizer="adam", lr=1e-3, weight_decay=1e-5, epochs=2, batch_size=16),
                            seed=0, device=torch.device("cpu"), progress=lambda s: None, task="multilabel")
    y = te.tensors[1]
    baseline = torch.maximum(y.mean(0), 1 - y.mean(0)).mean().item()  # ≈ 0.55
    assert m["test_accuracy"] > baseline + 0.1, (m, baseline)
    assert m["train_loss"][1] < m["train_loss"][0]
    net.eval()
    x = te.tensors[0][:8]
    with torch.no_grad():
        logits, outs = net.forward_all(x)
        assert torch.equal(logits, net.net(x))  # torchvision's own forward
        for i, name in enumerate(net.layer_names):
            assert torch.equal(net.back(net.front(x, name), name), logits), name
            assert torch.equal(outs[i], net.front(x, i))


# ----------------------------------------------------------------------------- CelebA

ATTRS = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
         "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
         "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
         "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
         "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


def fake_celeba(root: Path, partitions=(0, 0, 0, 1, 2, 2)) -> np.ndarray:
    """A tiny CelebA in torchvision's layout and the real files' formats: 178×218 JPEGs whose top half is dark
    and bottom half bright, a grey level per image; returns the {-1, 1} attribute table written."""
    from PIL import Image

    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    attrs = rng.choice([-1, 1], size=(len(partitions), 40))
    names = [f"{i + 1:06d}.jpg" for i in range(len(partitions))]
    for i, name in enumerate(names):
        img = np.full((218, 178, 3), 40 * i, np.uint8)
        img[109:] = 255  # the centre crop keeps rows 20…197: dark above the middle, white below
        Image.fromarray(img).save(base / "img_align_celeba" / name, quality=95)
    n = len(names)
    (base / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(ATTRS)} \n" + "".join(
        f"{name} {' '.join(f'{v:2d}' for v in row)}\n" for name, row in zip(names, attrs)))
    (base / "list_eval_partition.txt").write_text("".join(f"{m} {p}\n" for m, p in zip(names, partitions)))
    (base / "identity_CelebA.txt").write_text("".join(f"{m} {100 + i}\n" for i, m in enumerate(names)))
    (base / "list_bbox_celeba.txt").write_text(f"{n}\nimage_id x_1 y_1 width height\n" + "".join(
        f"{m}    95  71 226 313\n" for m in names))
    (base / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x "
        "rightmouth_y\n" + "".join(f"{m}    69  109  106  113   77  142   73  152  108  154\n" for m in names))
    return attrs


def test_celeba_loader_reads_the_local_layout(tmp_path, caplog):
    attrs = fake_celeba(tmp_path)
    with caplog.at_level(logging.WARNING, logger="stitchlib.data"):
        tr = data.load("celeba", "train", root=str(tmp_path), image_size=32)
        te = data.load("celeba", "test", root=str(tmp_path), image_size=32)
    assert "not the official release" in caplog.text  # the fake files' MD5 differ: a warning, not a refusal
    assert (len(tr), len(te), tr.task) == (3, 2, "multilabel")  # partition 0 = train, 2 = test, 1 (valid) unused
    x, a = tr[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert a.dtype == torch.float32 and a.shape == (40,)
    assert torch.equal(a, torch.as_tensor((attrs[1] + 1) // 2, dtype=torch.float32))
    assert torch.equal(te[1][1], torch.as_tensor((attrs[5] + 1) // 2, dtype=torch.float32))
    assert x[:, :14].mean().item() == pytest.approx(40 / 255, abs=0.03)  # 000002.jpg: grey 40 above the middle
    assert x[:, 18:].mean().item() == pytest.approx(1.0, abs=0.03)       # centre crop: the middle at row 16
    xb, ab = next(data.batches(te, 4))
    assert xb.shape == (2, 3, 32, 32) and ab.shape == (2, 40) and ML.correct(torch.zeros(2, 40), ab) >= 0


def test_celeba_missing_or_incomplete_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"datasets.celeba.root: dataset 'celeba' needs a local root holding: "
                                                r"celeba/img_align_celeba/\*, celeba/list_attr_celeba.txt"):
        data.load("celeba", "train", root=None)
    fake_celeba(tmp_path)
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"celeba/list_eval_partition.txt does not exist"):
        data.load("celeba", "train", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"root points inside the dataset: use its parent"):
        catalog.check_dataset("celeba", str(tmp_path / "celeba"))
    for f in (tmp_path / "celeba" / "img_align_celeba").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"celeba/img_align_celeba is empty"):
        catalog.check_dataset("celeba", str(tmp_path))


@pytest.mark.skipif(not os.environ.get("STITCHLIB_CELEBA_ROOT"),
                    reason="the real CelebA is not on this machine (no network); set STITCHLIB_CELEBA_ROOT to the "
                           "folder holding celeba/ to run this test")
def test_real_celeba():
    root = os.environ["STITCHLIB_CELEBA_ROOT"]
    tr, te = (data.load("celeba", split, root=root, image_size=64) for split in ("train", "test"))
    assert (len(tr), len(te)) == (162770, 19962)
    x, a = te[0]
    assert x.shape == (3, 64, 64) and a.shape == (40,) and set(a.unique().tolist()) <= {0.0, 1.0}


# ----------------------------------------------------------------------------- configuration

def _cfg(datasets, family="googlenet", **extra):
    return {"datasets": datasets, "architectures": {"net": {"family": family}}, "seeds": [0, 1], **extra}


def test_config_accepts_googlenet_on_celeba_with_the_class_label_studies_off(tmp_path):
    fake_celeba(tmp_path)
    off = {"ood": {"enabled": False}, "ding": {"enabled": False}}
    cfg = sconf.validate(_cfg({"celeba": {"root": str(tmp_path), "image_size": 64}}, **off))
    assert sconf.layers(cfg, "net") == catalog.GOOGLENET_LAYERS == models.build(
        "googlenet", num_classes=40, image_size=64).layer_names
    sconf.validate(_cfg({"digits_attributes": {"image_size": 16}}, **off))
    sconf.validate(_cfg({"digits": {"image_size": 16}}))  # multiclass: every study stays on


@pytest.mark.malformed_config
@pytest.mark.parametrize("cfg,key,says", [
    (_cfg({"digits_attributes": {"image_size": 16}}), "ood.enabled", "is multi-label"),
    (_cfg({"digits_attributes": {"image_size": 16}}, ood={"enabled": False}), "ding.enabled",
     "set ding.enabled: false"),
    (_cfg({"digits": {}}), "datasets.digits.image_size", "googlenet (architectures.net) needs images of at least 15"),
    (_cfg({"digits": {"image_size": 16}}) | {"architectures": {"net": {"family": "googlenet",
                                                                        "params": {"transform_input": 1}}}},
     "architectures.net.params.transform_input", "expected bool"),
])
def test_config_refuses_what_the_tasks_cannot_do(cfg, key, says):
    with pytest.raises(sconf.ConfigError) as e:
        sconf.validate(cfg)
    assert str(e.value).startswith(key) and says in str(e.value), str(e.value)


def test_googlenet_refuses_too_small_images():
    with pytest.raises(ValueError, match="at least 15 px"):
        models.build("googlenet", num_classes=4, image_size=14)
