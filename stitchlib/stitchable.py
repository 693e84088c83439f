"""The interface every network of the workflow has: a layer registry of stitch points with front and back halves.

A :class:`Stitchable` is a ``prefix`` (stem / patch embedding), an ordered list of ``blocks`` whose outputs are the
stitch points ("layers"), and a ``head``; ``front(x, i)`` runs it up to stitch point i and ``back(h, i)`` from there
on, so that ``back(front(x, i), i) == model(x)`` exactly. The built-in families (stitchlib.models) implement it with
modules, networks of your own (stitchlib.hooked) with forward hooks.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Stitchable(nn.Module):
    """A network cut into prefix → blocks → head; the block outputs are the stitch points."""

    layer_names: list[str]
    layout: str  # 'conv' (N, C, H, W) or 'tokens' (N, T, D)
    blocks: nn.ModuleList
    stem_point: bool = False  # True: layer_names[0] is the prefix output (the input of block 0)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layer_index(self, layer: str | int) -> int:
        if isinstance(layer, int):
            if not 0 <= layer < len(self.layer_names):
                raise IndexError(f"layer index {layer} out of range 0..{len(self.layer_names) - 1}")
            return layer
        try:
            return self.layer_names.index(layer)
        except ValueError:
            raise KeyError(f"{type(self).__name__} has no layer {layer!r}; layers: {self.layer_names}") from None

    def blocks_before(self, layer: str | int) -> int:
        """How many blocks run before the cut at ``layer`` (see ``catalog.blocks_before``)."""
        return self.layer_index(layer) + (0 if self.stem_point else 1)

    def front(self, x: torch.Tensor, layer: str | int) -> torch.Tensor:
        h = self.prefix(x)
        for block in self.blocks[: self.blocks_before(layer)]:
            h = block(h)
        return h

    def back(self, h: torch.Tensor, layer: str | int) -> torch.Tensor:
        for block in self.blocks[self.blocks_before(layer):]:
            h = block(h)
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.back(self.front(x, 0), 0)

    def fronts(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """f≤i(x) of every layer i of ``layers``, in one pass that stops after the deepest (= ``front`` of each)."""
        want = {self.layer_index(layer): layer for layer in layers}
        h, out, first = self.prefix(x), {}, 0 if self.stem_point else 1
        if self.stem_point and 0 in want:
            out[want[0]] = h
        for b, block in enumerate(self.blocks[:max(self.blocks_before(i) for i in want)]):
            h = block(h)
            if b + 1 - first in want:
                out[want[b + 1 - first]] = h
        return out

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every stitch point's activation, in one pass."""
        h = self.prefix(x)
        outs = [h] if self.stem_point else []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        return self.head(h), outs
