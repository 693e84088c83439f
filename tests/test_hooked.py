"""Networks of your own (family ``custom``, stitchlib.hooked): exact front/back by hooks, clear errors for bad
stitch points and configs, the import step, and a tiny workflow run on two imported networks."""

import json

import pandas as pd
import pytest
import torch
import yaml
from test_workflow import smk

from stitchlib import config as sconf
from stitchlib import data, hooked, models, pipeline
from stitchlib.train import train_network

VIT = "torchvision.models.vision_transformer.VisionTransformer"
VIT_KW = dict(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10)
VIT_POINTS = ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
RESNET_POINTS = ["layer1", "layer2", "layer3", "layer4"]


def build(factory="torchvision.models.resnet18", points=RESNET_POINTS, kwargs=None, size=16):
    return models.build("custom", num_classes=10, image_size=size, factory=factory, points=points,
                        kwargs={"num_classes": 10} if kwargs is None else kwargs)  # no state dict outside the workflow


@pytest.mark.parametrize("factory,kwargs,points,layout", [
    ("torchvision.models.resnet18", {"num_classes": 10}, RESNET_POINTS, "conv"),
    ("torchvision.models.vision_transformer:VisionTransformer", VIT_KW, VIT_POINTS, "tokens"),
])
def test_front_back_reproduce_the_wrapped_model_exactly(factory, kwargs, points, layout):
    torch.manual_seed(0)
    net = build(factory, points, kwargs).eval()
    with torch.no_grad():  # torchvision's ViT head starts at zero: random weights everywhere make the test bite
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert net.layer_names == points and net.layout == layout
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        y = net.model(x)
        logits, outs = net.forward_all(x)
        assert torch.equal(logits, y)
        for i, p in enumerate(points):
            h = net.front(x, p)
            assert torch.equal(h, outs[i]) and h.dim() == (4 if layout == "conv" else 3)
            assert torch.equal(net.back(h, p), y), p  # back(front(x, i), i) == model(x), bit for bit
    named = models.build("custom", num_classes=10, image_size=16, factory=factory, points=points, kwargs=kwargs,
                         names=[f"n{i}" for i in range(len(points))])
    assert named.layer_names == ["n0", "n1", *["n2", "n3"][:len(points) - 2]]
    named.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(named.eval().front(x, "n1"), net.front(x, points[1]))
    h = net.front(x, points[1]).detach().requires_grad_()
    net.back(h, points[1]).sum().backward()  # gradients reach the stitch point (TLM trains through back)
    assert h.grad is not None and h.grad.abs().sum() > 0
    if layout == "conv":
        assert net.model.conv1.weight.grad is None  # the stem before the cut runs without autograd


@pytest.mark.parametrize("points,message", [
    (["layer5"], "params.points[0]: torchvision.models.resnet18 has no module 'layer5'; similar module paths: "
                 "['layer4', 'layer3', 'layer2', 'layer1'"),
    (["layer1", "layer2.0.conv1"], "params.points[1]: module 'layer2.0.conv1' is not a cut point"),
    (["layer1.0.relu"], "params.points[0]: module 'layer1.0.relu' runs 2 times in a forward pass"),
    (["layer2", "layer1"], "params.points: list the stitch points in the order torchvision.models.resnet18 runs "
                           "them: ['layer1', 'layer2']"),
    (["fc"], "params.points[0]: module 'fc' outputs a tensor of shape (2, 10)"),
])
def test_bad_stitch_points_are_clear_errors(points, message):
    with pytest.raises(ValueError) as e:
        build(points=points)
    assert message in str(e.value)


def test_a_module_bypassed_by_a_residual_is_refused_even_behind_a_zero_initialised_head():
    points = ["encoder.layers.encoder_layer_0.mlp", "encoder.layers.encoder_layer_1"]  # ViT: x + mlp(ln(x))
    with pytest.raises(ValueError, match=r"points\[0\]: module 'encoder.layers.encoder_layer_0.mlp' is not a cut"):
        build(VIT, points, VIT_KW)


