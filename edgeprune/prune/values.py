"""The value types of the channel graph, apart from the builder that makes them.

Every tensor of a traced model gets a :class:`Layout` (per dimension, the channel ids it carries,
or None), parameters read inside a forward a :class:`ParamRef`, ``x.size(d)`` a :class:`SizeOf`;
channels that must be cut together end in one :class:`Group` of :class:`Member` places. The op
handlers (:mod:`edgeprune.prune.handlers`) and the builder (:mod:`edgeprune.prune.graph`) both use
these; neither is needed to read them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import fx, nn

Ids = np.ndarray
"""A 1-D int64 array: the channel id of each index of one tensor dimension."""


@dataclass(frozen=True)
class Place:
    """Where one channel lives in one module.

    Attributes:
        module: the module path (``layer1.conv2``); for kind ``param``, the parameter's path
            (``encoder.pos_embedding``).
        kind: ``out`` (weight dim 0, bias), ``norm`` (affine and running stats, LayerNorm's
            normalized width), ``in`` (conv weight dim 1, or linear input features), ``dw``
            (depthwise conv: its groups, inputs and outputs together), or ``param`` (a parameter
            or buffer used directly in the forward, such as a layer scale or a position embedding).
        index: the channel's index in that dimension (for ``in``: its first input feature).
        expand: for ``in``, consecutive features per channel (H*W when a flatten precedes a linear).
        dim: for ``param``, the parameter dimension the index is in.
    """

    module: str
    kind: str
    index: int
    expand: int = 1
    dim: int = 0


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

    A "channel" may hold several places of one module: a grouped convolution couples the i-th
    channel of each of its groups, so one channel of the group is one index in every conv group.
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


@dataclass(frozen=True)
class Layout:
    """The channel ids of one tensor, per dimension.

    Attributes:
        dims: for each dimension, the id of each index (a 1-D array as long as the dimension), or
            None when the dimension carries no prunable channel and its size never changes.
        shape: the tensor's shape in the example pass.
    """

    dims: tuple[Ids | None, ...]
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def carried(self) -> list[int]:
        """The dimensions that carry channel ids."""
        return [d for d, ids in enumerate(self.dims) if ids is not None]

    def replace(self, dim: int, ids: Ids | None, size: int | None = None) -> Layout:
        """This layout with dimension ``dim`` replaced (and resized)."""
        dims = list(self.dims)
        dims[dim] = ids
        shape = list(self.shape)
        if size is not None:
            shape[dim] = size
        elif ids is not None:
            shape[dim] = len(ids)
        return Layout(tuple(dims), tuple(shape))


@dataclass(frozen=True)
class ParamRef:
    """A parameter or buffer read directly in the forward (``get_attr``), possibly viewed.

    Its dimensions become channel dimensions lazily, when an op combines it with a tensor whose
    matching dimension carries channels (``x * self.layer_scale``, ``x + self.pos_embedding``).

    Attributes:
        path: its path in the model; None for a constant that fx created (it cannot be sliced).
        shape: the current (viewed) shape.
        source_dims: for each current dimension, the parameter dimension it shows (None for a
            dimension a view inserted).
    """

    path: str | None
    shape: tuple[int, ...]
    source_dims: tuple[int | None, ...]


@dataclass(frozen=True)
class SizeOf:
    """An integer computed from tensor sizes (``C = x.size(1)``, ``H // p``), with where it came from.

    A reshape whose size argument is such a value follows that tensor after pruning, so if the
    reshaped dimension cannot change, neither may the channels it was read from.
    """

    sources: tuple[tuple[Layout, int], ...]


Value = Layout | ParamRef | SizeOf | tuple[Any, ...] | None
Handler = Callable[[Any, fx.Node], Any]
"""``handler(builder, node) -> value``: how one op moves channel ids (see :mod:`edgeprune.prune.handlers`)."""


def free(shape: Sequence[int]) -> Layout:
    """A layout with no prunable channel (every dimension keeps its size)."""
    return Layout((None,) * len(shape), tuple(int(s) for s in shape))


def free_like(node: fx.Node) -> Value:
    """Unprunable layouts shaped like the node's result (a tuple for tuple results)."""
    meta = node.meta.get("tensor_meta")
    if meta is None:
        return None
    if hasattr(meta, "shape"):
        return free(meta.shape)
    if isinstance(meta, (tuple, list)):
        return tuple(free(m.shape) if hasattr(m, "shape") else None for m in meta)
    return None


def module_path(node: fx.Node) -> str:
    """The path of the module a node belongs to ('' for the top level)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        last = list(stack.values())[-1]
        return str(last[0] if isinstance(last, tuple) else last)
    return ""


def describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """A human name for a node's op: a module type, a function or a tensor method."""
    if node.op == "call_module":
        return f"module {type(modules[str(node.target)]).__name__}"
    if node.op == "call_method":
        return f"tensor method .{node.target}()"
    target = node.target
    name = getattr(target, "__name__", str(target))
    owner = getattr(target, "__module__", None)
    return f"function {owner}.{name}" if owner else f"function {name}"
