"""Alignment lint: layer shapes that predict little or no measured gain, found before measuring.

Each warning is a dict ``{"code", "layer", "message"}``; ``edgeprune analyze`` prints them in
yellow and the packager stores them in the bundle manifest. The rules:

* ``align8``: a channel count that is not a multiple of 8. FP16 tensor-core kernels work on
  blocks of 8 channels (TensorRT pads the rest), and ONNX Runtime's CPU convolutions use blocks of
  8 (NCHWc), so such a layer costs as much as the next multiple of 8; BENCHMARKS.md ("channel
  alignment") measured widths 11/23/46 *slower* than the dense 16/32/64 on this project's CPU.
* ``align32``: at INT8, a channel count that is not a multiple of 32 (INT8 tensor-core tiles).
* ``nm-ineligible``: under 2:4, input channels that are not a multiple of 4: the layer cannot
  carry the pattern and stays dense.
* ``nm-grouped``: under 2:4, a grouped convolution: TensorRT never considers sparse kernels for it.
* ``nm-small``: under 2:4, fewer than 256 input or output channels: TensorRT times the sparse and
  dense tactics and, per its maintainers, picks dense below about 256 channels.
* ``nm-dense``: under 2:4, a layer whose weights do not follow 2:4 (left dense when pruning).
* ``small-layer``: a layer with under 0.5% of the model's MACs: pruning it cannot change the total,
  and its time is mostly per-call overhead.

The network's input channels (e.g. 3 for RGB) and the final layer's outputs (the classes) are fixed
by the task, so they are not linted for alignment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeprune.analysis.cost import ModelCost
from edgeprune.analysis.speedup import MIN_SPARSE_CHANNELS, normalize_pattern

if TYPE_CHECKING:
    from torch import nn

SMALL_LAYER_SHARE = 0.005


def _warn(code: str, layer: str, message: str) -> dict[str, str]:
    return {"code": code, "layer": layer, "message": message}


def lint_cost(
    cost: ModelCost,
    pattern: str | None = None,
    precision: str | None = None,
    *,
    min_sparse_channels: int = MIN_SPARSE_CHANNELS,
    small_layer_share: float = SMALL_LAYER_SHARE,
) -> list[dict[str, str]]:
    """Lint a model from its cost (no weights needed beyond what the cost recorded).

    Args:
        cost: from :func:`edgeprune.analysis.cost.model_cost`.
        pattern: the sparsity pattern the model carries or will carry (None or dense: no 2:4 rules).
        precision: fp32, fp16 or int8; int8 checks multiples of 32, the others multiples of 8.
        min_sparse_channels: the 2:4 channel threshold (``nm-small``).
        small_layer_share: share of total MACs under which a layer is ``small-layer``.
    """
    warnings: list[dict[str, str]] = []
    if not cost.layers:
        return warnings
    block = 32 if precision == "int8" else 8
    code = "align32" if block == 32 else "align8"
    why = (
        "INT8 tensor-core tiles are 32 channels"
        if block == 32
        else "FP16 tensor cores and ONNX Runtime's CPU (NCHWc) kernels work in blocks of 8 channels"
    )
    input_channels = cost.input_shape[0] if cost.input_shape else None
    last = cost.layers[-1].name
    nm = normalize_pattern(pattern) == "nm"
    for index, layer in enumerate(cost.layers):
        dims = []
        if layer.in_channels % block and not (index == 0 and layer.in_channels == input_channels):
            dims.append(f"{layer.in_channels} input")
        if layer.out_channels % block and layer.name != last:
            dims.append(f"{layer.out_channels} output")
        if dims:
            warnings.append(
                _warn(
                    code,
                    layer.name,
                    f"{' and '.join(dims)} channels are not a multiple of "
                    f"{block} ({why}): the layer costs as much as the next "
                    f"multiple of {block}",
                )
            )
        if nm:
            if layer.in_channels % 4:
                warnings.append(
                    _warn(
                        "nm-ineligible",
                        layer.name,
                        f"{layer.in_channels} input channels are not a multiple of 4: cannot carry 2:4, stays dense",
                    )
                )
            elif layer.groups > 1:
                warnings.append(
                    _warn(
                        "nm-grouped",
                        layer.name,
                        f"grouped convolution (groups={layer.groups}): TensorRT will pick a dense kernel",
                    )
                )
            elif min(layer.in_channels, layer.out_channels) < min_sparse_channels:
                warnings.append(
                    _warn(
                        "nm-small",
                        layer.name,
                        f"{layer.in_channels} in / {layer.out_channels} out channels, fewer than "
                        f"{min_sparse_channels}: TensorRT will likely pick a dense kernel",
                    )
                )
            if layer.in_channels % 4 == 0 and layer.groups == 1 and not layer.follows_2_4:
                warnings.append(_warn("nm-dense", layer.name, "weights do not follow 2:4: the layer runs dense"))
        if cost.macs and layer.macs < small_layer_share * cost.macs:
            warnings.append(
                _warn(
                    "small-layer",
                    layer.name,
                    f"{100 * layer.macs / cost.macs:.2f}% of the model's MACs: pruning it cannot "
                    "change the total, and its time is mostly per-call overhead",
                )
            )
    return warnings


def lint_model(
    model: nn.Module, input_shape: tuple[int, ...], pattern: str | None = None, *, precision: str | None = None
) -> list[dict[str, str]]:
    """Lint ``model`` for one sample of ``input_shape``; see the module docstring for the rules.

    Args:
        model: the (pruned) model; run once in eval mode to count shapes.
        input_shape: e.g. ``(3, 224, 224)``.
        pattern: dense, channel, unstructured or nm (2:4).
        precision: fp32, fp16 or int8.
    """
    from edgeprune.analysis.cost import model_cost

    return lint_cost(model_cost(model, input_shape), pattern, precision)
