"""Built-in op handlers of the pruning graph: how each module, function and tensor method moves
channel ids from its inputs to its output.

A handler takes the :class:`~edgeprune.prune.graph.GraphBuilder` and the fx node and returns the
node's value: a :class:`~edgeprune.prune.values.Layout` for a tensor, a tuple for a tuple result,
None for a non-tensor. The rules, by family:

* producers (conv, linear) consume their input channels and open new output channels; a grouped
  conv couples the i-th channel of every group so all groups keep the same width, a depthwise
  conv carries its input channels through (its groups shrink with them);
* norms (BatchNorm, GroupNorm, LayerNorm over the channel axis) add a place to the channels they
  see; GroupNorm couples the i-th channel of every group, like a grouped conv;
* elementwise ops and ``cat``/``stack`` align their operands dimension by dimension;
  ``chunk`` couples the i-th channel of every chunk; reshapes and permutes move ids around;
* ops whose channel count is baked into the forward (a reshape to a constant size, ``split``
  with constant sizes, ``nn.MultiheadAttention``'s embedding width) fix the channels they touch,
  with the reason, so that they are never pruned and the pruned model still runs.

Anything not listed here raises a GraphError that names the op, its module path and the two ways
out: ignore the layer, or :func:`~edgeprune.prune.graph.register_handler`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeprune.errors import GraphError
from edgeprune.prune.values import Handler, Ids, Layout, ParamRef, SizeOf, Value, free, free_like

if TYPE_CHECKING:  # the builder calls the handlers; they only need its type
    from edgeprune.prune.graph import GraphBuilder

HANDLERS: dict[Any, Handler] = {}
"""The one handler table: module type, function, or tensor-method name -> handler. Built-ins are
registered below; :func:`register_handler` adds or replaces one."""
LEAF_MODULES: set[type[nn.Module]] = set()
"""Module types registered by users: traced as leaves, so their forward is not looked into."""


def register_handler(target: Any, handler: Handler) -> None:
    """Teach the graph a module type, function or tensor-method name it does not know.

    The handler receives the builder and the node and returns the output :class:`Layout` (or a
    tuple of them for a tuple result, or None for a non-tensor result). Most handlers are one
    line: ``builder.layout_of(node.args[0])`` for an op that leaves channels where they are, or
    ``builder.opaque(node, "why")`` for one whose channels must not change. The builder also
    offers ``new_channels``, ``consume``, ``add_places``, ``couple`` and ``fix``. A registered
    module type is traced as a leaf, so its forward is not looked into.
    """
    HANDLERS[target] = handler
    if isinstance(target, type) and issubclass(target, nn.Module):
        LEAF_MODULES.add(target)


# -- small helpers ------------------------------------------------------------------------------
def _multi(meta: Any) -> bool:
    """Whether tensor metadata describes a tuple of tensors (TensorMetadata is itself a tuple)."""
    return isinstance(meta, (tuple, list)) and not hasattr(meta, "shape")


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _ndim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _is_const(value: Any) -> bool:
    """A size argument fixed in the forward's code (an int literal or attribute, not -1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value != -1


