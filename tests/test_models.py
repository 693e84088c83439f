import pytest
import torch

from stitchlib import catalog, models
from stitchlib.stitching import AffineStitch

ARCHS = [("resnet18", dict(width=8)), ("vit", dict(patch_size=4, depth=4, heads=2, hidden_dim=16, mlp_dim=32)),
         ("resnet", dict(width=4, stage_blocks=[1, 2, 1, 1]))]


@pytest.mark.parametrize("family,params", ARCHS)
def test_front_back_compose_exactly(family, params):
    torch.manual_seed(0)
    net = models.build(family, num_classes=10, image_size=16, **params).eval()
    x = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        y = net(x)
        logits, outs = net.forward_all(x)
        assert torch.equal(logits, y)
        for i, name in enumerate(net.layer_names):
            assert torch.equal(net.back(net.front(x, name), name), y), name
            assert torch.equal(net.front(x, i), outs[i])


@pytest.mark.parametrize("family,params", ARCHS)
def test_identity_stitch_at_every_cut_reproduces_outputs(family, params):
    """Paper 1's sanity check: an identity stitch inserted at a stitch point changes nothing."""
    torch.manual_seed(1)
    net = models.build(family, num_classes=10, image_size=16, **params).eval()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        y = net(x)
        for i in range(len(net.layer_names)):
            h = net.front(x, i)
            st = AffineStitch.between(h.shape[1:], h.shape[1:], net.layout)
            st.set_affine(torch.eye(st.weight.shape[0]), torch.zeros(st.weight.shape[0]))
            torch.testing.assert_close(net.back(st(h), i), y, rtol=0, atol=1e-5)


def test_layer_names_match_catalog():
    assert models.build("resnet18", num_classes=10, image_size=16, width=4).layer_names == \
        catalog.layer_names("resnet18", {}) == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    assert catalog.layer_names("vit", {"depth": 3}) == ["block0", "block1", "block2"]
    r = models.build("resnet", num_classes=10, image_size=16, width=4, stage_blocks=[1, 2, 1, 1])
    assert r.layer_names == catalog.layer_names("resnet", {"stage_blocks": [1, 2, 1, 1]}) == \
        ["stem", "layer1.0", "layer2.0", "layer2.1", "layer3.0", "layer4.0"]
    assert catalog.blocks_before("resnet", {"stage_blocks": [1, 2, 1, 1]}) == \
        ({name: i for i, name in enumerate(r.layer_names)}, 5)
    assert catalog.blocks_before("resnet18", {}) == ({f"layer{s}.{b}": 2 * s - 1 + b for s in range(1, 5)
                                                      for b in range(2)}, 8)


def test_small_resnet_stem_point_is_the_input_of_block_0():
    """Paper 3's R_abcd: the stem output is a stitch point, so every block input is one; R2222 has
    ResNet-18's blocks and parameters."""
    torch.manual_seed(0)
    r = models.build("resnet", num_classes=10, image_size=16, width=4, stage_blocks=[2, 2, 2, 2]).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(r.front(x, "stem"), r.stem(x))
        assert torch.equal(r.front(x, "layer1.0"), r.blocks[0](r.stem(x)))
    torch.manual_seed(0)
    r18 = models.build("resnet18", num_classes=10, image_size=16, width=4)
    assert r18.state_dict().keys() == r.state_dict().keys()
    assert all(torch.equal(v, r.state_dict()[k]) for k, v in r18.state_dict().items())
    with pytest.raises(ValueError, match="stage_blocks"):
        catalog.layer_names("resnet", {"stage_blocks": [2, 0]})


def test_resnet_shapes_follow_paper1():
    net = models.build("resnet18", num_classes=10, image_size=32, width=64)
    with torch.no_grad():
        _, outs = net.forward_all(torch.zeros(1, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs[::2]] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]


def test_vit_tokens_follow_paper1():
    net = models.build("vit", num_classes=10, image_size=32)  # ViT-Ti/4 defaults
    assert len(net.layer_names) == 12
    with torch.no_grad():
        h = net.front(torch.zeros(1, 3, 32, 32), 0)
    assert tuple(h.shape) == (1, 65, 192)


def test_unknown_names_are_clear_errors():
    net = models.build("resnet18", num_classes=10, image_size=16, width=4)
    with pytest.raises(KeyError, match="no layer 'layer9.0'"):
        net.front(torch.zeros(1, 3, 16, 16), "layer9.0")
    with pytest.raises(ValueError, match="unknown architecture 'resnet1000'"):
        models.build("resnet1000", num_classes=10, image_size=16)
    with pytest.raises(ValueError, match="unknown parameter"):
        models.build("resnet18", num_classes=10, image_size=16, depth=3)


@pytest.mark.parametrize("size,maps", [(32, [4, 4, 2, 2, 2, 2, 2, 1, 1]), (64, [8, 8, 4, 4, 4, 4, 4, 2, 2])])
def test_googlenet_cuts_at_its_inception_blocks_exactly(size, maps):
    """Paper 2's Inception V1 (torchvision GoogLeNet, no auxiliary heads): stitch points are the inception block
    outputs under torchvision's names; maxpool3/4 open the next block; back(front) is torchvision's forward."""
    torch.manual_seed(0)
    net = models.build("googlenet", num_classes=40, image_size=size).eval()
    assert net.layer_names == catalog.layer_names("googlenet", {}) == \
        ["inception3a", "inception3b", "inception4a", "inception4b", "inception4c", "inception4d", "inception4e",
         "inception5a", "inception5b"]
    assert list(net.state_dict()) == [f"net.{k}" for k in net.net.state_dict()]  # torchvision's keys, once each
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        y = net.net(x)
        logits, outs = net.forward_all(x)
        assert torch.equal(logits, y) and torch.equal(net(x), y) and y.shape == (2, 40)
        assert [o.shape[-1] for o in outs] == maps
        assert [o.shape[1] for o in outs] == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
        h = net.prefix(x)  # torchvision's order: ... inception3b, maxpool3, inception4a, ... maxpool4, inception5a
        for i, name in enumerate(net.layer_names):
            h = getattr(net.net, name)({"inception4a": net.net.maxpool3, "inception5a": net.net.maxpool4}.get(
                name, torch.nn.Identity())(h))
            assert torch.equal(outs[i], h) and torch.equal(net.front(x, name), h), name
            assert torch.equal(net.back(net.front(x, name), name), y), name
