"""The TensorRT 2:4 check, run on the ONNX the device will parse rather than on the PyTorch model.

TensorRT decides per layer from the weights it finds in the ONNX, so that is what is checked
here, on every weight TensorRT would consider for ``SPARSE_WEIGHTS`` (the rule of NVIDIA's own
pruner, ``polygraphy surgeon prune``):

* **Conv**: weight ``[K, C/groups, R, S]``, the pattern runs along axis 1 (input channels): for every
  output channel and kernel position, each run of 4 consecutive input channels holds at most 2
  non-zeros.
* **Gemm**: along the reduction axis of whichever input is a weight, respecting ``transA`` and
  ``transB``; **MatMul**: axis -2 of a constant B, axis -1 of a constant A.
* Axes whose length is not a multiple of 4 are skipped, as TensorRT skips them.
* The weight may sit behind DequantizeLinear / QuantizeLinear / Cast / Identity / Transpose nodes
  (INT8 Q/DQ and FP16 models put it there); the check looks back through them, following a
  Transpose's permutation so the axis stays the right one. A zero stays a zero through symmetric
  quantization and through a cast, so checking the stored initializer is checking what TensorRT
  sees.
* Grouped convolutions are reported ineligible: TensorRT never considers them for sparse kernels
  (NVIDIA/TensorRT #4054).

Each record says eligible or not, and why not, so a manifest can answer "which layers can
possibly run sparse" before the device build log answers "which ones did".

No torch here: onnx and numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeprune.nm import M, nm_violations

RULE = (
    "TensorRT 2:4: Conv weights along axis 1 (input channels), Gemm/MatMul along the reduction axis; "
    "axes not a multiple of 4 skipped; weights found through Q/DQ, Cast and Transpose"
)
# Nodes that carry a weight to its consumer without changing which values are zero.
_PASS_THROUGH = ("DequantizeLinear", "QuantizeLinear", "Cast", "Identity")


@dataclass(frozen=True)
class LayerEligibility:
    """The 2:4 verdict for one weighted ONNX node.

    Attributes:
        node: the ONNX node name.
        op: Conv, Gemm or MatMul.
        module: the PyTorch module path the node came from, when it can be told from the name.
        initializer: the initializer that holds the weight, or None if it is computed at run time.
        path: the ops between the initializer and the node (e.g. ``["DequantizeLinear"]``).
        shape: the initializer's shape.
        axis: the initializer axis the pattern must run along (after undoing transposes).
        eligible: the weight follows 2:4 along ``axis`` and TensorRT may pick a sparse kernel.
        reason: why not, in words (None when eligible).
        density: fraction of non-zero weights.
        groups: runs of 4 checked; ``violations``: runs with more than 2 non-zeros.
    """

    node: str
    op: str
    module: str | None
    initializer: str | None
    path: list[str]
    shape: list[int]
    axis: int | None
    eligible: bool
    reason: str | None
    density: float | None
    groups: int
    violations: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def module_path(node_name: str, modules: Iterable[str] = ()) -> str | None:
    """Recover the PyTorch module path from a TorchScript-exporter node name.

    The exporter names nodes by module scope: ``/layer2/shortcut/shortcut.0/Conv`` is the Conv of
    ``layer2.shortcut.0`` (a child's scope repeats its parent's qualified name, hence the merge).
    Returns None when the name has no scope or the guess is not one of ``modules`` (if given).
    """
    parts = [p for p in node_name.split("/") if p][:-1]
    if not parts:
        return None
    path: list[str] = []
    for part in parts:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    guess = ".".join(path)
    known = set(modules)
    if known and guess not in known:
        return None
    return guess


def _attr(node: Any, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


def _trace_weight(
    tensor: str, producers: Mapping[str, Any], initializers: Mapping[str, Any], axis: int, rank: int
) -> tuple[str | None, list[str], int | None, Any]:
    """Follow ``tensor`` back to an initializer (or Constant) through pass-through nodes.

    Returns (initializer name, ops passed, the axis on the initializer, the TensorProto or None).
    ``axis`` is given on the consumer's view of the tensor; a Transpose maps it back.
    """
    path: list[str] = []
    current = tensor
    current_axis: int | None = axis % rank if rank else axis
    for _ in range(32):  # no real graph chains more than a few
        if current in initializers:
            return current, path, current_axis, initializers[current]
        node = producers.get(current)
        if node is None:
            return None, path, None, None
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    return node.output[0], [*path, "Constant"], current_axis, attribute.t
            return None, [*path, "Constant"], None, None
        if node.op_type in _PASS_THROUGH:
            path.append(node.op_type)
            current = node.input[0]
            continue
        if node.op_type == "Transpose":
            perm = [int(p) for a in node.attribute if a.name == "perm" for p in a.ints]
            path.append("Transpose")
            if current_axis is not None:
                current_axis = perm[current_axis] if perm else rank - 1 - current_axis
            current = node.input[0]
            continue
        return None, [*path, node.op_type], None, None
    return None, path, None, None


def _weight_inputs(node: Any) -> list[tuple[int, int, int]]:
    """(input index, reduction axis on the consumer's view, expected rank; -1: any) to check."""
    if node.op_type == "Conv":
        return [(1, 1, -1)]
    if node.op_type == "Gemm":
        trans_a, trans_b = _attr(node, "transA", 0), _attr(node, "transB", 0)
        # Y = A' B': A' is [M, K], B' is [K, N]; the reduction axis is K.
        return [(1, 1 if trans_b else 0, 2), (0, 0 if trans_a else 1, 2)]
    if node.op_type == "MatMul":
        return [(1, -2, -1), (0, -1, -1)]
    return []


def check_sparsity(model: Any, modules: Iterable[str] = ()) -> list[LayerEligibility]:
    """Run the TensorRT 2:4 rule on every weight of an ONNX model.

    Args:
        model: an ``onnx.ModelProto``.
        modules: PyTorch module paths, to name each record by its module where possible.

    Returns:
        One record per Conv, Gemm and MatMul node, in graph order. A Gemm/MatMul whose inputs are
        both computed at run time gets a record saying so (TensorRT cannot make it sparse).
    """
    from onnx import numpy_helper

    graph = model.graph
    known = list(modules)
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    records: list[LayerEligibility] = []
    for node in graph.node:
        candidates = _weight_inputs(node)
        if not candidates:
            continue
        found = None
        for index, axis, _ in candidates:
            if index >= len(node.input):
                continue
            traced = _trace_weight(
                node.input[index], producers, initializers, axis, _rank(node.input[index], producers, initializers)
            )
            if traced[0] is not None:
                found = traced
                break
        module = module_path(node.name, known)
        if found is None:
            records.append(
                LayerEligibility(
                    node.name,
                    node.op_type,
                    module,
                    None,
                    [],
                    [],
                    None,
                    False,
                    "weight is computed at run time, not an initializer: TensorRT cannot make it sparse",
                    None,
                    0,
                    0,
                )
            )
            continue
        name, path, init_axis, proto = found
        assert name is not None
        array = numpy_helper.to_array(proto)
        shape = [int(d) for d in array.shape]
        density = float(np.count_nonzero(array) / array.size) if array.size else None
        records.append(_verdict(node, module, name, path, shape, init_axis, array, density))
    return records


def _rank(tensor: str, producers: Mapping[str, Any], initializers: Mapping[str, Any]) -> int:
    """Rank of the initializer behind ``tensor`` (transposes keep rank), 0 if unknown."""
    for _ in range(32):
        if tensor in initializers:
            return len(initializers[tensor].dims)
        node = producers.get(tensor)
        if node is None:
            return 0
        if node.op_type == "Constant":
            return next((len(a.t.dims) for a in node.attribute if a.name == "value"), 0)
        if node.op_type not in (*_PASS_THROUGH, "Transpose"):
            return 0
        tensor = node.input[0]
    return 0


def _verdict(
    node: Any,
    module: str | None,
    name: str,
    path: list[str],
    shape: list[int],
    axis: int | None,
    array: np.ndarray,
    density: float | None,
) -> LayerEligibility:
    def record(eligible: bool, reason: str | None, groups: int = 0, violations: int = 0) -> LayerEligibility:
        return LayerEligibility(
            node.name, node.op_type, module, name, path, shape, axis, eligible, reason, density, groups, violations
        )

    if node.op_type == "Conv" and _attr(node, "group", 1) > 1:
        return record(
            False,
            f"grouped convolution (group={_attr(node, 'group', 1)}): TensorRT never considers it for sparse kernels",
        )
    if axis is None or array.ndim < 2:
        return record(False, "weight is not a matrix or its layout cannot be followed")
    what = "input channels" if node.op_type == "Conv" else "reduction axis"
    length = shape[axis]
    if length % M:
        return record(False, f"{length} {what} (axis {axis}) not a multiple of {M}: TensorRT skips this layer")
    groups, violations = nm_violations(array, axis)
    if violations:
        return record(
            False,
            f"weights do not follow 2:4 along the {what} (axis {axis}): {violations} of "
            f"{groups} runs of 4 hold more than 2 non-zeros (layer left dense)",
            groups,
            violations,
        )
    return record(True, None, groups, 0)


def summarize(records: list[LayerEligibility]) -> dict[str, Any]:
    """Counts for the manifest: how many layers were checked and how many are 2:4-eligible."""
    eligible = [r for r in records if r.eligible]
    total = sum(int(np.prod(r.shape)) for r in records if r.shape)
    return {
        "rule": RULE,
        "checked_layers": len(records),
        "eligible_layers": len(eligible),
        "eligible_weight_fraction": sum(int(np.prod(r.shape)) for r in eligible) / max(1, total),
    }
