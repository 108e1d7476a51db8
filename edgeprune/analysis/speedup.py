"""Theoretical speedup three ways, each labelled, each explainable layer by layer.

1. **MAC ratio**: baseline dense MACs / variant effective MACs. What the paper says; ignores
   whether any kernel can skip the zeros, and ignores memory traffic.
2. **Kernel-aware**: a pattern counts only on layers where the target has a kernel that exploits
   it, combined over layers by their share of time (Amdahl's law):
   ``S = 1 / (f_other + sum_i f_i / s_i)``.
   * channel pruning counts everywhere (the layer is physically smaller): ``s_i`` = its MAC ratio;
   * 2:4 counts only on Ampere-or-newer GPUs (Orin), only on layers whose weights follow 2:4, that
     are not grouped, whose input channels are a multiple of 4 and, by the assumption used here,
     whose input *and* output channels are at least ``min_sparse_channels`` (256): TensorRT times
     sparse and dense tactics and, per its maintainers, sparse only wins from about 256 channels
     (NVIDIA/TensorRT #3849, #4065). There it is at most 2x;
   * unstructured (and the other mask patterns) count only with a sparse kernel, which neither
     TensorRT nor ONNX Runtime's CPU provider has: 1.0x.
   Time shares come from a measured baseline profile when one is given, else from the roofline
   model of the baseline on the device (labelled as such).
3. **Roofline**: every layer costs ``max(FLOP / peak FLOP/s, bytes / bandwidth)`` on the device
   table's figures, with the same kernel rules as (2); a 2:4 layer on a sparse kernel halves its
   FLOP and stores its weights compressed (half the values plus 2 bits of metadata per kept
   value). Speedup = sum of baseline layer times / sum of variant layer times. Ops other than
   Conv/Gemm and any fusion are not modelled, and every layer is assumed to read its input and
   write its output through DRAM.

All three are estimates, and every dict this module returns says so in its labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from edgeprune.analysis.cost import BYTES_PER_ELEMENT, LayerCost, ModelCost
from edgeprune.analysis.devices import DeviceSpec, get_device
from edgeprune.errors import UsageError
from edgeprune.vocab import MASK_PATTERNS, NM_NAMES

OTHER = "(other ops)"
MIN_SPARSE_CHANNELS = 256
MAX_2_4_SPEEDUP = 2.0
# Metadata of 2:4 compressed weights: 2 bits per kept value (Mishra et al. 2021).
NM_METADATA_BYTES_PER_KEPT = 2 / 8

# Mask patterns other than N:M: no dense-hardware kernel exploits them (only unstructured-sparse ones).
UNSTRUCTURED_MASKS = tuple(p for p in MASK_PATTERNS if p not in NM_NAMES)
PATTERN_ALIASES = {
    **{name: "nm" for name in NM_NAMES},
    "dense": "dense",
    "channel": "channel",
    "none": "dense",
    "": "dense",
}


def normalize_pattern(pattern: str | None) -> str:
    """Map the names used across the project (``2:4``, ``n:m``, ``nm``) onto the engine's names.

    Raises:
        UsageError: an unknown pattern name.
    """
    key = (pattern or "dense").lower()
    if key in PATTERN_ALIASES:
        return PATTERN_ALIASES[key]
    if key in UNSTRUCTURED_MASKS:
        return key
    raise UsageError(f"unknown sparsity pattern '{pattern}': use dense, channel, unstructured or nm (2:4)")


def labels(device: DeviceSpec, precision: str) -> dict[str, str]:
    """The label of each figure, naming the device and precision it assumes."""
    return {
        "mac_ratio": "MAC ratio (baseline dense MACs / variant effective MACs), estimate",
        "kernel_aware": f"kernel-aware on {device.label} ({device.runtime}): a pattern counts only where a "
        "kernel exploits it, combined by layer time share (Amdahl), estimate",
        "roofline": f"roofline on {device.label}, {precision}: per layer max(compute, memory) time "
        "from the device table, estimate",
    }


@dataclass(frozen=True)
class LayerSpeedup:
    """One layer's three theoretical figures and what runs it.

    Attributes:
        name: module path.
        pattern: the sparsity pattern the layer carries in the variant (``dense`` if none).
        mac_ratio: baseline MACs / variant effective MACs of this layer.
        kernel_aware: the speedup a kernel on the device really gets (physical MAC ratio times the
            sparse-kernel factor where one applies).
        roofline: baseline roofline time / variant roofline time of this layer.
        time_share: the layer's share of baseline time used in the Amdahl combination.
        baseline_s, variant_s: roofline times at the given batch size, seconds.
        bound: ``compute`` or ``memory`` for the variant layer in the roofline.
        kernel: what executes the variant layer.
        reason: why the kernel-aware figure is below the MAC ratio, if it is.
    """

    name: str
    pattern: str
    mac_ratio: float
    kernel_aware: float
    roofline: float
    time_share: float
    baseline_s: float
    variant_s: float
    bound: str
    kernel: str
    reason: str


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.inf


def _precision(device: DeviceSpec, precision: str | None, assumptions: list[str]) -> str:
    chosen = precision or device.default_precision
    if chosen not in BYTES_PER_ELEMENT:
        raise UsageError(f"unknown precision '{chosen}': use fp32, fp16 or int8")
    if device.peak(chosen) is None:
        assumptions.append(
            f"{device.label} has no {chosen} peak in the device table; the fp32 peak is used "
            f"for compute time (bytes are still {chosen})"
        )
    return chosen


def sparse_kernel(
    layer: LayerCost, pattern: str, device: DeviceSpec, min_sparse_channels: int = MIN_SPARSE_CHANNELS
) -> tuple[float, str, str]:
    """The factor a sparse kernel gives this layer on ``device``, the kernel's name, and the reason.

    Returns:
        (factor, kernel, reason): factor 1.0 when no sparse kernel applies, with the reason.
    """
    if layer.density >= 1.0:
        return 1.0, "dense kernel", ""
    if pattern == "nm":
        if not layer.follows_2_4:
            return 1.0, "dense kernel", "weights do not follow 2:4"
        if not device.sparse_2_4_kernels:
            return 1.0, "dense kernel", f"no 2:4 sparse tensor cores on {device.label} ({device.runtime})"
        if layer.groups > 1:
            return 1.0, "dense kernel", "grouped convolution: TensorRT never considers sparse kernels"
        if layer.in_channels % 4:
            return 1.0, "dense kernel", f"{layer.in_channels} input channels are not a multiple of 4"
        if min(layer.in_channels, layer.out_channels) < min_sparse_channels:
            return (
                1.0,
                "dense kernel",
                (f"fewer than {min_sparse_channels} channels: TensorRT picks the dense tactic (assumption)"),
            )
        return min(MAX_2_4_SPEEDUP, 1.0 / max(layer.density, 1e-12)), "2:4 sparse kernel", ""
    if pattern in UNSTRUCTURED_MASKS:
        if device.unstructured_sparse_kernels:
            return 1.0 / max(layer.density, 1e-12), f"{pattern} sparse kernel", ""
        return 1.0, "dense kernel", f"no {pattern} sparse kernel in {device.runtime}: zeros are multiplied"
    return 1.0, "dense kernel", "zero weights without a sparse pattern run dense"


def _roofline_s(
    layer: LayerCost, device: DeviceSpec, precision: str, batch_size: int, sparse_factor: float = 1.0
) -> tuple[float, str]:
    """Seconds for one call of ``layer`` at ``batch_size`` and whether compute or memory bounds it."""
    peak = device.peak(precision) or device.peak("fp32") or 0.0
    elt = BYTES_PER_ELEMENT[precision]
    compute = 2.0 * layer.macs * batch_size / sparse_factor / peak if peak else 0.0
    moved = layer.bytes_moved(elt, batch_size)
    if sparse_factor > 1.0:  # compressed 2:4 weights: half the values plus metadata per kept value
        kept = layer.weight_elements / sparse_factor
        moved -= layer.weight_elements * elt
        moved += int(kept * (elt + NM_METADATA_BYTES_PER_KEPT))
    memory = moved / device.memory_bytes_per_s.value if device.memory_bytes_per_s.value else 0.0
    return (compute, "compute") if compute >= memory else (memory, "memory")


def layer_speedups(
    baseline: ModelCost,
    variant: ModelCost,
    pattern: str,
    device: DeviceSpec,
    per_layer_pattern: Mapping[str, str] | None = None,
    *,
    precision: str,
    batch_size: int = 1,
    time_shares: Mapping[str, float] | None = None,
    min_sparse_channels: int = MIN_SPARSE_CHANNELS,
) -> list[LayerSpeedup]:
    """Per-layer figures for every baseline layer, matched to the variant by module path.

    A baseline layer missing from the variant was removed: its variant time is 0.
    """
    pattern = normalize_pattern(pattern)
    variants = variant.by_name()
    base_times = {layer.name: _roofline_s(layer, device, precision, batch_size)[0] for layer in baseline.layers}
    if time_shares is None:
        total = sum(base_times.values()) or 1.0
        shares = {name: t / total for name, t in base_times.items()}
    else:
        shares = {name: float(time_shares.get(name, 0.0)) for name in base_times}
    rows = []
    for base in baseline.layers:
        var = variants.get(base.name)
        if var is None:
            rows.append(
                LayerSpeedup(
                    base.name,
                    "removed",
                    math.inf,
                    math.inf,
                    math.inf,
                    shares[base.name],
                    base_times[base.name],
                    0.0,
                    "none",
                    "removed",
                    "",
                )
            )
            continue
        layer_pattern = normalize_pattern((per_layer_pattern or {}).get(base.name, pattern))
        factor, kernel, reason = sparse_kernel(var, layer_pattern, device, min_sparse_channels)
        physical = _ratio(base.macs, var.macs)
        if physical > 1.0 and kernel == "dense kernel":
            kernel = "smaller dense kernel"
        var_s, bound = _roofline_s(var, device, precision, batch_size, factor)
        rows.append(
            LayerSpeedup(
                name=base.name,
                pattern=layer_pattern if var.density < 1.0 or physical > 1.0 else "dense",
                mac_ratio=_ratio(base.macs, var.effective_macs),
                kernel_aware=physical * factor,
                roofline=_ratio(base_times[base.name], var_s),
                time_share=shares[base.name],
                baseline_s=base_times[base.name],
                variant_s=var_s,
                bound=bound,
                kernel=kernel,
                reason=reason,
            )
        )
    return rows


def amdahl(shares_and_speedups: list[tuple[float, float]], other_share: float = 0.0) -> float:
    """``1 / (other + sum f_i / s_i)``; an infinite ``s_i`` (layer removed) contributes nothing.

    Shares are normalized to sum to 1 with ``other_share`` first, so partial profiles still work.
    """
    total = other_share + sum(f for f, _ in shares_and_speedups)
    if total <= 0:
        return 1.0
    remaining = other_share / total + sum((f / total) / s for f, s in shares_and_speedups if s > 0)
    return 1.0 / remaining if remaining > 0 else math.inf


def theoretical_figures(
    baseline_cost: ModelCost,
    variant_cost: ModelCost,
    pattern: str,
    device: str | DeviceSpec | None = None,
    per_layer_pattern: Mapping[str, str] | None = None,
    *,
    precision: str | None = None,
    batch_size: int = 1,
    time_shares: Mapping[str, float] | None = None,
    min_sparse_channels: int = MIN_SPARSE_CHANNELS,
    include_layers: bool = True,
) -> dict[str, Any]:
    """The three theoretical speedups of ``variant_cost`` over ``baseline_cost`` on ``device``.

    Args:
        baseline_cost: the dense model's cost.
        variant_cost: the pruned model's cost (same module paths; channel-pruned layers smaller).
        pattern: dense, channel, unstructured, nm / 2:4 (the variant's pattern).
        device: a name from :mod:`edgeprune.analysis.devices` (default: the host CPU).
        per_layer_pattern: module path -> pattern, overriding ``pattern`` per layer.
        precision: fp32, fp16 or int8 (default: the device's usual one).
        batch_size: batch the roofline prices (activations scale with it, weights do not).
        time_shares: module path -> share of baseline time, e.g. from a measured profile; any
            share left over (``OTHER`` or unlisted ops) is taken as not sped up.
        min_sparse_channels: the 2:4 channel threshold of the kernel-aware and roofline rules.
        include_layers: add the per-layer rows under ``layers``.

    Returns:
        ``{"mac_ratio", "kernel_aware", "roofline", "labels", "device", "device_label",
        "precision", "batch_size", "time_shares_from", "assumptions", "layers"}``.
    """
    spec = get_device(device)
    assumptions: list[str] = []
    chosen = _precision(spec, precision, assumptions)
    rows = layer_speedups(
        baseline_cost,
        variant_cost,
        pattern,
        spec,
        per_layer_pattern,
        precision=chosen,
        batch_size=batch_size,
        time_shares=time_shares,
        min_sparse_channels=min_sparse_channels,
    )
    other = 0.0
    if time_shares is not None:
        other = max(0.0, 1.0 - sum(row.time_share for row in rows))
    kernel_aware = amdahl([(row.time_share, row.kernel_aware) for row in rows], other)
    base_total = sum(row.baseline_s for row in rows)
    known = {row.name for row in rows}
    extra = sum(
        _roofline_s(layer, spec, chosen, batch_size)[0] for layer in variant_cost.layers if layer.name not in known
    )
    roofline = _ratio(base_total, sum(row.variant_s for row in rows) + extra)
    assumptions += [
        "only Conv2d and Linear layers are costed; other ops are "
        + ("taken as unchanged (their measured share)" if time_shares is not None else "not modelled"),
        f"2:4 counts only on Ampere-or-newer GPUs, on layers that follow 2:4, are not grouped, have input "
        f"channels % 4 == 0 and at least {min_sparse_channels} input and output channels; at most "
        f"{MAX_2_4_SPEEDUP:g}x there",
        f"unstructured and other mask patterns count only with a sparse kernel; none exists on {spec.runtime}"
        if not spec.unstructured_sparse_kernels
        else "unstructured sparse kernels assumed",
        "channel pruning counts everywhere: a smaller layer is a smaller dense kernel",
        "roofline: peak figures from the device table, every layer reads its input and writes its "
        "output through DRAM, no fusion",
    ]
    result: dict[str, Any] = {
        "mac_ratio": _ratio(baseline_cost.macs, variant_cost.effective_macs),
        "kernel_aware": kernel_aware,
        "roofline": roofline,
        "labels": labels(spec, chosen),
        "device": spec.name,
        "device_label": spec.label,
        "precision": chosen,
        "batch_size": batch_size,
        "time_shares_from": "measured profile"
        if time_shares is not None
        else f"roofline model of the baseline on {spec.label} (estimate)",
        "assumptions": assumptions,
    }
    if include_layers:
        result["layers"] = [_finite(asdict(row)) for row in rows]
    return result


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity: a removed layer's speedups become None."""
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in row.items()}