def test_factory_errors_name_the_key():
    with pytest.raises(ValueError, match=r"params.factory: torchvision.models has no attribute 'resnet1000'; "
                                         r"similar: \['resnet101'"):
        build("torchvision.models.resnet1000")
    with pytest.raises(ValueError, match=r"params.factory: no module named 'no_such_package' \(factory module no_"):
        build("no_such_package.nets:make")
    with pytest.raises(ValueError, match=r"params.kwargs: .* outputs 1000 logits but the dataset has 10 classes"):
        build(kwargs={})
    spec = {"arch": "mine", "family": "custom", "num_classes": 10, "image_size": 16,
            "params": {"factory": "torchvision.models.resnet1000", "kwargs": {}, "points": ["layer1"],
                       "state_dict": "x.pt"}}
    with pytest.raises(ValueError, match=r"^architectures\.mine\.params\.factory: "):  # the job names the config key
        pipeline.build_network(spec)


def _config(tmp_path, **params):
    p = {"factory": VIT, "kwargs": VIT_KW, "points": VIT_POINTS, "state_dict": str(tmp_path / "mine-s{seed}.pt"),
         **params}
    return {"datasets": {"digits": {"image_size": 16}}, "seeds": [0, 1],
            "architectures": {"mine": {"family": "custom", "params": p}}}


@pytest.mark.malformed_config
@pytest.mark.parametrize("params,message", [
    ({}, "architectures.mine.params.state_dict: {tmp}/mine-s0.pt does not exist (seed 0, dataset digits)"),
    ({"factory": "no_such_package.nets:make"}, "architectures.mine.params.factory: no module named 'no_such_package'"),
    ({"factory": "resnet18"}, "architectures.mine.params.factory: name the model's factory as"),
    ({"points": []}, "architectures.mine.params.points: the module paths of the stitch points"),
    ({"points": ["layer1", "layer1"]}, "architectures.mine.params.points: the module paths"),
    ({"state_dict": ""}, "architectures.mine.params.state_dict: required"),
    ({"state_dict": "nets/{arch}.pt"}, "architectures.mine.params.state_dict: a path, optionally with {seed}"),
    ({"kwargs": [1]}, "architectures.mine.params.kwargs: expected dict"),
    ({"stride": 2}, "architectures.mine.params: unknown parameter(s) ['stride'] for 'custom'"),
    ({"names": ["a"]}, "architectures.mine.params.names: layer names are file and HDF5 names"),
])
def test_config_errors_name_the_key_before_any_job(tmp_path, params, message):
    with pytest.raises(sconf.ConfigError) as e:
        sconf.validate(_config(tmp_path, **params))
    assert message.replace("{tmp}", str(tmp_path)) in str(e.value)


def test_config_of_own_networks_validates_with_module_paths_as_layers(tmp_path):
    for seed in (0, 1):
        torch.save({}, tmp_path / f"mine-s{seed}.pt")  # DAG-build time only stats it and reads its zip directory
    cfg = sconf.validate({**_config(tmp_path), "stitching": {"settings": ["inter"]}})
    assert sconf.layers(cfg, "mine") == VIT_POINTS
    assert sconf.state_dict_files(cfg, "digits", "mine-s1") == [str(tmp_path / "mine-s1.pt")]  # the train job's input
    assert sconf.train_settings(cfg, "mine") == {}  # imported, not trained: train settings never re-import it
    assert sconf.layers(sconf.validate(_config(tmp_path, names=["b0", "b1"])), "mine") == ["b0", "b1"]
    bad = _config(tmp_path)
    bad["architectures"]["mine"]["layers"] = ["encoder.layers.encoder_layer_7"]
    with pytest.raises(sconf.ConfigError, match=r"architectures.mine.layers\[0\]: custom has no layer"):
        sconf.validate(bad)
    (tmp_path / "mine-s1.pt").unlink()
    with pytest.raises(sconf.ConfigError, match=r"mine-s1.pt does not exist \(seed 1"):
        sconf.validate(_config(tmp_path))


def _train_vit(seed: int, path, epochs: int = 1) -> float:
    """One of 'your own networks': a tiny torchvision ViT trained here and saved as a plain state dict."""
    tr, te = data.load("digits", "train", image_size=16), data.load("digits", "test", image_size=16)
    torch.manual_seed(seed)
    net = hooked.resolve_factory(VIT)(**VIT_KW)
    result = train_network(net, tr, te, dict(optimizer="adam", lr=3e-3, weight_decay=0.0, epochs=epochs,
                                             batch_size=64), seed=seed, device=torch.device("cpu"),
                           progress=lambda s: None)
    torch.save(net.state_dict(), path)
    return result["test_accuracy"]


