"""Coupled-channel groups of a traced model: which channels must be removed together.

Why torch.fx (symbolic_trace) rather than torch.export: fx keeps the user's ``nn.Module`` hierarchy
and calls ``call_module`` nodes by their module path, which is exactly what surgery edits, and it
traces in milliseconds without decomposing convolutions or BatchNorm into aten ops. torch.export
is stricter and more complete, but maps back to modules only through metadata and is an order of
magnitude slower on large models. Shapes come from one example forward pass (ShapeProp).

Every channel of every tensor gets an id, and a union-find couples ids that must stay aligned.
A tensor's :class:`Layout` holds, for each of its dimensions, either an array of channel ids (the
dimension carries channels that pruning may remove) or ``None`` (its size never changes: batch,
spatial and token dimensions, the model's input channels, anything the graph cannot resize).
A conv or linear output opens fresh ids; BN, activations and pooling pass them through; ``cat``
concatenates them and ``split``/``chunk`` slice them; an elementwise op *couples* its operands
dimension by dimension. Reshapes (flatten into a linear layer, the channel shuffle's
``view -> transpose -> view``, attention heads) are followed by reshaping the id arrays: a
flatten of ``[C, H, W]`` gives each channel H*W consecutive input features of the linear layer.

Some structures constrain *which* channels may go rather than coupling two tensors. A grouped
convolution (or a GroupNorm, or ``chunk``) must lose the same number of channels in every group,
so the i-th channel of every group is coupled ("per group position", as in Torch-Pruning); a
reshape to a *constant* number of rows (``view(N, groups, -1, H, W)``) couples the channels of
each column across the rows. Whatever cannot be resized is *fixed*: the model's outputs, a
reshape to a constant channel count, the embedding width of an attention module.

Finally, channels that live in the same set of (module, kind) places form one group: the unit a
criterion ranks and surgery cuts.

Example, a residual block (``out = relu(bn2(conv2(relu(bn1(conv1(x))))) + x)``)::

    group A: x's producer.out, its bn | conv1.in | conv2.out, bn2 (coupled by the add) | next.in
    group B: conv1.out, bn1 | conv2.in

Removing channel 3 of group A removes output 3 of x's producer and of conv2, entry 3 of both
BatchNorms, and input 3 of conv1 and of every later consumer.

The value types (:class:`Layout`, :class:`Group`, ...) live in :mod:`edgeprune.prune.values`; the
op handlers, in one table, in :mod:`edgeprune.prune.handlers`, where :func:`register_handler` adds
or overrides one (it is re-exported here, where the graph's error messages point).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from edgeprune.errors import GraphError
from edgeprune.prune.handlers import HANDLERS, LEAF_MODULES, register_handler
from edgeprune.prune.values import (
    Group,
    Handler,
    Ids,
    Layout,
    Member,
    ParamRef,
    Place,
    Value,
    describe,
    free,
    free_like,
    module_path,
)

__all__ = [
    "HANDLERS",
    "GraphBuilder",
    "Group",
    "Layout",
    "Member",
    "Place",
    "build_groups",
    "register_handler",
    "trace",
]


class GraphBuilder:
    """Walks an fx graph once and records channels, their couplings and their places.

    Args:
        gm: the traced model, its nodes annotated with shapes.
        ignore: module paths whose unknown ops are mapped as opaque (inputs and outputs fixed)
            instead of raising.
        model: the model that was traced. Module lookups go to it, because the GraphModule
            replaces the containers of directly read parameters with plain ``nn.Module`` stubs.
    """

    def __init__(self, gm: fx.GraphModule, ignore: Sequence[str] = (), model: nn.Module | None = None) -> None:
        source = model if model is not None else gm
        self.gm = gm
        self.modules = dict(source.named_modules())
        self.tensors = {name for name, _ in source.named_parameters()} | {name for name, _ in source.named_buffers()}
        self.ignore = tuple(ignore)
        self.values: dict[fx.Node, Value] = {}
        self.parent: list[int] = []
        self.places: list[list[Place]] = []
        self.fixed: dict[int, str] = {}
        # Ids already registered at a (module, kind, dim): a module called twice shares its channels.
        self.sites: dict[tuple[str, str, int], Ids] = {}
        self.node: fx.Node | None = None

    # -- channels (a union-find over every channel of every tensor) --------------------------
    def new_ids(self, count: int) -> Ids:
        """``count`` fresh channel ids that live nowhere yet."""
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.places.extend([] for _ in range(count))
        return np.arange(start, start + count, dtype=np.int64)

    def fixed_ids(self, count: int, reason: str) -> Ids:
        """Fresh ids for channels that exist but can never be removed."""
        ids = self.new_ids(count)
        self.fix(ids, reason)
        return ids

    def new_channels(self, count: int, module: str, kind: str = "out") -> Ids:
        """Open ``count`` channels living at index i of ``module``'s ``kind`` dimension.

        A module called twice (weight sharing) gets the same ids both times.
        """
        key = (module, kind, 0)
        if key in self.sites and len(self.sites[key]) == count:
            return self.sites[key]
        ids = self.new_ids(count)
        self.add_places(ids, module, kind)
        return ids

    def find(self, cid: int) -> int:
        parent = self.parent
        while parent[cid] != cid:
            parent[cid] = parent[parent[cid]]
            cid = parent[cid]
        return cid

    def roots(self, ids: np.ndarray) -> np.ndarray:
        """The union-find root of every id in an array of any shape."""
        unique, inverse = np.unique(ids, return_inverse=True)
        mapped = np.array([self.find(int(c)) for c in unique], dtype=np.int64)
        return mapped[inverse].reshape(ids.shape)

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if len(self.places[ra]) < len(self.places[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.places[ra].extend(self.places[rb])
        self.places[rb] = []
        if rb in self.fixed:
            self.fixed.setdefault(ra, self.fixed.pop(rb))

    def couple(self, a: Ids, b: Ids, where: str = "") -> Ids:
        """Union two id arrays index by index: channel i of one stays aligned with i of the other."""
        if len(a) != len(b):
            raise GraphError(f"{where or self.where()}: cannot align {len(a)} channels with {len(b)}")
        pairs = np.unique(np.stack([np.asarray(a), np.asarray(b)], axis=1), axis=0)
        for x, y in pairs.tolist():
            if x != y:
                self._union(x, y)
        return a

    def couple_along(self, block: np.ndarray, axis: int) -> None:
        """Couple the ids of ``block`` along ``axis``: entry j of every slice is one channel."""
        moved = np.moveaxis(block, axis, 0)
        first = moved[0].reshape(-1)
        for other in moved[1:]:
            self.couple(first, other.reshape(-1))

    def fix(self, ids: Layout | np.ndarray | None, reason: str) -> None:
        """Mark channels as never removable; ``reason`` says why (reported on the group)."""
        if ids is None:
            return
        arrays = [d for d in ids.dims if d is not None] if isinstance(ids, Layout) else [ids]
        for array in arrays:
            for cid in np.unique(array).tolist():
                self.fixed.setdefault(self.find(cid), reason)

    def add_places(self, ids: Ids, module: str, kind: str, dim: int = 0) -> None:
        """Record that channel ``ids[i]`` lives at index i of ``module``'s ``kind`` dimension."""
        key = (module, kind, dim)
        if key in self.sites:
            self.couple(self.sites[key], ids)
            return
        self.sites[key] = ids
        for i, cid in enumerate(ids.tolist()):
            self.places[self.find(cid)].append(Place(module, kind, i, 1, dim))

    def consume(self, ids: Ids, module: str) -> None:
        """Record every feature of ``ids`` as an input of ``module`` (runs of one id as one place)."""
        key = (module, "in", 0)
        if key in self.sites:
            self.couple(self.sites[key], ids)
            return
        self.sites[key] = ids
        values = ids.tolist()
        start = 0
        for i in range(1, len(values) + 1):
            if i == len(values) or values[i] != values[start]:
                self.places[self.find(values[start])].append(Place(module, "in", start, i - start))
                start = i

    def param_ids(self, path: str, dim: int, size: int) -> Ids:
        """The channel ids of dimension ``dim`` of the parameter at ``path``."""
        key = (path, "param", dim)
        if key not in self.sites:
            self.add_places(self.new_ids(size), path, "param", dim)
        return self.sites[key]

    def join(self, entries: Sequence[tuple[Ids | None, int]], reason: str) -> Ids | None:
        """Align one dimension shared by several tensors (each ``(ids or None, size)``).

        Tensors broadcast along it (size 1 against a larger size) take no part. If every
        remaining tensor carries ids they are coupled; if one of them cannot change size, the
        others' channels are fixed, because removing them would break the alignment.
        """
        full = max((size for _, size in entries), default=1)
        taking = [ids for ids, size in entries if size == full]
        carried = [ids for ids in taking if ids is not None]
        if not carried:
            return None
        if len(carried) < len(taking):
            for ids in carried:
                self.fix(ids, reason)
            return None
        for other in carried[1:]:
            self.couple(carried[0], other)
        return carried[0]

    # -- values -------------------------------------------------------------------------------
    def shape(self, node: Any) -> tuple[int, ...] | None:
        """The example-pass shape of a tensor node (None for non-tensors and tuples)."""
        if not isinstance(node, fx.Node):
            return None
        meta = node.meta.get("tensor_meta")
        return tuple(int(s) for s in meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def value_of(self, arg: Any) -> Value:
        return self.values.get(arg) if isinstance(arg, fx.Node) else None

    def layout_of(self, arg: Any) -> Layout | None:
        """The channel layout of a tensor node (None for non-tensors and tuples of tensors).

        A parameter read directly comes back as a layout without channels: ops that know how to
        slice parameters ask :meth:`resolve_param` instead.
        """
        value = self.value_of(arg)
        if isinstance(value, ParamRef):
            return free(value.shape)
        return value if isinstance(value, Layout) else None

    def resolve_param(
        self, ref: ParamRef, against: Sequence[Layout], out_shape: tuple[int, ...], skip: int | None = None
    ) -> Layout:
        """Turn a parameter into a layout, opening channels where it meets carried dimensions.

        A parameter dimension becomes a channel dimension when it is as long as the broadcast
        result and some tensor operand carries ids there (``layer_scale`` of shape [C, 1, 1]
        times a [N, C, H, W] map). ``skip`` is an output dimension to leave alone (cat's axis).
        """
        nd = len(out_shape)
        dims: list[Ids | None] = []
        for k, size in enumerate(ref.shape):
            d = k + nd - len(ref.shape)
            src = ref.source_dims[k]
            carried = any(
                lay.dims[d - nd + lay.ndim] is not None and lay.shape[d - nd + lay.ndim] == size
                for lay in against
                if 0 <= d - nd + lay.ndim < lay.ndim
            )
            if ref.path is not None and src is not None and d != skip and size == out_shape[d] and carried:
                dims.append(self.param_ids(ref.path, src, size))
            else:
                dims.append(None)
        return Layout(tuple(dims), ref.shape)

    def where(self, node: fx.Node | None = None) -> str:
        """A node's description for messages: its op and the module path it belongs to."""
        node = node or self.node
        if node is None:
            return "graph"
        return f"{describe(node, self.modules)} at {module_path(node) or '<model>'}"

    def opaque(self, node: fx.Node, reason: str) -> Value:
        """Map an op whose channels must not change: fix its inputs, output unprunable tensors."""
        for arg in _flatten_args((node.args, node.kwargs)):
            value = self.value_of(arg)
            for lay in _flatten_args(value) if isinstance(value, tuple) else [value]:
                if isinstance(lay, Layout):
                    self.fix(lay, reason)
        return free_like(node)

    # -- walking ------------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.node = node
            try:
                self.values[node] = self.visit(node)
            except GraphError:
                raise
            except Exception as err:  # a handler's bug must surface as an explained error
                raise GraphError(
                    f"{self.where(node)}: mapping this op failed ({type(err).__name__}: {err}); add "
                    f"'{module_path(node) or type(self.gm).__name__}' to the ignored layers, or register a "
                    "handler with edgeprune.prune.graph.register_handler"
                ) from err
        self.node = None

    def in_ignored(self, node: fx.Node) -> bool:
        path = module_path(node)
        return any(path == p or path.startswith(p + ".") for p in self.ignore)

    def visit(self, node: fx.Node) -> Value:
        if node.op == "placeholder":
            shape = self.shape(node)
            return free(shape) if shape is not None else None
        if node.op == "output":
            for arg in _flatten_args(node.args):
                value = self.value_of(arg)
                for lay in _flatten_args(value) if isinstance(value, tuple) else [value]:
                    if isinstance(lay, Layout):
                        self.fix(lay, "model output")
            return None
        if node.op == "get_attr":
            shape = self.shape(node)
            if shape is None:
                return None
            path = str(node.target) if str(node.target) in self.tensors else None
            return ParamRef(path, shape, tuple(range(len(shape))))
        handler = self.handler_for(node)
        if handler is not None:
            return handler(self, node)
        if not any(
            isinstance(v, (Layout, ParamRef))
            for a in _flatten_args((node.args, node.kwargs))
            for v in _flatten_args([self.value_of(a)])
        ):
            return free_like(node)  # shape arithmetic, or a tensor created inside the forward
        if self.in_ignored(node):
            return self.opaque(node, f"inside ignored layer {module_path(node)}")
        path = module_path(node)
        raise GraphError(
            f"{describe(node, self.modules)} at {path or '<model>'} (node {node.name}) is not known to the "
            f"pruning graph: add '{path or type(self.gm).__name__}' to the ignored layers, or register a "
            "handler for it with edgeprune.prune.graph.register_handler"
        )

    def handler_for(self, node: fx.Node) -> Handler | None:
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            for cls in type(module).__mro__:
                if cls in HANDLERS:
                    return HANDLERS[cls]
            return None
        if node.op == "call_method":
            return HANDLERS.get(str(node.target))
        try:
            return HANDLERS.get(node.target)
        except TypeError:  # unhashable target
            return None

    def groups(self) -> list[Group]:
        """Channels with the same set of (module, kind) members (and fixedness) form one group."""
        by_key: dict[tuple[Any, ...], Group] = {}
        for cid in range(len(self.parent)):
            places = self.places[cid]
            if self.find(cid) != cid or not places:
                continue
            reason = self.fixed.get(cid)
            key = (tuple(sorted({(p.module, p.kind) for p in places})), reason is not None)
            group = by_key.get(key)
            if group is None:
                members = list(dict.fromkeys(Member(p.module, p.kind) for p in places))
                group = by_key[key] = Group(len(by_key), members, fixed=reason)
            group.channels.append(places)
        return list(by_key.values())


def _flatten_args(args: Any) -> list[Any]:
    flat: list[Any] = []
    for arg in args if isinstance(args, (tuple, list)) else [args]:
        if isinstance(arg, (tuple, list)):
            flat.extend(_flatten_args(arg))
        elif isinstance(arg, dict):
            flat.extend(_flatten_args(list(arg.values())))
        elif isinstance(arg, slice):
            flat.extend(_flatten_args([arg.start, arg.stop, arg.step]))
        else:
            flat.append(arg)
    return flat


# Module types the tracer keeps as leaves even when subclassed, as long as the subclass keeps the
# base forward (a subclass that overrides forward is traced through, since its math may differ).
_LEAF_BASES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)


