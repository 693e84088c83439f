import pytest
import torch

from stitchlib import catalog, models
from stitchlib.stitching import AffineStitch

ARCHS = [("resnet18", dict(width=8)), ("vit", dict(patch_size=4, depth=4, heads=2, hidden_dim=16, mlp_dim=32))]


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
