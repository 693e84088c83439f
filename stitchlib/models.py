"""Architectures and their layer registry.

Every network is a :class:`Stitchable`: ``prefix`` (stem / patch embedding), an ordered list of
``blocks`` whose outputs are the stitch points ("layers"), and a ``head``. Hence

    front(x, i) = f≤i(x) = blocks[i](… blocks[0](prefix(x)))
    back(h, i)  = f>i(h) = head(blocks[-1](… blocks[i+1](h)))

and ``back(front(x, i), i) == model(x)`` exactly: the same operations in the same order. A network with
``stem_point`` also has its prefix output as the first stitch point (the input of block 0), so that every
block input is a stitch point; front/back then cut after ``blocks_before(i)`` blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from stitchlib import catalog, hooked
from stitchlib.stitchable import Stitchable

# ----------------------------------------------------------------------------- CIFAR ResNets

class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Stitchable):
    """ResNet with a CIFAR stem (3×3 stride-1 conv, no max-pool), 4 stages of widths w, 2w, 4w, 8w.

    ``blocks=(2, 2, 2, 2)`` is ResNet-18 (paper 1); paper 3's R_abcd nets use other counts. Stitch
    points are the block outputs after each block's final ReLU, named ``layer{stage}.{block}``, preceded
    with ``stem_point`` by the stem output ``stem`` (after its ReLU).
    """

    layout = "conv"

    def __init__(self, num_classes: int, width: int = 64, stage_blocks: tuple[int, ...] = (2, 2, 2, 2),
                 in_channels: int = 3, stem_point: bool = False):
        super().__init__()
        self.stem_point = stem_point
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, c_in = [], width
        for s, n in enumerate(stage_blocks):
            c_out = width * 2 ** s
            for b in range(n):
                blocks.append(BasicBlock(c_in, c_out, 2 if (b == 0 and s > 0) else 1))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.layer_names = [catalog.STEM] * stem_point + catalog.resnet_layer_names(stage_blocks)
        self.fc = nn.Linear(c_in, num_classes)

    def prefix(self, x):
        return self.stem(x)

    def head(self, h):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


# ----------------------------------------------------------------------------- ViT

class ViT(Stitchable):
    """torchvision's ``VisionTransformer`` cut at its encoder blocks (``block0`` … ``block{depth-1}``).

    The stitch point is the full token sequence (CLS + patches), shape (N, 1 + (S/patch)², hidden).
    """

    layout = "tokens"

    def __init__(self, num_classes: int, image_size: int, patch_size: int = 4, depth: int = 12,
                 heads: int = 3, hidden_dim: int = 192, mlp_dim: int = 768, dropout: float = 0.0):
        super().__init__()
        from torchvision.models.vision_transformer import VisionTransformer

        if image_size % patch_size:
            raise ValueError(f"ViT image size {image_size} is not a multiple of patch size {patch_size}")
        self.vit = VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=depth,
                                     num_heads=heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim,
                                     dropout=dropout, num_classes=num_classes)
        self.blocks = self.vit.encoder.layers
        self.layer_names = catalog.vit_layer_names(depth)

    def prefix(self, x):
        v = self.vit
        x = v._process_input(x)
        x = torch.cat([v.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return v.encoder.dropout(x + v.encoder.pos_embedding)

    def head(self, h):
        return self.vit.heads(self.vit.encoder.ln(h)[:, 0])


# ----------------------------------------------------------------------------- Tiny-10

class Tiny10(Stitchable):
    """Tiny-10 (Kornblith et al. 2019; paper 2): eight conv–BN–ReLU layers, global average pooling, logits.

    3×3 convs of widths w, w, 2w (stride 2), 2w, 2w, 4w (stride 2), 4w (valid padding), then a 1×1 conv of
    4w (w = 16 in the paper). Stitch points: the eight conv–BN–ReLU outputs ``conv1`` … ``conv8``.
    """

    layout = "conv"
    # (out width multiple, kernel, stride, padding) of each layer
    PLAN = ((1, 3, 1, 1), (1, 3, 1, 1), (2, 3, 2, 1), (2, 3, 1, 1), (2, 3, 1, 1), (4, 3, 2, 1), (4, 3, 1, 0),
            (4, 1, 1, 0))

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3):
        super().__init__()
        blocks, c_in = [], in_channels
        for mult, k, stride, pad in self.PLAN:
            blocks.append(nn.Sequential(nn.Conv2d(c_in, mult * width, k, stride, pad, bias=False),
                                        nn.BatchNorm2d(mult * width), nn.ReLU()))
            c_in = mult * width
        self.blocks = nn.ModuleList(blocks)
        self.layer_names = catalog.tiny10_layer_names()
        self.fc = nn.Linear(c_in, num_classes)

    def prefix(self, x):
        return x

    def head(self, h):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


# ----------------------------------------------------------------------------- Inception V1

class GoogLeNet(Stitchable):
    """torchvision's ``GoogLeNet`` (Inception V1, paper 2's CelebA network) cut at its inception blocks.

    prefix = conv1, maxpool1, conv2, conv3, maxpool2; the stitch points are the outputs of ``inception3a`` …
    ``inception5b`` (torchvision's module names), with ``maxpool3`` / ``maxpool4`` run at the start of the block
    after them (inception4a, inception5a); head = avgpool, flatten, dropout, fc. No auxiliary classifiers.
    The torchvision network is ``self.net``: the state dict is torchvision's, keys prefixed ``net.``. Works
    from 15 px up (inception maps 4, 4, 2, …, 2, 1, 1 pixels wide at 32 px; 8, 8, 4, …, 4, 2, 2 at 64 px).
    torchvision's initialisation (weights with std 0.01) makes the first activations tiny while the BatchNorm
    running variances start at 1: eval-mode outputs are near-constant for the first ~100 training steps.
    """

    layout = "conv"

    def __init__(self, num_classes: int, dropout: float = 0.2, transform_input: bool = False):
        super().__init__()
        from torchvision.models import GoogLeNet as TorchvisionGoogLeNet

        self.net = n = TorchvisionGoogLeNet(num_classes=num_classes, aux_logits=False, init_weights=True,
                                            transform_input=transform_input, dropout=dropout)
        self.layer_names = list(catalog.GOOGLENET_LAYERS)
        pools = {"inception4a": n.maxpool3, "inception5a": n.maxpool4}
        blocks = nn.ModuleList(nn.Sequential(pools[name], getattr(n, name)) if name in pools
                               else getattr(n, name) for name in self.layer_names)
        # Not registered as a submodule: its modules are self.net's, so the state dict keeps exactly
        # torchvision's keys (under ``net.``), once each (torchvision's pretrained weights load into self.net).
        object.__setattr__(self, "blocks", blocks)

    def prefix(self, x):
        n = self.net
        x = n._transform_input(x)
        return n.maxpool2(n.conv3(n.conv2(n.maxpool1(n.conv1(x)))))

    def head(self, h):
        n = self.net
        return n.fc(n.dropout(torch.flatten(n.avgpool(h), 1)))


# ----------------------------------------------------------------------------- registry

ARCHITECTURES: dict[str, Callable[..., Stitchable]] = {}


def register(name: str):
    def deco(fn):
        ARCHITECTURES[name] = fn
        return fn
    return deco


@register("resnet18")
def _resnet18(num_classes: int, image_size: int, width: int = 64) -> Stitchable:
    return CifarResNet(num_classes, width=width, stage_blocks=(2, 2, 2, 2))


@register("resnet")
def _resnet(num_classes: int, image_size: int, width: int = 64, stage_blocks=(2, 2, 2, 2)) -> Stitchable:
    """Paper 3's small ResNet R_abcd (``stage_blocks = [a, b, c, d]``); the stem output is a stitch point."""
    return CifarResNet(num_classes, width=width, stage_blocks=tuple(stage_blocks), stem_point=True)


@register("tiny10")
def _tiny10(num_classes: int, image_size: int, width: int = 16) -> Stitchable:
    return Tiny10(num_classes, width=width)


@register("googlenet")
def _googlenet(num_classes: int, image_size: int, dropout: float = 0.2, transform_input: bool = False) -> Stitchable:
    """Paper 2's Inception V1 (torchvision GoogLeNet without auxiliary heads); stitch points: inception blocks."""
    return GoogLeNet(num_classes, dropout=dropout, transform_input=transform_input)


@register("vit")
def _vit(num_classes: int, image_size: int, **kw) -> Stitchable:
    return ViT(num_classes, image_size, **kw)


@register("custom")
def _custom(num_classes: int, image_size: int, factory: str, kwargs: dict, points: list, names: list = (),
            state_dict: str = "") -> Stitchable:
    """A network of your own, ``factory(**kwargs)`` cut at the modules ``points`` by hooks (stitchlib.hooked).
    Built with the factory's initial weights: the workflow's train job imports ``state_dict`` into it."""
    return hooked.HookedNetwork.build(factory, kwargs, points, (3, image_size, image_size), num_classes, list(names))


def build(family: str, *, num_classes: int, image_size: int, **params) -> Stitchable:
    """Build an architecture by registry name; ``params`` are its options (width, depth, …; see catalog)."""
    params = catalog.architecture_params(family, params)
    least = catalog.FAMILIES[family].min_image_size
    if image_size < least:
        raise ValueError(f"{family} needs images of at least {least} px, not {image_size}")
    return ARCHITECTURES[family](num_classes=num_classes, image_size=image_size, **params)


# ----------------------------------------------------------------------------- frozen networks

def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in eval mode with every BatchNorm2d folded into the convolution before it; ``net`` is
    left untouched.

    In eval mode BatchNorm is a fixed per-channel affine map, so conv → BN is one convolution with scaled
    weights and a bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``): the same function up to float rounding,
    with less work in every forward and backward pass. For frozen networks only (TLM receivers, evaluation,
    OOD detectors): the copy has no batch statistics left to train. Folds CifarResNet's stem and shortcut
    (conv, BN in an ``nn.Sequential``) and each BasicBlock's conv1/bn1 and conv2/bn2; a network without
    BatchNorm (ViT: LayerNorm) comes back as an unchanged copy. (A hooked network's stitch point at such a conv
    itself, not its block, would then see the BatchNorm's output.)
    """
    from copy import deepcopy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = deepcopy(net).eval()
    for m in list(net.modules()):
        if isinstance(m, BasicBlock):
            m.conv1, m.bn1 = fuse_conv_bn_eval(m.conv1, m.bn1), nn.Identity()
            m.conv2, m.bn2 = fuse_conv_bn_eval(m.conv2, m.bn2), nn.Identity()
        elif isinstance(m, nn.Sequential):
            for i in range(len(m) - 1):
                if isinstance(m[i], nn.Conv2d) and isinstance(m[i + 1], nn.BatchNorm2d):
                    m[i], m[i + 1] = fuse_conv_bn_eval(m[i], m[i + 1]), nn.Identity()
    return net