class _Tracer(fx.Tracer):
    """fx tracer that keeps ignored containers and modules with registered handlers as leaves."""

    def __init__(self, leaf_paths: Iterable[str]) -> None:
        super().__init__()
        self.leaf_paths = set(leaf_paths)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_paths or any(cls in LEAF_MODULES for cls in type(m).__mro__[:-1]):
            return True
        for base in _LEAF_BASES:
            if isinstance(m, base) and type(m).forward is base.forward:
                return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module, example: torch.Tensor, ignore: Sequence[str] = ()) -> fx.GraphModule:
    """Trace with torch.fx and annotate every node with its output shape.

    Args:
        model: the model (not modified).
        example: an input batch; only shapes matter.
        ignore: module paths traced as opaque leaves when they are containers, so that a block
            fx cannot trace, or whose ops the graph does not know, can be left out of pruning.

    Raises:
        GraphError: the model cannot be traced symbolically (data-dependent control flow).
    """
    modules = dict(model.named_modules())
    containers = [p for p in ignore if p in modules and not isinstance(modules[p], _LEAF_BASES)]
    try:
        graph = _Tracer(containers).trace(model)
        gm = fx.GraphModule(model, graph, type(model).__name__)
    except Exception as err:  # fx raises many exception types for untraceable code
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GraphError(
            f"torch.fx cannot trace {type(model).__name__}: {first}. Data-dependent control flow needs a "
            "traceable wrapper; or add the offending block to the ignored layers so it is traced as a leaf"
        ) from err
    try:
        # ShapeProp prints a traceback before re-raising; the GraphError below says it in one line.
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm).propagate(example)
    except Exception as err:  # the example does not fit the model
        cause = err.__cause__ or err
        node = str(err).split("node=", 1)[-1].split(" ", 1)[0] if "node=" in str(err) else "?"
        raise GraphError(
            f"the example input {tuple(example.shape)} does not run through "
            f"{type(model).__name__} (at node {node}): {cause}"
        ) from err
    return gm


def build_groups(model: nn.Module, example: torch.Tensor, ignore: Sequence[str] = ()) -> list[Group]:
    """Return the coupled-channel groups of ``model`` (which is not modified).

    Args:
        model: the model; traced in eval mode and put back in its mode.
        example: an input batch (batch size 2 or more keeps the batch dimension unambiguous).
        ignore: module paths whose unknown ops are mapped as opaque instead of raising (see
            :func:`trace`).

    Raises:
        GraphError: an op the graph cannot map, naming the op, its module path and what to do.
    """
    was_training = model.training
    model.eval()
    try:
        builder = GraphBuilder(trace(model, example, ignore), ignore, model)
        builder.run()
    finally:
        model.train(was_training)
    return builder.groups()
