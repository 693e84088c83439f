"""Speed paths that must not change results: BatchNorm folded into the convolutions of frozen networks."""

import pytest
import torch
import torch.nn as nn

from stitchlib import models, ood

RESNETS = [("resnet18", dict(width=8)), ("resnet", dict(width=4, stage_blocks=[1, 2, 1, 1]))]


def _random_batchnorm(net: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (fresh ones fold into the identity)."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return net.eval()


@pytest.mark.parametrize("family,params", RESNETS)
def test_folded_resnet_computes_the_same_function_and_gradients(family, params):
    torch.manual_seed(0)
    net = _random_batchnorm(models.build(family, num_classes=10, image_size=16, **params))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = models.fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())  # stem, blocks and shortcuts
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 0  # the original is left as it was
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()) and not net.training
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=0, atol=1e-5)
        outs = net.forward_all(x)[1]
    for i in range(len(net.layer_names)):
        grads = []
        for m in (net, folded):
            h = outs[i].clone().requires_grad_(True)  # the stitched input g>j receives
            y = m.back(h, i)
            (y * torch.linspace(-1, 1, y.shape[1])).sum().backward()
            grads.append((y.detach(), h.grad))
        torch.testing.assert_close(grads[1][0], grads[0][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-6)


def test_vit_is_left_unchanged():
    torch.manual_seed(0)
    net = models.build("vit", num_classes=10, image_size=16, patch_size=4, depth=2, heads=2, hidden_dim=16,
                       mlp_dim=32).eval()
    folded = models.fold_batchnorm(net)
    assert [type(m) for m in folded.modules()] == [type(m) for m in net.modules()]
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(folded(x), net(x))


def test_folded_conv_detector_gives_the_same_energies():
    torch.manual_seed(0)
    det = _random_batchnorm(ood.build_detector("conv", (8, 4, 4), 10, width=4, input_size=8, stage_blocks=[1, 1]))
    acts = torch.randn(20, 8, 4, 4)
    torch.testing.assert_close(torch.as_tensor(ood.energy(models.fold_batchnorm(det), acts)),
                               torch.as_tensor(ood.energy(det, acts)), rtol=0, atol=1e-5)