def test_import_writes_the_checkpoint_and_refuses_a_foreign_state_dict(tmp_path):
    acc = _train_vit(0, tmp_path / "mine-s0.pt")
    torch.save({}, tmp_path / "mine-s1.pt")
    cfg = sconf.validate(_config(tmp_path))
    spec = sconf.network_spec(cfg, "digits", "mine-s0")
    pipeline.train(spec, {}, str(tmp_path / "ck.pt"), str(tmp_path / "ck.json"), device="cpu")
    metrics = json.loads((tmp_path / "ck.json").read_text())
    assert metrics["test_accuracy"] == acc and metrics["imported_from"] == str(tmp_path / "mine-s0.pt")
    net = pipeline.load_network(spec, tmp_path / "ck.pt", torch.device("cpu"))
    assert pipeline.expected_shapes(spec) == {p: (17, 16) for p in VIT_POINTS}  # CLS + 4×4 patches, width 16

    other = _config(tmp_path, kwargs={**VIT_KW, "hidden_dim": 8})
    spec = sconf.network_spec(sconf.validate(other), "digits", "mine-s0")
    with pytest.raises(ValueError, match=r"architectures.mine.params.state_dict: .*mine-s0.pt does not fit"):
        pipeline.train(spec, {}, str(tmp_path / "x.pt"), str(tmp_path / "x.json"), device="cpu")
    assert net.layout == "tokens" and not (tmp_path / "x.pt").exists()


@pytest.mark.workflow
def test_workflow_compares_two_imported_networks(tmp_path):
    (tmp_path / "nets").mkdir()
    accuracy = {seed: _train_vit(seed, tmp_path / f"nets/mine-s{seed}.pt", epochs=2) for seed in (0, 1)}
    cfg = _config(tmp_path, state_dict="nets/mine-s{seed}.pt", names=["b0", "b1"])  # relative to the working dir
    cfg.update(tlm={"epochs": 1}, ood={"enabled": False}, ding={"enabled": False},
               stitching={"settings": ["inter"]})  # 11 jobs: the two networks compared both ways
    (tmp_path / "byo.yaml").write_text(yaml.safe_dump(cfg))
    smk("results/tables/digits/table1.md", "--cores", "2", "--configfile", "byo.yaml", cwd=tmp_path)

    res = tmp_path / "results"
    for seed in (0, 1):  # imported, not trained: the network's own accuracy, and the source recorded
        m = json.loads((res / f"models/digits/mine-s{seed}.json").read_text())
        assert m["test_accuracy"] == accuracy[seed] and m["imported_from"] == f"nets/mine-s{seed}.pt"
    for src, tgt in (("mine-s1", "mine-s0"), ("mine-s0", "mine-s1")):
        dm = pd.read_csv(res / f"stitching/digits/dm/{src}__{tgt}.csv")
        assert len(dm) == 4 and set(dm.source_layer) == {"b0", "b1"}  # the points' names
        assert dm.receiver_accuracy.to_numpy() == pytest.approx(accuracy[int(tgt[-1])])
        assert (dm.struct < 1).all()  # better than predicting zero: the two networks' layers are related
        tlm = pd.read_csv(res / f"stitching/digits/tlm/{src}__{tgt}.csv")
        assert len(tlm) == 4 and tlm.accuracy.between(0, 1).all()
    sim = pd.read_csv(res / "similarity/digits/mine.csv")
    assert {"LCKA", "PWCCA", "OPD"} <= set(sim.measure) and len(sim) == len(set(sim.measure)) * 2 * 4
    table = pd.read_csv(res / "tables/digits/table1.csv")
    assert set(zip(table.setting, table.arch)) == {("inter", "mine")} and table.percent.between(0, 100).all()
    assert {"TLM", "DM (func.)", "DM (struct.)", "LCKA", "PWCCA", "OPD"} <= set(table.measure)
    assert "| DM (struct.) |" in (res / "tables/digits/table1.md").read_text()
