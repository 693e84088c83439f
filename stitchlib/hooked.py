"""Networks of your own: any ``nn.Module`` from an importable factory, cut at named modules by forward hooks.

The config names the factory (``torchvision.models.resnet18`` or ``mypkg.nets:make``), its keyword arguments,
the module paths of the stitch points (``[layer1, layer2, layer3, layer4]``, as ``model.get_submodule`` reads
them; optional ``names`` for them in tables and files) and a state-dict file per seed (family ``custom``, see
``stitchlib.catalog``). :class:`HookedNetwork` gives such a model the layer registry every stage uses:

    front(x, i)  runs the model with a hook on module i that captures its output and stops the pass there;
    back(h, i)   runs the model with a hook that replaces module i's output by h. The modules before the
                 cut still run, on a zero input of h's batch size (without autograd), and their result is
                 discarded: back costs a forward pass of the stem besides the part after the cut;
    forward_all  captures every stitch point in one ordinary forward pass.

``back(front(x, i), i) == model(x)`` exactly, provided module i is a *cut point*: everything after it sees the
input only through module i's output (a whole residual block or encoder layer is one; a conv inside a block,
bypassed by the skip connection, is not). Building checks each point: the module exists (else the error lists
similar names), runs exactly once per forward pass, in the listed order, returns a 4-D (conv: N, C, H, W) or
3-D (tokens: N, T, D, token 0 a summary such as ViT's CLS token) tensor, one layout for all points, and is a
cut point (the logits of ``back`` on a zero stem input must equal the model's own).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn

from stitchlib import catalog, io
from stitchlib.stitchable import Stitchable

LAYOUTS = {4: "conv", 3: "tokens"}  # activation rank → layout


class _Captured(BaseException):
    """Carries a stitch point's output out of the forward pass (BaseException: user code catching
    ``Exception`` inside its forward cannot swallow it)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value


def resolve_factory(factory: str) -> Callable[..., nn.Module]:
    """The callable named ``package.module.attr`` or ``package.module:attr`` (``attr`` may be dotted), checked before
    it is called: under the allow-list of untrusted configs (README: Trust model); a class must be an ``nn.Module``;
    a built-in function (``os.system``) is refused; a declared return type must be an ``nn.Module``."""
    if (refused := catalog.factory_refusal(factory)) is not None and catalog.factory_allowlist() is not None:
        raise ValueError(f"params.factory: {refused}")
    module, attr = catalog.split_factory(factory)
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"params.factory: cannot import {module!r} ({e}); the module must be importable in the "
                         "jobs: an installed package, or a folder on PYTHONPATH") from None
    for i, name in enumerate(attr.split(".")):
        if not hasattr(obj, name):
            where = ".".join([module, *attr.split(".")[:i]])
            similar = difflib.get_close_matches(name, [n for n in dir(obj) if not n.startswith("_")], 5)
            raise ValueError(f"params.factory: {where} has no attribute {name!r}; similar: {similar}")
        obj = getattr(obj, name)
    if not callable(obj):
        raise ValueError(f"params.factory: {factory} is not callable")
    if isinstance(obj, type):
        declared = obj
    elif inspect.isbuiltin(obj) or not (inspect.isfunction(obj) or inspect.ismethod(obj)):
        raise ValueError(f"params.factory: {factory} is a {type(obj).__name__}, not a Python function or an "
                         "nn.Module class: it cannot build a network")
    else:
        try:
            declared = typing.get_type_hints(obj).get("return")
        except Exception:  # noqa: BLE001 - an unresolvable annotation says nothing either way
            declared = None
    origin = typing.get_origin(declared)  # List[str] → list; a Union says nothing the call will not tell
    declared = None if origin in (typing.Union, types.UnionType) else origin or declared
    if isinstance(declared, type) and not issubclass(declared, nn.Module):
        raise ValueError(f"params.factory: {factory} " + (f"is the class {declared.__name__}, not a torch.nn.Module"
                                                           if declared is obj else f"is declared to return "
                                                           f"{declared.__name__}, not a torch.nn.Module"))
    return obj