def _sizes(args: Sequence[Any]) -> list[Any] | None:
    """The size arguments of view/reshape/expand: varargs or one sequence; None if unknown."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return list(args[0])
    if len(args) == 1 and isinstance(args[0], fx.Node):
        return None
    return list(args)


def _input(b: GraphBuilder, node: fx.Node) -> Layout | None:
    return b.layout_of(node.args[0] if node.args else next(iter(node.kwargs.values()), None))


def _fit(b: GraphBuilder, x: Layout, shape: tuple[int, ...], why: str) -> Layout:
    """``x`` resized to ``shape``: dimensions that change size cannot carry channels."""
    if len(shape) != x.ndim:
        b.fix(x, why)
        return free(shape)
    dims: list[Ids | None] = []
    for ids, old, new in zip(x.dims, x.shape, shape):
        if ids is not None and old != new:
            b.fix(ids, why)
            ids = None
        dims.append(ids)
    return Layout(tuple(dims), shape)


def passthrough(b: GraphBuilder, node: fx.Node) -> Value:
    """Ops that keep channels where they are: activations, dropout, pooling, interpolation."""
    x = _input(b, node)
    shape = b.shape(node)
    if x is None or shape is None:
        return free_like(node)
    return _fit(b, x, shape, f"{b.where(node)} changes the size of a channel dimension")


def _reg(targets: Sequence[Any], handler: Handler) -> None:
    for target in targets:
        HANDLERS[target] = handler


# -- producers ----------------------------------------------------------------------------------
def conv(b: GraphBuilder, node: fx.Node) -> Value:
    path = str(node.target)
    module = b.modules[path]
    assert isinstance(module, nn.modules.conv._ConvNd)
    x = _input(b, node)
    shape = b.shape(node)
    if x is None or shape is None:
        return free_like(node)
    for d in x.carried():
        if d != 1:
            b.fix(x.dims[d], f"{b.where(node)} mixes a dimension that carries channels")
    ids = x.dims[1]
    cin, cout, groups = module.in_channels, module.out_channels, module.groups
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        raise GraphError(
            f"{b.where(node)}: transposed convolutions are not handled yet; add "
            f"'{path}' to the ignored layers or register a handler"
        )
    out: Ids
    if groups == 1:
        if ids is not None:
            b.consume(ids, path)
        out = b.new_channels(cout, path, "out")
    elif groups == cin:
        # Depthwise: output j reads input j // k; pruning an input removes its whole conv group.
        if ids is None:
            ids = b.fixed_ids(cin, f"{b.where(node)}: depthwise input channels that cannot change")
        out = np.repeat(ids, cout // cin)
        b.add_places(out, path, "dw")
    else:
        # Grouped: every group must keep the same width, so the i-th channel of each is coupled.
        if ids is not None:
            b.consume(ids, path)
            b.couple_along(ids.reshape(groups, cin // groups), 0)
        out = b.new_channels(cout, path, "out")
        b.couple_along(out.reshape(groups, cout // groups), 0)
    dims: list[Ids | None] = [None] * len(shape)
    dims[1] = out
    return Layout(tuple(dims), shape)


def linear(b: GraphBuilder, node: fx.Node) -> Value:
    """Linear acts on the last dimension; other dimensions (tokens, channels) pass through."""
    path = str(node.target)
    module = b.modules[path]
    assert isinstance(module, nn.Linear)
    return _linear(b, node, path, module.out_features)


def _linear(b: GraphBuilder, node: fx.Node, path: str, out_features: int) -> Value:
    x = _input(b, node)
    shape = b.shape(node)
    if x is None or shape is None:
        return free_like(node)
    if x.dims[-1] is not None:
        b.consume(x.dims[-1], path)
    return Layout(x.dims[:-1] + (b.new_channels(out_features, path, "out"),), shape)


def functional_linear(b: GraphBuilder, node: fx.Node) -> Value:
    """``F.linear(x, self.fc.weight, ...)``: mapped as the Linear module that owns the weight."""
    weight = b.value_of(_arg(node, 1, "weight"))
    if isinstance(weight, ParamRef) and weight.path is not None and weight.path.endswith(".weight"):
        owner = weight.path.rsplit(".", 1)[0]
        module = b.modules.get(owner)
        bias = _arg(node, 2, "bias")
        bias_ok = bias is None or getattr(bias, "target", None) == f"{owner}.bias"
        if isinstance(module, nn.Linear) and weight.source_dims == (0, 1) and bias_ok:
            return _linear(b, node, owner, module.out_features)
    return b.opaque(node, f"{b.where(node)}: F.linear with a weight that is not a Linear module's")


# -- norms --------------------------------------------------------------------------------------
def batchnorm(b: GraphBuilder, node: fx.Node) -> Value:
    path = str(node.target)
    module = b.modules[path]
    x = _input(b, node)
    if x is None:
        return free_like(node)
    ids = x.dims[1]
    has_state = getattr(module, "weight", None) is not None or getattr(module, "running_mean", None) is not None
    if ids is not None and has_state:
        b.add_places(ids, path, "norm")
    return x


def groupnorm(b: GraphBuilder, node: fx.Node) -> Value:
    path = str(node.target)
    module = b.modules[path]
    assert isinstance(module, nn.GroupNorm)
    x = _input(b, node)
    if x is None:
        return free_like(node)
    ids = x.dims[1]
    if ids is None:
        return x
    groups, channels = module.num_groups, module.num_channels
    b.add_places(ids, path, "norm")
    if 1 < groups < channels:
        # Every group normalizes the same number of channels: couple the i-th of each group.
        b.couple_along(ids.reshape(groups, channels // groups), 0)
    return x


def layernorm(b: GraphBuilder, node: fx.Node) -> Value:
    path = str(node.target)
    module = b.modules[path]
    assert isinstance(module, nn.LayerNorm)
    x = _input(b, node)
    if x is None:
        return free_like(node)
    width = len(module.normalized_shape)
    if width == 1:
        if x.dims[-1] is not None:
            b.add_places(x.dims[-1], path, "norm")
        return x
    for d in range(x.ndim - width, x.ndim):
        b.fix(x.dims[d], f"{b.where(node)} normalizes over several dimensions")
    return _fit(b, x, x.shape, "")


def functional_layer_norm(b: GraphBuilder, node: fx.Node) -> Value:
    """``F.layer_norm(x, shape, self.weight, self.bias)`` inside a LayerNorm subclass (LayerNorm2d).

    The normalized width is read from the module at run time, so surgery on the owning LayerNorm
    keeps it consistent; any other use of a constant width fixes the channels.
    """
    x = _input(b, node)
    if x is None:
        return free_like(node)
    normalized = _arg(node, 1, "normalized_shape")
    weight = b.value_of(_arg(node, 2, "weight"))
    ids = x.dims[-1]
    if ids is None:
        return x
    if isinstance(weight, ParamRef) and weight.path is not None and weight.path.endswith(".weight"):
        owner = weight.path.rsplit(".", 1)[0]
        module = b.modules.get(owner)
        if isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == tuple(normalized or ()):
            b.add_places(ids, owner, "norm")
            return x
    b.fix(ids, f"{b.where(node)}: layer_norm over a constant width")
    return x


def multihead_attention(b: GraphBuilder, node: fx.Node) -> Value:
    """nn.MultiheadAttention: its embedding width is tied to its heads, so its channels stay."""
    return b.opaque(node, f"{b.where(node)}: the embedding width of nn.MultiheadAttention is tied to its heads")


# -- elementwise and broadcasting ---------------------------------------------------------------
def broadcast(b: GraphBuilder, layouts: Sequence[Layout], shape: tuple[int, ...], reason: str) -> Layout:
    """Align tensors that broadcast against each other, dimension by dimension."""
    nd = len(shape)
    dims: list[Ids | None] = []
    for d in range(nd):
        entries = [
            (lay.dims[d - nd + lay.ndim], lay.shape[d - nd + lay.ndim]) for lay in layouts if d - nd + lay.ndim >= 0
        ]
        dims.append(b.join(entries, reason))
    return Layout(tuple(dims), shape)


def elementwise(b: GraphBuilder, node: fx.Node) -> Value:
    values = [b.value_of(a) for a in _operands(node)]
    sizes = [v for v in values if isinstance(v, SizeOf)]
    if sizes and not any(isinstance(v, (Layout, ParamRef)) for v in values):
        return SizeOf(tuple(src for size in sizes for src in size.sources))
    shape = b.shape(node)
    if shape is None:
        return free_like(node)
    layouts = [v for v in values if isinstance(v, Layout)]
    params = [v for v in values if isinstance(v, ParamRef)]
    layouts += [b.resolve_param(p, layouts, shape) for p in params]
    reason = f"{b.where(node)} combines it with a tensor whose size cannot change"
    return broadcast(b, layouts, shape, reason)


def _operands(node: fx.Node) -> list[Any]:
    out = []
    for arg in list(node.args) + list(node.kwargs.values()):
        if isinstance(arg, fx.Node):
            out.append(arg)
    return out


def reduction(b: GraphBuilder, node: fx.Node) -> Value:
    """mean/sum/amax/... over some dimensions: those leave the layout; the rest stay."""
    second = _arg(node, 1, "dim")
    if isinstance(second, fx.Node) and isinstance(b.value_of(second), (Layout, ParamRef)):
        return elementwise(b, node)  # torch.max(a, b) is elementwise
    x = _input(b, node)
    if x is None:
        return free_like(node)
    is_norm = node.target in (torch.norm, "norm")  # norm(x, p, dim, keepdim): dim is the third argument
    dim = _arg(node, 2 if is_norm else 1, "dim", node.kwargs.get("axis"))
    if dim is None:
        return free_like(node)  # a reduction to a scalar
    if isinstance(dim, fx.Node):
        return b.opaque(node, f"{b.where(node)}: a reduction over dimensions known only at run time")
    meta: Any = node.meta.get("tensor_meta")
    out_ndim = len(meta[0].shape) if _multi(meta) else len(b.shape(node) or ())
    keepdim = out_ndim == x.ndim  # read from the result: keepdim's position differs between ops
    reduced = {_ndim(int(d), x.ndim) for d in (dim if isinstance(dim, (list, tuple)) else [dim])}
    dims: list[Ids | None] = []
    for k in range(x.ndim):
        if k not in reduced:
            dims.append(x.dims[k])
        elif keepdim:
            dims.append(None)
    if _multi(meta):
        return tuple(_layout_or_free(dims, m.shape) for m in meta)
    shape = b.shape(node)
    return _layout_or_free(dims, shape) if shape is not None else free_like(node)


def _layout_or_free(dims: list[Ids | None], shape: Sequence[int]) -> Layout:
    shape = tuple(int(s) for s in shape)
    if len(dims) != len(shape) or any(d is not None and len(d) != s for d, s in zip(dims, shape)):
        return free(shape)
    return Layout(tuple(dims), shape)


# -- reshapes -----------------------------------------------------------------------------------
def _reshape_groups(src: Sequence[int], dst: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of source and destination dimensions whose products match."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) or j < len(dst):
        a1 = i < len(src) and src[i] == 1
        b1 = j < len(dst) and dst[j] == 1
        if a1 or b1:
            groups.append(([i] if a1 else [], [j] if b1 else []))
            i, j = i + int(a1), j + int(b1)
            continue
        if i >= len(src) or j >= len(dst):
            return None
        ins, outs, pa, pb = [i], [j], src[i], dst[j]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                if i >= len(src):
                    return None
                pa *= src[i]
                ins.append(i)
                i += 1
            else:
                if j >= len(dst):
                    return None
                pb *= dst[j]
                outs.append(j)
                j += 1
        groups.append((ins, outs))
    return groups


def reshape(b: GraphBuilder, x: Layout, shape: tuple[int, ...], pinned: Sequence[bool], where: str) -> Layout:
    """Move channel ids through a reshape.

    Within each run of dimensions that the reshape merges or splits, the ids are laid out as the
    tensor's elements are and read back in the new shape. A dimension whose size is a constant in
    the code (``pinned``) must keep it, so the channels in each of its slices are coupled (the
    ``view(N, groups, -1, H, W)`` of a channel shuffle); exactly one dimension of the run may then
    carry channels. Otherwise the channels are fixed.
    """
    groups = _reshape_groups(x.shape, shape)
    if groups is None:
        b.fix(x, f"{where}: a reshape the graph cannot follow")
        return free(shape)
    dims: list[Ids | None] = [None] * len(shape)
    for ins, outs in groups:
        carried = [k for k in ins if x.dims[k] is not None]
        if not carried:
            continue
        if not outs:
            continue  # a size-1 dimension dropped
        if len(carried) > 1:
            for k in carried:
                b.fix(x.dims[k], f"{where} merges two dimensions that carry channels")
            continue
        k = carried[0]
        ids = x.dims[k]
        assert ids is not None
        if len(ins) == 1 and len(outs) == 1:
            if pinned[outs[0]]:
                b.fix(ids, f"{where} reshapes to a constant channel count ({shape[outs[0]]})")
            else:
                dims[outs[0]] = ids
            continue
        sizes = [x.shape[i] for i in ins]
        spread = np.broadcast_to(ids.reshape([s if i == k else 1 for i, s in zip(ins, sizes)]), sizes)
        block = spread.reshape([shape[o] for o in outs])
        roots = b.roots(block)
        varying = [j for j in range(len(outs)) if not np.all(roots == roots.take([0], axis=j))]
        dynamic = [j for j in varying if not pinned[outs[j]]]
        if not varying:
            b.fix(
                ids,
                f"{where}: its {len(ids)} channels are all coupled into one (repeated chunk and "
                "shuffle couplings), so none can be removed alone",
            )
            continue
        if len(dynamic) != 1:
            b.fix(ids, f"{where} reshapes channels to constant sizes {tuple(shape[o] for o in outs)}")
            continue
        for j in varying:
            if j != dynamic[0]:
                b.couple_along(block, j)
        j = dynamic[0]
        dims[outs[j]] = np.ascontiguousarray(np.moveaxis(block, j, 0).reshape(block.shape[j], -1)[:, 0])
    return Layout(tuple(dims), shape)


def _param_view(ref: ParamRef, shape: tuple[int, ...]) -> ParamRef | None:
    """A view of a parameter that only adds or drops size-1 dimensions (``w.reshape(1, -1, 1, 1)``)."""
    kept = [(s, sd) for s, sd in zip(ref.shape, ref.source_dims) if s != 1]
    if [s for s, _ in kept] != [s for s in shape if s != 1]:
        return None
    it = iter(kept)
    return ParamRef(ref.path, shape, tuple(next(it)[1] if s != 1 else None for s in shape))


def _reshape_node(b: GraphBuilder, node: fx.Node, pinned: list[bool] | None) -> Value:
    shape = b.shape(node)
    value = b.value_of(node.args[0] if node.args else node.kwargs.get("input"))
    if shape is None:
        return free_like(node)
    if isinstance(value, ParamRef):
        return _param_view(value, shape) or free(shape)
    if not isinstance(value, Layout):
        return free(shape)
    if pinned is None or len(pinned) != len(shape):
        pinned = [False] * len(shape)
    return reshape(b, value, shape, pinned, b.where(node))


def view_method(b: GraphBuilder, node: fx.Node) -> Value:
    sizes = _sizes(node.args[1:]) if len(node.args) > 1 else _sizes([node.kwargs.get("shape")])
    out = _reshape_node(b, node, None if sizes is None else [_is_const(s) for s in sizes])
    if isinstance(out, Layout):
        follow_sizes(b, node, sizes, out)
    return out


def reshape_function(b: GraphBuilder, node: fx.Node) -> Value:
    sizes = _sizes([_arg(node, 1, "shape")])
    out = _reshape_node(b, node, None if sizes is None else [_is_const(s) for s in sizes])
    if isinstance(out, Layout):
        follow_sizes(b, node, sizes, out)
    return out


def flatten_op(b: GraphBuilder, node: fx.Node) -> Value:
    return _reshape_node(b, node, None)


def flatten_module(b: GraphBuilder, node: fx.Node) -> Value:
    return _reshape_node(b, node, None)


def unflatten_op(b: GraphBuilder, node: fx.Node) -> Value:
    shape = b.shape(node)
    dim, sizes = _arg(node, 1, "dim"), _arg(node, 2, "sizes")
    if node.op == "call_module":
        module = b.modules[str(node.target)]
        dim, sizes = module.dim, module.unflattened_size  # type: ignore[assignment]
    if shape is None or not isinstance(sizes, (list, tuple)) or not isinstance(dim, int):
        return _reshape_node(b, node, None)
    d = _ndim(dim, len(shape) - len(sizes) + 1)
    pinned = [False] * len(shape)
    for i, s in enumerate(sizes):
        pinned[d + i] = _is_const(s)
    return _reshape_node(b, node, pinned)


def _permuted(value: Value, perm: Sequence[int]) -> Value:
    if isinstance(value, Layout):
        return Layout(tuple(value.dims[p] for p in perm), tuple(value.shape[p] for p in perm))
    if isinstance(value, ParamRef):
        return ParamRef(value.path, tuple(value.shape[p] for p in perm), tuple(value.source_dims[p] for p in perm))
    return None


def _ndim_of(value: Value) -> int:
    return len(value.shape) if isinstance(value, (Layout, ParamRef)) else 0


def permute(b: GraphBuilder, node: fx.Node) -> Value:
    value = b.value_of(node.args[0])
    nd = _ndim_of(value)
    perm = _sizes(node.args[1:]) if len(node.args) > 1 else _sizes([node.kwargs.get("dims")])
    if perm is None or not nd:
        return free_like(node)
    return _permuted(value, [_ndim(int(p), nd) for p in perm])


def transpose(b: GraphBuilder, node: fx.Node) -> Value:
    value = b.value_of(node.args[0])
    nd = _ndim_of(value)
    if not nd:
        return free_like(node)
    if node.target in ("t",) or len(node.args) < 2 and "dim0" not in node.kwargs:
        a, c = nd - 2, nd - 1
    else:
        a, c = _ndim(int(_arg(node, 1, "dim0")), nd), _ndim(int(_arg(node, 2, "dim1")), nd)
    perm = list(range(nd))
    perm[a], perm[c] = perm[c], perm[a]
    return _permuted(value, perm)


def movedim(b: GraphBuilder, node: fx.Node) -> Value:
    value = b.value_of(node.args[0])
    nd = _ndim_of(value)
    src, dst = _arg(node, 1, "source"), _arg(node, 2, "destination")
    if not nd:
        return free_like(node)
    src_l = [_ndim(int(s), nd) for s in (src if isinstance(src, (list, tuple)) else [src])]
    dst_l = [_ndim(int(s), nd) for s in (dst if isinstance(dst, (list, tuple)) else [dst])]
    perm = [-1] * nd
    for s, d in zip(src_l, dst_l):
        perm[d] = s
    rest = iter([k for k in range(nd) if k not in src_l])
    perm = [p if p >= 0 else next(rest) for p in perm]
    return _permuted(value, perm)


def unsqueeze(b: GraphBuilder, node: fx.Node) -> Value:
    value = b.value_of(node.args[0])
    nd = _ndim_of(value)
    d = _ndim(int(_arg(node, 1, "dim")), nd + 1)
    if isinstance(value, Layout):
        return Layout(value.dims[:d] + (None,) + value.dims[d:], value.shape[:d] + (1,) + value.shape[d:])
    if isinstance(value, ParamRef):
        return ParamRef(
            value.path,
            value.shape[:d] + (1,) + value.shape[d:],
            value.source_dims[:d] + (None,) + value.source_dims[d:],
        )
    return free_like(node)


def squeeze(b: GraphBuilder, node: fx.Node) -> Value:
    value = b.value_of(node.args[0])
    shape = b.shape(node)
    if shape is None or not isinstance(value, (Layout, ParamRef)):
        return free_like(node)
    nd = len(value.shape)
    dim = _arg(node, 1, "dim")
    if dim is None:
        drop = {k for k in range(nd) if value.shape[k] == 1}
    else:
        drop = {_ndim(int(d), nd) for d in (dim if isinstance(dim, (list, tuple)) else [dim])}
        drop = {k for k in drop if value.shape[k] == 1}
    keep = [k for k in range(nd) if k not in drop]
    if isinstance(value, ParamRef):
        return ParamRef(value.path, tuple(value.shape[k] for k in keep), tuple(value.source_dims[k] for k in keep))
    return Layout(tuple(value.dims[k] for k in keep), tuple(value.shape[k] for k in keep))


def expand(b: GraphBuilder, node: fx.Node) -> Value:
    value = b.value_of(node.args[0])
    shape = b.shape(node)
    if shape is None or not isinstance(value, (Layout, ParamRef)):
        return free_like(node)
    sizes = _sizes(node.args[1:]) if node.target == "expand" else None
    nd, old = len(shape), len(value.shape)
    if isinstance(value, ParamRef):
        src = [None] * (nd - old) + [
            sd if value.shape[k] == shape[nd - old + k] else None for k, sd in enumerate(value.source_dims)
        ]
        return ParamRef(value.path, shape, tuple(src))
    dims: list[Ids | None] = [None] * (nd - old)
    for k, ids in enumerate(value.dims):
        d = nd - old + k
        if ids is not None and value.shape[k] == shape[d]:
            if sizes is not None and len(sizes) == nd and _is_const(sizes[d]):
                b.fix(ids, f"{b.where(node)} expands to a constant channel count")
                ids = None
            dims.append(ids)
        else:
            dims.append(None)
    result = Layout(tuple(dims), shape)
    follow_sizes(b, node, sizes, result)
    return result


def repeat(b: GraphBuilder, node: fx.Node) -> Value:
    x = _input(b, node)
    shape = b.shape(node)
    reps = _sizes(node.args[1:])
    if x is None or shape is None or reps is None or not all(isinstance(r, int) for r in reps):
        return passthrough(b, node) if x is not None else free_like(node)
    nd = len(shape)
    dims: list[Ids | None] = [None] * (nd - x.ndim)
    for k, ids in enumerate(x.dims):
        dims.append(None if ids is None else np.tile(ids, int(reps[nd - x.ndim + k])))
    return Layout(tuple(dims), shape)


def channel_shuffle(b: GraphBuilder, node: fx.Node) -> Value:
    """nn.ChannelShuffle: ``view(N, g, C/g, ...) -> transpose(1, 2) -> view(N, C, ...)``."""
    module = b.modules[str(node.target)]
    x = _input(b, node)
    if x is None:
        return free_like(node)
    groups = int(module.groups)  # type: ignore[arg-type]
    split = (x.shape[0], groups, x.shape[1] // groups) + x.shape[2:]
    pinned = [False, True] + [False] * (len(split) - 2)
    grouped = reshape(b, x, split, pinned, b.where(node))
    perm = [0, 2, 1] + list(range(3, len(split)))
    swapped = _permuted(grouped, perm)
    assert isinstance(swapped, Layout)
    return reshape(b, swapped, x.shape, [False] * x.ndim, b.where(node))


# -- indexing, concatenation, splitting ----------------------------------------------------------
def getitem(b: GraphBuilder, node: fx.Node) -> Value:
    value = b.value_of(node.args[0])
    index = node.args[1]
    if isinstance(value, tuple):
        return value[index] if isinstance(index, (int, slice)) else free_like(node)  # type: ignore[no-any-return]
    if isinstance(value, ParamRef):
        return _param_index(value, index) or free_like(node)
    if not isinstance(value, Layout):
        return free_like(node)
    shape = b.shape(node)
    items = list(index) if isinstance(index, tuple) else [index]
    simple = all(
        i is None
        or i is Ellipsis
        or isinstance(i, (int, slice))
        or (isinstance(i, fx.Node) and not isinstance(b.value_of(i), (Layout, ParamRef)))
        for i in items
    )
    if not simple or shape is None:
        return b.opaque(node, f"{b.where(node)} indexes channels with a tensor")
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = items[:at] + [slice(None)] * (value.ndim - consumed) + items[at + 1 :]
    items += [slice(None)] * (value.ndim - sum(1 for i in items if i is not None))
    dims: list[Ids | None] = []
    d = 0
    reason = f"{b.where(node)} indexes a channel dimension with constants"
    for item in items:
        if item is None:
            dims.append(None)
            continue
        ids = value.dims[d]
        if isinstance(item, slice):
            if item == slice(None):
                dims.append(ids)
            else:
                b.fix(ids, reason)
                dims.append(None)
        else:
            b.fix(ids, reason)
        d += 1
    return _layout_or_free(dims, shape)


def _param_index(ref: ParamRef, index: Any) -> ParamRef | None:
    """``p[None, :, None]`` and the like: a view that only inserts dimensions."""
    items = list(index) if isinstance(index, tuple) else [index]
    if not all(i is None or i is Ellipsis or i == slice(None) for i in items):
        return None
    if Ellipsis in items:
        at = items.index(Ellipsis)
        fill = len(ref.shape) - sum(1 for i in items if i is not None and i is not Ellipsis)
        items = items[:at] + [slice(None)] * fill + items[at + 1 :]
    items += [slice(None)] * (len(ref.shape) - sum(1 for i in items if i is not None))
    shape: list[int] = []
    src: list[int | None] = []
    d = 0
    for item in items:
        if item is None:
            shape.append(1)
            src.append(None)
        else:
            shape.append(ref.shape[d])
            src.append(ref.source_dims[d])
            d += 1
    return ParamRef(ref.path, tuple(shape), tuple(src))


def cat(b: GraphBuilder, node: fx.Node) -> Value:
    tensors = _arg(node, 0, "tensors")
    shape = b.shape(node)
    if shape is None or not isinstance(tensors, (list, tuple)):
        return free_like(node)
    nd = len(shape)
    d = _ndim(int(_arg(node, 1, "dim", 0)), nd)
    values = [b.value_of(t) for t in tensors]
    layouts = [v for v in values if isinstance(v, Layout)]
    parts: list[Layout] = []
    for t, v in zip(tensors, values):
        if isinstance(v, Layout):
            parts.append(v)
        elif isinstance(v, ParamRef):
            parts.append(b.resolve_param(v, layouts, shape, skip=d))
        else:
            part_shape = b.shape(t)
            if part_shape is None:
                return b.opaque(node, f"{b.where(node)}: concatenation of an unknown value")
            parts.append(free(part_shape))
    reason = f"{b.where(node)} concatenates it with a tensor whose size cannot change"
    dims: list[Ids | None] = []
    for e in range(nd):
        if e == d:
            if any(p.dims[d] is not None for p in parts):
                dims.append(
                    np.concatenate(
                        [
                            p.dims[d]
                            if p.dims[d] is not None
                            else b.fixed_ids(
                                p.shape[d], f"{b.where(node)}: concatenated with channels that cannot change"
                            )
                            for p in parts
                        ]
                    )
                )
            else:
                dims.append(None)
        else:
            dims.append(b.join([(p.dims[e], p.shape[e]) for p in parts], reason))
    return Layout(tuple(dims), shape)


def stack(b: GraphBuilder, node: fx.Node) -> Value:
    tensors = _arg(node, 0, "tensors")
    shape = b.shape(node)
    if shape is None or not isinstance(tensors, (list, tuple)):
        return free_like(node)
    d = _ndim(int(_arg(node, 1, "dim", 0)), len(shape))
    parts = [b.layout_of(t) or free(b.shape(t) or ()) for t in tensors]
    joined = broadcast(b, parts, shape[:d] + shape[d + 1 :], f"{b.where(node)} stacks it with a fixed tensor")
    return Layout(joined.dims[:d] + (None,) + joined.dims[d:], shape)


def split(b: GraphBuilder, node: fx.Node) -> Value:
    """split/chunk along a dimension: a tuple of layouts, picked apart by getitem.

    ``chunk`` (and ``split`` by a size computed at run time) recomputes the chunk width from the
    tensor, so the i-th channel of every chunk is coupled and all chunks shrink alike; ``split``
    with sizes written in the code must keep them, which fixes the channels.
    """
    x = _input(b, node)
    meta: Any = node.meta.get("tensor_meta")
    if x is None or not _multi(meta):
        return free_like(node)
    name = str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", "")
    sizes_arg = _arg(node, 1, "split_size_or_sections" if name == "split" else "chunks")
    dim = _ndim(int(_arg(node, 2, "dim", 0)), x.ndim)
    sizes = [int(m.shape[dim]) for m in meta]
    ids = x.dims[dim]
    parts: list[Ids | None] = [None] * len(sizes)
    if ids is not None:
        equal = len(set(sizes)) == 1
        measured = b.value_of(sizes_arg)
        # A size read from this very dimension follows it after pruning; anything else may not.
        follows = isinstance(measured, SizeOf) and all(lay is x and d == dim for lay, d in measured.sources)
        dynamic = name in ("chunk", "tensor_split") and isinstance(sizes_arg, int) or follows
        if equal and dynamic:
            b.couple_along(ids.reshape(len(sizes), sizes[0]), 0)
            parts = [ids[i * sizes[0] : (i + 1) * sizes[0]] for i in range(len(sizes))]
        else:
            b.fix(ids, f"{b.where(node)} splits channels at sizes written in the code {tuple(sizes)}")
    return tuple(x.replace(dim, part, size) for part, size in zip(parts, sizes))


def unbind(b: GraphBuilder, node: fx.Node) -> Value:
    x = _input(b, node)
    meta: Any = node.meta.get("tensor_meta")
    if x is None or not _multi(meta):
        return free_like(node)
    dim = _ndim(int(_arg(node, 1, "dim", 0)), x.ndim)
    b.fix(x.dims[dim], f"{b.where(node)} unbinds a channel dimension")
    rest = x.dims[:dim] + x.dims[dim + 1 :]
    return tuple(Layout(rest, tuple(int(s) for s in m.shape)) for m in meta)


# -- contractions -------------------------------------------------------------------------------
def matmul(b: GraphBuilder, node: fx.Node) -> Value:
    shape = b.shape(node)
    a, c = b.layout_of(node.args[0]), b.layout_of(node.args[1])
    if shape is None or a is None or c is None or a.ndim < 2 or c.ndim < 2:
        return b.opaque(node, f"{b.where(node)}: a matrix product the graph does not follow")
    reason = f"{b.where(node)} contracts it with a dimension that cannot change"
    b.join([(a.dims[-1], a.shape[-1]), (c.dims[-2], c.shape[-2])], reason)
    batch = broadcast(b, [Layout(a.dims[:-2], a.shape[:-2]), Layout(c.dims[:-2], c.shape[:-2])], shape[:-2], reason)
    return Layout(batch.dims + (a.dims[-2], c.dims[-1]), shape)


def einsum(b: GraphBuilder, node: fx.Node) -> Value:
    """einsum: dimensions named by the same letter are aligned; output letters keep their ids."""
    equation = node.args[0]
    operands = (
        list(node.args[1]) if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) else list(node.args[1:])
    )
    shape = b.shape(node)
    if not isinstance(equation, str) or "..." in equation or shape is None or "->" not in equation:
        return b.opaque(node, f"{b.where(node)}: an einsum the graph does not follow")
    lhs, rhs = equation.replace(" ", "").split("->")
    specs = lhs.split(",")
    layouts = [b.layout_of(o) for o in operands]
    if len(specs) != len(layouts) or any(lay is None or lay.ndim != len(s) for lay, s in zip(layouts, specs)):
        return b.opaque(node, f"{b.where(node)}: an einsum the graph does not follow")
    letters: dict[str, list[tuple[Ids | None, int]]] = {}
    for spec, lay in zip(specs, layouts):
        assert lay is not None
        for k, letter in enumerate(spec):
            letters.setdefault(letter, []).append((lay.dims[k], lay.shape[k]))
    reason = f"{b.where(node)} contracts it with a dimension that cannot change"
    joined = {letter: b.join(entries, reason) for letter, entries in letters.items()}
    return _layout_or_free([joined.get(letter) for letter in rhs], shape)


def attention(b: GraphBuilder, node: fx.Node) -> Value:
    """scaled_dot_product_attention: the head width sets the default scale, so it is fixed."""
    q, k, v = (b.layout_of(_arg(node, i, n)) for i, n in enumerate(("query", "key", "value")))
    shape = b.shape(node)
    if shape is None or q is None or k is None or v is None:
        return free_like(node)
    reason = f"{b.where(node)}: attention's scale depends on the head width"
    b.fix(q.dims[-1], reason)
    b.fix(k.dims[-1], reason)
    b.join([(k.dims[-2], k.shape[-2]), (v.dims[-2], v.shape[-2])], reason)
    batch = broadcast(b, [Layout(x.dims[:-2], x.shape[:-2]) for x in (q, k, v)], shape[:-2], reason)
    return Layout(batch.dims + (q.dims[-2], v.dims[-1]), shape)


# -- misc functions -----------------------------------------------------------------------------
def pad(b: GraphBuilder, node: fx.Node) -> Value:
    x = _input(b, node)
    amounts = _arg(node, 1, "pad")
    shape = b.shape(node)
    if x is None or shape is None:
        return free_like(node)
    if isinstance(amounts, (list, tuple)):
        for i in range(len(amounts) // 2):
            d = x.ndim - 1 - i
            if (amounts[2 * i] != 0 or amounts[2 * i + 1] != 0) and x.dims[d] is not None:
                b.fix(x.dims[d], f"{b.where(node)} pads a channel dimension")
    return _fit(b, x, shape, f"{b.where(node)} pads a channel dimension")


def non_tensor(b: GraphBuilder, node: fx.Node) -> Value:
    """dim(), numel() and friends: not tensors."""
    return free_like(node)


def size(b: GraphBuilder, node: fx.Node) -> Value:
    """``x.size()`` / ``x.size(d)``: integers that remember which tensor dimension they measure."""
    x = _input(b, node)
    if x is None:
        return None
    dim = _arg(node, 1, "dim")
    if isinstance(dim, int):
        return SizeOf(((x, _ndim(dim, x.ndim)),))
    return tuple(SizeOf(((x, d),)) for d in range(x.ndim))


def follow_sizes(b: GraphBuilder, node: fx.Node, sizes: Sequence[Any] | None, out: Layout) -> None:
    """A reshape or expand sized by another tensor's size must keep that size.

    ``reshape(B, G, P, D)`` with ``D = x.shape[-1]``: if the reshaped dimension cannot change,
    x's channels there cannot either; if it carries other channels of the same count, the two
    are coupled so that they shrink alike.
    """
    if sizes is None or len(sizes) != out.ndim:
        return
    for o, arg in enumerate(sizes):
        value = b.value_of(arg)
        if not isinstance(value, SizeOf):
            continue
        target = out.dims[o]
        for lay, d in value.sources:
            source = lay.dims[d]
            if source is None:
                continue
            if target is None:
                b.fix(source, f"{b.where(node)} is sized by it, and its own dimension {o} cannot change")
            elif set(b.roots(source).tolist()) != set(b.roots(target).tolist()) and len(source) == len(target):
                b.couple(source, target)


def builtin_getattr(b: GraphBuilder, node: fx.Node) -> Value:
    attr = node.args[1]
    if attr == "shape":
        x = b.layout_of(node.args[0])
        return None if x is None else tuple(SizeOf(((x, d),)) for d in range(x.ndim))
    if attr in ("dtype", "device", "ndim", "is_cuda", "requires_grad", "layout"):
        return None
    if attr in ("T", "mT"):
        value = b.value_of(node.args[0])
        nd = _ndim_of(value)
        perm = list(range(nd))[::-1] if attr == "T" else list(range(nd - 2)) + [nd - 1, nd - 2]
        return _permuted(value, perm)
    return b.opaque(node, f"{b.where(node)}: attribute .{attr}")


def param_passthrough(b: GraphBuilder, node: fx.Node) -> Value:
    """to(), float(), contiguous(), clone(), detach(): parameters stay parameters."""
    value = b.value_of(node.args[0])
    if isinstance(value, ParamRef):
        shape = b.shape(node)
        return value if shape is None or shape == value.shape else free(shape)
    return passthrough(b, node)


def _register_builtins() -> None:
    _reg(
        [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d],
        conv,
    )
    HANDLERS[nn.Linear] = linear
    _reg(
        [
            nn.BatchNorm1d,
            nn.BatchNorm2d,
            nn.BatchNorm3d,
            nn.SyncBatchNorm,
            nn.InstanceNorm1d,
            nn.InstanceNorm2d,
            nn.InstanceNorm3d,
        ],
        batchnorm,
    )
    HANDLERS[nn.GroupNorm] = groupnorm
    HANDLERS[nn.LayerNorm] = layernorm
    HANDLERS[nn.MultiheadAttention] = multihead_attention
    HANDLERS[nn.Flatten] = flatten_module
    HANDLERS[nn.Unflatten] = unflatten_op
    HANDLERS[nn.ChannelShuffle] = channel_shuffle
    _reg(
        [nn.PixelShuffle, nn.PixelUnshuffle],
        lambda b, node: b.opaque(node, f"{b.where(node)} moves channels into space"),
    )
    _reg(
        [
            nn.ReLU,
            nn.ReLU6,
            nn.SiLU,
            nn.GELU,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.Sigmoid,
            nn.Tanh,
            nn.LeakyReLU,
            nn.ELU,
            nn.SELU,
            nn.CELU,
            nn.Mish,
            nn.Softplus,
            nn.Softsign,
            nn.Hardtanh,
            nn.LogSigmoid,
            nn.Tanhshrink,
            nn.Softshrink,
            nn.Hardshrink,
            nn.Threshold,
            nn.Identity,
            nn.Dropout,
            nn.Dropout1d,
            nn.Dropout2d,
            nn.Dropout3d,
            nn.AlphaDropout,
            nn.FeatureAlphaDropout,
            nn.MaxPool1d,
            nn.MaxPool2d,
            nn.MaxPool3d,
            nn.AvgPool1d,
            nn.AvgPool2d,
            nn.AvgPool3d,
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
            nn.LPPool1d,
            nn.LPPool2d,
            nn.Upsample,
            nn.UpsamplingNearest2d,
            nn.UpsamplingBilinear2d,
            nn.ZeroPad1d,
            nn.ZeroPad2d,
            nn.ZeroPad3d,
            nn.ConstantPad1d,
            nn.ConstantPad2d,
            nn.ConstantPad3d,
            nn.ReflectionPad1d,
            nn.ReflectionPad2d,
            nn.ReplicationPad1d,
            nn.ReplicationPad2d,
            nn.Softmax,
            nn.LogSoftmax,
            nn.Softmax2d,
            nn.LocalResponseNorm,
        ],
        passthrough,
    )
    # PReLU with one slope per channel holds a parameter per channel: treat as a norm-like place.
    HANDLERS[nn.PReLU] = _prelu

    _reg(
        [
            F.relu,
            F.relu_,
            F.relu6,
            F.silu,
            F.gelu,
            F.hardswish,
            F.hardsigmoid,
            F.sigmoid,
            F.tanh,
            F.leaky_relu,
            F.elu,
            F.selu,
            F.celu,
            F.mish,
            F.softplus,
            F.hardtanh,
            F.logsigmoid,
            F.dropout,
            F.dropout1d,
            F.dropout2d,
            F.dropout3d,
            F.alpha_dropout,
            F.feature_alpha_dropout,
            F.max_pool1d,
            F.max_pool2d,
            F.max_pool3d,
            F.avg_pool1d,
            F.avg_pool2d,
            F.avg_pool3d,
            F.adaptive_avg_pool1d,
            F.adaptive_avg_pool2d,
            F.adaptive_avg_pool3d,
            F.adaptive_max_pool1d,
            F.adaptive_max_pool2d,
            F.adaptive_max_pool3d,
            F.lp_pool2d,
            F.interpolate,
            F.upsample,
            F.softmax,
            F.log_softmax,
            F.normalize,
            F.local_response_norm,
            torch.relu,
            torch.relu_,
            torch.sigmoid,
            torch.tanh,
            torch.exp,
            torch.log,
            torch.abs,
            torch.neg,
            torch.sqrt,
            torch.rsqrt,
            torch.erf,
            torch.clamp,
            torch.clip,
            torch.softmax,
            torch.log_softmax,
            torch.sign,
            torch.square,
            torch.reciprocal,
            torch.nan_to_num,
            torch.zeros_like,
            torch.ones_like,
            torch.empty_like,
            torch.full_like,
            torch.rand_like,
            torch.randn_like,
            operator.neg,
            operator.pos,
            abs,
        ],
        passthrough,
    )
    _reg(
        [
            operator.add,
            operator.iadd,
            operator.sub,
            operator.isub,
            operator.mul,
            operator.imul,
            operator.truediv,
            operator.itruediv,
            operator.floordiv,
            operator.pow,
            operator.mod,
            operator.eq,
            operator.ne,
            operator.lt,
            operator.le,
            operator.gt,
            operator.ge,
            operator.and_,
            operator.or_,
            operator.xor,
            torch.add,
            torch.sub,
            torch.subtract,
            torch.mul,
            torch.multiply,
            torch.div,
            torch.divide,
            torch.true_divide,
            torch.pow,
            torch.maximum,
            torch.minimum,
            torch.where,
            torch.addcmul,
            torch.addcdiv,
            torch.lerp,
            torch.masked_fill,
            torch.eq,
            torch.ne,
            torch.lt,
            torch.gt,
        ],
        elementwise,
    )
    _reg(
        [
            torch.mean,
            torch.sum,
            torch.amax,
            torch.amin,
            torch.max,
            torch.min,
            torch.std,
            torch.var,
            torch.logsumexp,
            torch.prod,
            torch.norm,
        ],
        reduction,
    )
    _reg([torch.cat, torch.concat, torch.concatenate], cat)
    HANDLERS[torch.stack] = stack
    _reg([torch.split, torch.chunk, torch.tensor_split], split)
    HANDLERS[torch.unbind] = unbind
    HANDLERS[torch.flatten] = flatten_op
    HANDLERS[torch.unflatten] = unflatten_op
    HANDLERS[torch.reshape] = reshape_function
    HANDLERS[torch.permute] = permute
    _reg([torch.transpose, torch.swapaxes, torch.swapdims, torch.t], transpose)
    HANDLERS[torch.movedim] = movedim
    HANDLERS[torch.unsqueeze] = unsqueeze
    HANDLERS[torch.squeeze] = squeeze
    HANDLERS[operator.getitem] = getitem
    HANDLERS[getattr] = builtin_getattr
    _reg([torch.matmul, operator.matmul, torch.bmm, torch.mm], matmul)
    HANDLERS[torch.einsum] = einsum
    HANDLERS[F.scaled_dot_product_attention] = attention
    HANDLERS[F.layer_norm] = functional_layer_norm
    HANDLERS[F.linear] = functional_linear
    HANDLERS[F.pad] = pad
    HANDLERS[torch._assert] = non_tensor

    _reg(
        [
            "relu",
            "relu_",
            "sigmoid",
            "sigmoid_",
            "tanh",
            "tanh_",
            "exp",
            "log",
            "abs",
            "neg",
            "sqrt",
            "rsqrt",
            "clamp",
            "clamp_",
            "clamp_min",
            "clamp_max",
            "clip",
            "softmax",
            "log_softmax",
            "square",
            "sign",
            "erf",
            "reciprocal",
            "zero_",
            "fill_",
            "normal_",
            "uniform_",
            "hardtanh",
            "hardtanh_",
        ],
        passthrough,
    )
    _reg(
        [
            "contiguous",
            "clone",
            "float",
            "half",
            "double",
            "bfloat16",
            "to",
            "type",
            "type_as",
            "detach",
            "cpu",
            "cuda",
            "requires_grad_",
        ],
        param_passthrough,
    )
    _reg(
        [
            "add",
            "add_",
            "sub",
            "sub_",
            "mul",
            "mul_",
            "div",
            "div_",
            "truediv",
            "pow",
            "pow_",
            "maximum",
            "minimum",
            "masked_fill",
            "masked_fill_",
            "where",
            "addcmul",
            "addcdiv",
            "lerp",
            "eq",
            "ne",
            "lt",
            "gt",
            "le",
            "ge",
            "__add__",
            "__mul__",
            "__sub__",
            "__truediv__",
        ],
        elementwise,
    )
    _reg(
        ["mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "prod", "norm"],
        reduction,
    )
    HANDLERS["size"] = size
    _reg(
        ["dim", "numel", "nelement", "element_size", "get_device", "stride", "tolist", "item", "is_contiguous"],
        non_tensor,
    )
    _reg(["view", "reshape"], view_method)
    HANDLERS["flatten"] = flatten_op
    HANDLERS["unflatten"] = unflatten_op
    HANDLERS["permute"] = permute
    _reg(["transpose", "swapaxes", "swapdims", "t"], transpose)
    HANDLERS["movedim"] = movedim
    HANDLERS["unsqueeze"] = unsqueeze
    HANDLERS["squeeze"] = squeeze
    _reg(["expand", "expand_as"], expand)
    HANDLERS["repeat"] = repeat
    _reg(["split", "chunk", "tensor_split"], split)
    HANDLERS["unbind"] = unbind
    _reg(["matmul", "bmm", "mm"], matmul)
    _reg(["new_zeros", "new_ones", "new_empty", "new_full", "new_tensor"], non_tensor)
    _register_torchvision()


def _prelu(b: GraphBuilder, node: fx.Node) -> Value:
    module = b.modules[str(node.target)]
    assert isinstance(module, nn.PReLU)
    x = _input(b, node)
    if x is not None and module.num_parameters > 1 and x.dims[1] is not None:
        b.add_places(x.dims[1], str(node.target), "norm")
    return x if x is not None else free_like(node)


def _register_torchvision() -> None:
    """Handlers for torchvision's fx-wrapped functions (torchvision is optional)."""
    try:
        from torchvision.models import swin_transformer
        from torchvision.ops import stochastic_depth as stochastic_depth_fn
    except ImportError:  # pragma: no cover - torchvision is part of the host extra
        return
    # Stochastic depth drops whole samples or rows; channel-agnostic (identity in eval).
    HANDLERS[stochastic_depth_fn] = passthrough
    HANDLERS[swin_transformer._patch_merging_pad] = _patch_merging_pad
    HANDLERS[swin_transformer._get_relative_position_bias] = non_tensor
    HANDLERS[swin_transformer.shifted_window_attention] = lambda b, node: b.opaque(
        node, f"{b.where(node)}: the width of shifted-window attention is tied to its heads"
    )


def _patch_merging_pad(b: GraphBuilder, node: fx.Node) -> Value:
    """Swin's patch merging: four spatial phases concatenated on the channel (last) axis."""
    x = _input(b, node)
    shape = b.shape(node)
    if x is None or shape is None:
        return free_like(node)
    ids = x.dims[-1]
    for d in x.carried():
        if d != x.ndim - 1:
            b.fix(x.dims[d], f"{b.where(node)} rearranges a dimension that carries channels")
    dims: list[Ids | None] = [None] * len(shape)
    dims[-1] = None if ids is None else np.tile(ids, 4)
    return Layout(tuple(dims), shape)


_register_builtins()
