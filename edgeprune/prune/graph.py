"""Coupled-channel groups of a traced model: which channels must be removed together.

Why torch.fx (symbolic_trace) rather than torch.export: fx keeps the user's ``nn.Module`` hierarchy
and calls ``call_module`` nodes by their module path, which is exactly what surgery edits, and it
traces in milliseconds without decomposing convolutions or BatchNorm into aten ops. torch.export
is stricter and more complete, but maps back to modules only through metadata and is an order of
magnitude slower on large models. Shapes come from one example forward pass (ShapeProp).

Every channel of every tensor gets an id, and a union-find couples ids that must stay aligned.
A conv or linear output opens fresh channels; BN, activations and pooling pass them through;
``cat`` concatenates them and ``split``/``chunk`` slice them; an elementwise add or mul *couples*
its operands channel by channel. ``flatten`` before a linear layer expands each channel into H*W
features. Working per channel (rather than per block of channels) is what makes a residual add
over a concatenation, or a split of a coupled stream, come out right without special cases.
Finally, channels that live in the same set of (module, kind) places form one group: the unit
a criterion ranks and surgery cuts.

Example, a residual block (``out = relu(bn2(conv2(relu(bn1(conv1(x))))) + x)``)::

    group A: x's producer.out, its bn | conv1.in | conv2.out, bn2 (coupled by the add) | next.in
    group B: conv1.out, bn1 | conv2.in

Removing channel 3 of group A removes output 3 of x's producer and of conv2, entry 3 of both
BatchNorms, and input 3 of conv1 and of every later consumer.

Channels that reach the model's inputs or outputs are *fixed*: their number is part of the contract.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from edgeprune.errors import GraphError


@dataclass(frozen=True)
class Place:
    """Where one channel lives in one module.

    Attributes:
        module: the module path (``layer1.conv2``).
        kind: ``out`` (weight dim 0, bias), ``norm`` (affine and running stats), ``in`` (weight
            dim 1, or linear input features), or ``dw`` (depthwise conv: in and out together).
        index: the channel's index in that dimension (for ``in``: its first input feature).
        expand: for ``in``, features per channel (H*W when a flatten precedes a linear layer).
    """

    module: str
    kind: str
    index: int
    expand: int = 1


@dataclass(frozen=True)
class Member:
    """A (module, kind) that every channel of a group occupies; for display and criteria."""

    module: str
    kind: str


@dataclass
class Group:
    """Coupled channels that are pruned together.

    Each channel of the group is a list of places; every channel of a group has places in the
    same (module, kind) members, so the group's channels are interchangeable candidates.
    ``fixed`` says why the group must not be pruned, if it must not.

    Example (the stem of a ResNet, with its identity shortcut)::

        members  = [stem.0.out, stem.1.norm, layer1.conv1.in, layer1.conv2.out, ...]
        channels = [[Place("stem.0", "out", 0), Place("stem.1", "norm", 0), ...],   # channel 0
                    [Place("stem.0", "out", 1), ...], ...]
    """

    id: int
    members: list[Member]
    channels: list[list[Place]] = field(default_factory=list)
    fixed: str | None = None

    @property
    def size(self) -> int:
        return len(self.channels)

    @property
    def producers(self) -> list[Member]:
        return [m for m in self.members if m.kind in ("out", "dw")]

    def __repr__(self) -> str:
        names = ", ".join(f"{m.module}.{m.kind}" for m in self.members)
        return f"Group(id={self.id}, size={self.size}, fixed={self.fixed!r}, members=[{names}])"


# A tensor's channel dimension: one (channel id, features per channel) pair per channel.
Layout = list[tuple[int, int]]


# Modules and functions that leave the channel layout unchanged.
PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
    nn.ELU, nn.Mish, nn.PReLU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.MaxPool2d,
    nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d,
)
PASS_FUNCTIONS: set[Any] = {
    F.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, F.sigmoid, F.tanh, F.leaky_relu, F.elu,
    F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate,
    F.pad, torch.relu, torch.sigmoid, torch.tanh, torch.nn.functional.hardtanh, F.mish,
}
PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "float", "relu_", "sigmoid_", "detach"}
ELEMENTWISE = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.truediv,
               torch.add, torch.mul, torch.sub}
ELEMENTWISE_METHODS = {"add", "mul", "sub", "add_", "mul_", "div"}

Handler = Callable[["GraphBuilder", fx.Node], Any]
# User extension point: module type or function -> handler returning the node's output layout.
HANDLERS: dict[Any, Handler] = {}


def register_handler(target: Any, handler: Handler) -> None:
    """Teach the graph a module type, function or method name it does not know.

    The handler receives the builder and the node and returns the output layout (or None for a
    non-tensor result); it may call ``builder.layout_of``, ``builder.new_channels``,
    ``builder.add_places``, ``builder.consume`` and ``builder.couple``.
    """
    HANDLERS[target] = handler


class GraphBuilder:
    """Walks an fx graph once and records channels, their couplings and their places."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.layouts: dict[fx.Node, Any] = {}
        self.parent: list[int] = []
        self.places: list[list[Place]] = []
        self.fixed: dict[int, str] = {}

    # -- channels (a union-find over every channel of every tensor) --------------------------
    def new_channels(self, count: int, module: str | None = None, kind: str = "out") -> Layout:
        """Open ``count`` fresh channels, optionally living at ``module``'s ``kind`` dimension."""
        layout = []
        for i in range(count):
            cid = len(self.parent)
            self.parent.append(cid)
            self.places.append([Place(module, kind, i)] if module is not None else [])
            layout.append((cid, 1))
        return layout

    def find(self, cid: int) -> int:
        while self.parent[cid] != cid:
            self.parent[cid] = self.parent[self.parent[cid]]
            cid = self.parent[cid]
        return cid

    def couple(self, a: Layout, b: Layout, where: str) -> Layout:
        """Union two layouts channel by channel: channel i of one stays aligned with i of the other."""
        if len(a) != len(b):
            raise GraphError(f"{where}: elementwise op on {len(a)} and {len(b)} channels cannot be mapped")
        for (ca, _), (cb, _) in zip(a, b):
            ra, rb = self.find(ca), self.find(cb)
            if ra != rb:
                self.parent[rb] = ra
                self.places[ra].extend(self.places[rb])
                self.places[rb] = []
                if rb in self.fixed:
                    self.fixed.setdefault(ra, self.fixed[rb])
        return a

    def add_places(self, layout: Layout, module: str, kind: str) -> None:
        """Record that channel i of ``layout`` lives at index i of ``module``'s ``kind`` dimension."""
        for i, (cid, _) in enumerate(layout):
            self.places[self.find(cid)].append(Place(module, kind, i))

    def fix(self, layout: Layout | None, reason: str) -> None:
        for cid, _ in layout or []:
            self.fixed.setdefault(self.find(cid), reason)

    # -- walking --------------------------------------------------------------------------------
    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def layout_of(self, arg: Any) -> Layout | None:
        """The channel layout of a tensor node (None for non-tensors and tuples of tensors)."""
        layout = self.layouts.get(arg) if isinstance(arg, fx.Node) else None
        return layout if isinstance(layout, list) else None

    def consume(self, layout: Layout, module: str) -> None:
        """Record every channel of ``layout`` as input features of ``module``."""
        offset = 0
        for cid, expand in layout:
            self.places[self.find(cid)].append(Place(module, "in", offset, expand))
            offset += expand

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.layouts[node] = self.visit(node)

    def visit(self, node: fx.Node) -> Layout | None:
        shape = self.shape(node)
        if node.op == "placeholder":
            if shape is None or len(shape) < 2:
                return None
            layout = self.new_channels(shape[1])
            self.fix(layout, "model input")
            return layout
        if node.op == "output":
            for arg in _flatten_args(node.args):
                self.fix(self.layout_of(arg), "model output")
            return None
        if node.op == "get_attr":
            return None
        inputs = [self.layout_of(a) for a in _flatten_args(node.args) + _flatten_args(list(node.kwargs.values()))]
        tensor_inputs = [lay for lay in inputs if lay is not None]
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            handler = HANDLERS.get(type(module))
            if handler is not None:
                return handler(self, node)
            return self.visit_module(node, str(node.target), module, tensor_inputs, shape)
        target = node.target
        if target in HANDLERS:
            return HANDLERS[target](self, node)
        if node.op == "call_method":
            return self.visit_method(node, str(target), tensor_inputs, shape)
        return self.visit_function(node, target, tensor_inputs, shape)

    def visit_module(self, node: fx.Node, path: str, module: nn.Module, inputs: list[Layout],
                     shape: tuple[int, ...] | None) -> Layout | None:
        x = inputs[0] if inputs else None
        if isinstance(module, nn.Conv2d):
            assert x is not None
            if module.groups == 1:
                self.consume(x, path)
                return self.new_channels(module.out_channels, path, "out")
            if module.groups == module.in_channels == module.out_channels:
                self.add_places(x, path, "dw")
                return x
            raise GraphError(
                f"{path}: grouped convolution (groups={module.groups}) is not handled yet; "
                "add it to ignored layers or register a handler with edgeprune.prune.graph.register_handler"
            )
        if isinstance(module, nn.Linear):
            assert x is not None
            if shape is None or len(shape) != 2:
                raise GraphError(f"{path}: Linear on a tensor of rank {len(shape or ())} is not handled yet "
                                 "(only [batch, features]); add it to ignored layers")
            self.consume(x, path)
            return self.new_channels(module.out_features, path, "out")
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            assert x is not None
            self.add_places(x, path, "norm")
            return x
        if isinstance(module, nn.Flatten):
            return self.flatten(x, node, shape)
        if isinstance(module, PASS_MODULES):
            return x
        raise GraphError(
            f"{path}: module type {type(module).__name__} is not known to the pruning graph; add it to "
            "ignored layers or register a handler with edgeprune.prune.graph.register_handler"
        )

    def visit_function(self, node: fx.Node, target: Any, inputs: list[Layout],
                       shape: tuple[int, ...] | None) -> Layout | None:
        name = getattr(target, "__name__", str(target))
        if target in PASS_FUNCTIONS:
            return inputs[0] if inputs else None
        if target in ELEMENTWISE:
            return self.elementwise(node, inputs)
        if target is torch.cat:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            parts = [self.layout_of(a) for a in node.args[0]]  # type: ignore[union-attr]
            if dim not in (1, -3) or any(p is None for p in parts):
                raise GraphError(f"{node.name}: torch.cat along dim {dim} is not handled yet")
            return [ch for p in parts for ch in p or []]
        if target in (torch.split, torch.chunk, torch.tensor_split):
            return self.split(node, inputs)
        if target is operator.getitem and isinstance(self.layouts.get(node.args[0]), tuple):
            return self.layouts[node.args[0]][node.args[1]]  # type: ignore[index]
        if target is torch.flatten:
            return self.flatten(inputs[0] if inputs else None, node, shape)
        if target is operator.getitem or target is getattr:
            if inputs:
                raise GraphError(f"{node.name}: indexing a feature map ({name}) is not handled yet")
            return None
        if not inputs:
            return None
        raise GraphError(
            f"{node.name}: function {name} is not known to the pruning graph; register a handler with "
            "edgeprune.prune.graph.register_handler or add the surrounding module to ignored layers"
        )

    def visit_method(self, node: fx.Node, method: str, inputs: list[Layout],
                     shape: tuple[int, ...] | None) -> Layout | None:
        if method in PASS_METHODS:
            return inputs[0]
        if method in ELEMENTWISE_METHODS:
            return self.elementwise(node, inputs)
        if method == "size" or method == "dim":
            return None
        if method in ("split", "chunk"):
            return self.split(node, inputs)
        if method in ("flatten", "view", "reshape"):
            src = self.shape(node.args[0]) if isinstance(node.args[0], fx.Node) else None
            if src is not None and shape is not None and len(shape) == 2 and shape[0] == src[0]:
                return self.flatten(inputs[0], node, shape)
            if src == shape:
                return inputs[0]
        if method == "mean" and shape is not None and len(shape) >= 2:
            return inputs[0]
        raise GraphError(
            f"{node.name}: tensor method .{method}() is not known to the pruning graph; register a "
            "handler with edgeprune.prune.graph.register_handler"
        )

    def elementwise(self, node: fx.Node, inputs: list[Layout]) -> Layout | None:
        tensors = [a for a in _flatten_args(node.args) if isinstance(a, fx.Node) and self.layout_of(a) is not None]
        if len(tensors) < 2:
            return inputs[0] if inputs else None
        a, b = tensors[0], tensors[1]
        la, lb = self.layout_of(a), self.layout_of(b)
        sa, sb = self.shape(a), self.shape(b)
        assert la is not None and lb is not None
        # A broadcast operand with one channel (a scalar gate) couples nothing.
        if sb is not None and (len(sb) < 2 or sb[1] == 1):
            return la
        if sa is not None and (len(sa) < 2 or sa[1] == 1):
            return lb
        return self.couple(la, lb, node.name)

    def split(self, node: fx.Node, inputs: list[Layout]) -> tuple[Layout, ...]:
        """split/chunk along channels: a tuple of layouts, picked apart by getitem."""
        meta = node.meta.get("tensor_meta")
        dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
        if not inputs or dim not in (1, -3) or not isinstance(meta, (tuple, list)):
            raise GraphError(f"{node.name}: split/chunk along dim {dim} is not handled yet")
        parts, start = [], 0
        for part in meta:
            width = int(part.shape[1])
            parts.append(inputs[0][start:start + width])
            start += width
        return tuple(parts)

    def flatten(self, x: Layout | None, node: fx.Node, shape: tuple[int, ...] | None) -> Layout | None:
        src = self.shape(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if x is None or src is None:
            return x
        spatial = 1
        for d in src[2:]:
            spatial *= int(d)
        return [(cid, expand * spatial) for cid, expand in x]

    def groups(self) -> list[Group]:
        """Channels with the same set of (module, kind) members form one group."""
        by_key: dict[tuple[tuple[str, str], ...], Group] = {}
        for cid in range(len(self.parent)):
            places = self.places[cid]
            if self.find(cid) != cid or not places:
                continue
            key = tuple(sorted({(p.module, p.kind) for p in places}))
            group = by_key.get(key)
            if group is None:
                members = list(dict.fromkeys(Member(p.module, p.kind) for p in places))
                group = by_key[key] = Group(len(by_key), members)
            group.channels.append(places)
            if cid in self.fixed and group.fixed is None:
                group.fixed = self.fixed[cid]
        return list(by_key.values())


def _flatten_args(args: Any) -> list[Any]:
    flat: list[Any] = []
    for arg in args if isinstance(args, (tuple, list)) else [args]:
        if isinstance(arg, (tuple, list)):
            flat.extend(_flatten_args(arg))
        elif isinstance(arg, dict):
            flat.extend(_flatten_args(list(arg.values())))
        else:
            flat.append(arg)
    return flat


def trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """Trace with torch.fx and annotate every node with its output shape.

    Raises:
        GraphError: the model cannot be traced symbolically (data-dependent control flow).
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many exception types for untraceable code
        raise GraphError(
            f"torch.fx cannot trace {type(model).__name__}: {err}. Models with data-dependent control "
            "flow need a traceable wrapper"
        ) from err
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    return gm


def build_groups(model: nn.Module, example: torch.Tensor) -> list[Group]:
    """Return the coupled-channel groups of ``model`` (which is not modified).

    Raises:
        GraphError: an op the graph cannot map, naming the op, its module path and what to do.
    """
    was_training = model.training
    model.eval()
    try:
        builder = GraphBuilder(trace(model, example))
        builder.run()
    finally:
        model.train(was_training)
    return builder.groups()