def _record(store: dict | list, i: int) -> Callable:
    """A forward hook that records point i's output: the first one into a dict, every call into a list."""
    if isinstance(store, list):
        return lambda module, args, out: store.append((i, out))
    return lambda module, args, out: store.setdefault(i, out)


class HookedNetwork(Stitchable):
    """``model`` cut at the modules ``points`` (module paths), called ``names`` (default: the paths);
    ``input_shape`` = (C, H, W) of one input. The state dict is the model's under the prefix ``model.``.
    """

    def __init__(self, model: nn.Module, points: list[str], input_shape: tuple[int, ...], name: str = "model",
                 names: list[str] | None = None):
        super().__init__()
        self.model, self.name, self.points, self.kwargs = model, name, list(points), {}
        self.layer_names, self.input_shape = list(names or points), tuple(input_shape)
        for i, p in enumerate(points):
            self._module(i, p)
        self.layout = self.verify()

    @classmethod
    def build(cls, factory: str, kwargs: dict[str, Any], points: list[str], input_shape: tuple[int, ...],
              num_classes: int | None = None, names: list[str] | None = None) -> HookedNetwork:
        make = resolve_factory(factory)
        try:
            model = make(**kwargs)
        except Exception as e:  # a typo in kwargs, sizes the network refuses: the key, not a traceback
            first = next((line for line in str(e).splitlines() if line.strip()), "")
            raise ValueError(f"params.kwargs: {factory}(**{kwargs}) failed: {type(e).__name__}: {first}") from e
        if not isinstance(model, nn.Module):
            raise ValueError(f"params.factory: {factory}(**kwargs) returned a {type(model).__name__}, not a "
                             "torch.nn.Module")
        net = cls(model, points, input_shape, factory, names)
        net.kwargs = dict(kwargs)
        classes = net.num_outputs
        if num_classes is not None and classes != num_classes:
            raise ValueError(f"params.kwargs: {factory}(**{kwargs}) outputs {classes} logits but the dataset has "
                             f"{num_classes} classes (torchvision factories take num_classes={num_classes})")
        return net

    def _module(self, i: int, path: str) -> nn.Module:
        try:
            return self.model.get_submodule(path)
        except AttributeError:
            names = [n for n, _ in self.model.named_modules() if n]
            similar = difflib.get_close_matches(path, names, 5, 0.5) or names[:10]
            raise ValueError(f"params.points[{i}]: {self.name} has no module {path!r}; similar module paths: "
                             f"{similar}") from None

    @contextlib.contextmanager
    def _hooks(self, hooks: dict[int, Callable]) -> Iterator[None]:
        # modules are looked up on every call: a module replaced since (models.fold_batchnorm) is still found
        handles = [self.model.get_submodule(self.points[i]).register_forward_hook(h) for i, h in hooks.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def front(self, x: torch.Tensor, layer: str | int) -> torch.Tensor:
        def capture(module, args, out):
            raise _Captured(out)

        with self._hooks({self.layer_index(layer): capture}):
            try:
                self.model(x)
            except _Captured as c:
                return c.value
        raise RuntimeError(f"{self.name}: stitch point {self.points[self.layer_index(layer)]!r} did not run")

    def back(self, h: torch.Tensor, layer: str | int) -> torch.Tensor:
        """The model's output with module ``layer``'s output replaced by ``h``. The modules before the cut run
        on zeros of h's batch size without autograd (their result is discarded); autograd resumes at the cut.
        Call it in eval mode: in train mode the stem's BatchNorm statistics would see the zeros."""
        return self._back(h, layer, h.new_zeros((len(h), *self.input_shape)))

    def _back(self, h: torch.Tensor, layer: str | int, dummy: torch.Tensor,
              seen: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """``back`` with the stem run on ``dummy``; ``seen`` collects the later stitch points' outputs."""
        i, grad = self.layer_index(layer), torch.is_grad_enabled()

        def replace(module, args, out):
            torch.set_grad_enabled(grad)
            return h

        hooks = {i: replace}
        if seen is not None:
            hooks.update({j: _record(seen, j) for j in range(i + 1, len(self.layer_names))})
        with self._hooks(hooks):
            try:
                torch.set_grad_enabled(False)
                return self.model(dummy)
            finally:
                torch.set_grad_enabled(grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def fronts(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        if len(layers) == 1:
            return {layers[0]: self.front(x, layers[0])}
        _, outs = self.forward_all(x)
        return {layer: outs[self.layer_index(layer)] for layer in layers}

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs: dict[int, torch.Tensor] = {}
        hooks = {i: _record(outs, i) for i in range(len(self.layer_names))}
        with self._hooks(hooks):
            logits = self.model(x)
        return logits, [outs[i] for i in range(len(self.layer_names))]

    @torch.no_grad()
    def verify(self, x: torch.Tensor | None = None) -> str:
        """Check every stitch point (see the module docstring) on inputs ``x`` (default: 2 seeded random
        images) in eval mode; return the layout. Raises ValueError naming the point."""
        if x is None:
            x = torch.randn(2, *self.input_shape, generator=torch.Generator().manual_seed(0))
        x = x.to(next(self.parameters(), torch.empty(0)).device)
        was_training = self.training
        self.eval()
        try:
            calls: list[tuple[int, Any]] = []
            hooks = {i: _record(calls, i) for i in range(len(self.layer_names))}
            with self._hooks(hooks):
                logits = self.model(x)
            if not (isinstance(logits, torch.Tensor) and logits.dim() == 2 and len(logits) == len(x)):
                raise ValueError(f"params.factory: {self.name} must return logits of shape (N, classes), not "
                                 f"{_describe(logits)}")
            self.num_outputs = logits.shape[1]  # logits per input (the classes)
            order = [i for i, _ in calls]
            layouts = {}
            for i, p in enumerate(self.points):
                where = f"params.points[{i}]: module {p!r}"
                if order.count(i) != 1:
                    raise ValueError(f"{where} runs {order.count(i)} times in a forward pass of {self.name}; a stitch "
                                     "point must run exactly once (a module reused at several places, such as "
                                     "torchvision's shared ReLU in a ResNet block, is not one)")
                out = calls[order.index(i)][1]
                if not isinstance(out, torch.Tensor) or out.dim() not in LAYOUTS:
                    raise ValueError(f"{where} outputs {_describe(out)}; a stitch point must output a 4-D conv map "
                                     "(N, C, H, W) or a 3-D token sequence (N, T, D)")
                layouts[p] = LAYOUTS[out.dim()]
            if order != sorted(order):
                ran = [self.points[i] for i in order]
                raise ValueError(f"params.points: list the stitch points in the order {self.name} runs them: {ran}")
            if len(set(layouts.values())) > 1:
                raise ValueError(f"params.points: all stitch points of a network need one layout, not {layouts}")
            outs = [calls[order.index(i)][1] for i in range(len(self.layer_names))]
            for i, p in enumerate(self.points):  # later points too: a zero-initialised head hides a leak
                seen: dict[int, torch.Tensor] = {}
                got = [self._back(outs[i], i, torch.zeros_like(x), seen), *seen.values()]
                if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(got, [logits, *outs[i + 1:]])):
                    raise ValueError(f"params.points[{i}]: module {p!r} is not a cut point of {self.name}: the output "
                                     "depends on what is computed before it other than through its output (e.g. a skip "
                                     "connection around it); choose a module whose output is all that flows onward, "
                                     "such as a whole residual block or encoder layer")
            return layouts[self.points[0]]
        finally:
            self.train(was_training)


def _describe(x: Any) -> str:
    return f"a tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"


def load_weights(net: HookedNetwork, path: str, where: str) -> None:
    """Load the state dict at ``path`` (``weights_only=True``) into ``net``'s model; an error names ``where`` (the
    config key) and says which keys or shapes do not fit."""
    try:
        net.model.load_state_dict(io.load_state_dict(path, artifact=False))  # a file of your own: no record
    except RuntimeError as e:
        raise ValueError(f"{where}.state_dict: {path} does not fit {net.name}(**{net.kwargs}): "
                         f"{str(e).strip()[:2000]}") from None
