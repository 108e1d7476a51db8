"""Cost model: MACs, parameters and bytes per layer, and theoretical speedup.

MACs are counted for Conv2d and Linear layers only: they are more than 95% of the arithmetic of
a CNN, and BatchNorm folds into the preceding conv at export. A conv's MACs are
``output elements x (input channels / groups) x kernel area``, counted with forward hooks on one
example batch, so any spatial size and stride is right by construction.

*Effective* MACs are what a kernel that exploits the layer's sparsity would execute: dense MACs
times the fraction of non-zero weights. For a channel-pruned model the layers are simply smaller,
so effective equals dense. ``theoretical speedup = baseline dense MACs / effective MACs`` is the
MAC-ratio estimate; it is labelled as such wherever it is shown, because it ignores memory
traffic and kernel availability (:mod:`edgeprune.analysis.speedup` adds the kernel-aware and
roofline forms).

A model built on PyTorch's ``meta`` device is counted too: only shapes flow through the hooks, so
the counts of a VGG or a ResNet-152 cost milliseconds and no memory. Weights do not exist there,
so every layer is taken as dense (density 1.0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

# Bytes per element of each precision the cost model knows.
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}
# Pattern names as the pruning engine records them, and the label each one gets in tables.
PATTERN_LABELS = {"dense": "dense", "unstructured": "unstructured", "nm": "2:4", "channel": "channel"}


def follows_nm(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True if ``weight`` obeys N:M along its input-channel axis (dim 1), the TensorRT rule.

    A weight whose input channels are not a multiple of ``m`` can never carry the pattern.
    """
    if weight.is_meta or weight.dim() < 2 or weight.shape[1] % m:
        return False
    w = (weight.detach() != 0).movedim(1, -1)
    runs = w.reshape(*w.shape[:-1], w.shape[-1] // m, m)
    return bool((runs.sum(-1) <= n).all())


@dataclass(frozen=True)
class LayerCost:
    """Cost of one Conv2d or Linear layer at batch 1.

    Byte fields (``weight_bytes``, ``activation_bytes``) are at the ``bytes_per_weight`` the cost
    was taken with for weights and at fp32 for activations; the ``*_elements`` fields let other
    precisions be priced without recounting.
    """

    name: str
    type: str
    in_channels: int
    out_channels: int
    macs: int
    params: int
    weight_bytes: int
    activation_bytes: int
    density: float
    effective_macs: float
    groups: int = 1
    kernel_size: tuple[int, int] = (1, 1)
    weight_elements: int = 0
    input_elements: int = 0
    output_elements: int = 0
    follows_2_4: bool = False

    @property
    def arithmetic_intensity(self) -> float:
        """MACs per byte moved (weights + output activations), at fp32."""
        moved = self.weight_bytes + self.activation_bytes
        return self.macs / moved if moved else 0.0

    def bytes_moved(self, bytes_per_element: int = 4, batch_size: int = 1) -> int:
        """Minimum DRAM traffic of one call: weights once, input read and output written per sample.

        Biases are counted with the weights. This is the roofline's memory term: a kernel cannot
        move less than this, so memory time is a lower bound.
        """
        activations = (self.input_elements + self.output_elements) * batch_size
        return (self.params + activations) * bytes_per_element

    def intensity_flop_per_byte(self, bytes_per_element: int = 4, batch_size: int = 1) -> float:
        """Arithmetic intensity in FLOP per byte (2 FLOP per MAC) over :meth:`bytes_moved`."""
        moved = self.bytes_moved(bytes_per_element, batch_size)
        return 2.0 * self.macs * batch_size / moved if moved else 0.0

    @property
    def effective_macs_by_pattern(self) -> dict[str, float]:
        """MACs a kernel exploiting each pattern would execute for this layer, as it stands.

        ``dense`` and ``channel`` are the layer's MACs (a channel-pruned layer is just smaller);
        ``unstructured`` scales by density; ``nm`` halves the layer only if its weights follow
        2:4, since a layer that does not follow it runs dense.
        """
        return {
            "dense": float(self.macs),
            "unstructured": self.macs * self.density,
            "nm": self.macs / 2 if self.follows_2_4 else float(self.macs),
            "channel": float(self.macs),
        }


@dataclass(frozen=True)
class ModelCost:
    """Per-layer costs and totals; ``params`` counts every parameter of the model."""

    layers: list[LayerCost]
    params: int
    macs: int
    effective_macs: float
    weight_bytes: int
    nonzero_params: int
    input_shape: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [asdict(layer) for layer in self.layers]
        return data

    def by_name(self) -> dict[str, LayerCost]:
        """Layers keyed by module path."""
        return {layer.name: layer for layer in self.layers}

    def effective_macs_by_pattern(self) -> dict[str, float]:
        """Model totals of :attr:`LayerCost.effective_macs_by_pattern`."""
        totals: dict[str, float] = {}
        for layer in self.layers:
            for pattern, value in layer.effective_macs_by_pattern.items():
                totals[pattern] = totals.get(pattern, 0.0) + value
        return totals


def _first_device(model: nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


@torch.no_grad()
def model_cost(model: nn.Module, input_shape: tuple[int, ...], bytes_per_weight: int = 4) -> ModelCost:
    """Count MACs, parameters and bytes for one sample of ``input_shape`` (no batch dim).

    Args:
        model: the model; it is run once in eval mode and left as it was. A model on the ``meta``
            device is counted from shapes alone, every layer taken as dense.
        input_shape: e.g. ``(1, 32, 32)``.
        bytes_per_weight: 4 for fp32, 2 for fp16, 1 for int8.
    """
    layers: list[LayerCost] = []
    hooks = []

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            weight = module.weight
            assert isinstance(weight, torch.Tensor)
            groups, kernel = 1, (1, 1)
            if isinstance(module, nn.Conv2d):
                per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
                in_ch, out_ch = module.in_channels, module.out_channels
                groups, kernel = module.groups, (int(module.kernel_size[0]), int(module.kernel_size[1]))
            else:
                assert isinstance(module, nn.Linear)
                per_output = module.in_features
                in_ch, out_ch = module.in_features, module.out_features
            out_elements = int(output[0].numel())
            macs = out_elements * per_output
            params = sum(p.numel() for p in module.parameters(recurse=False))
            density = 1.0 if weight.is_meta else float((weight != 0).sum()) / weight.numel()
            layers.append(
                LayerCost(
                    name=name,
                    type=type(module).__name__,
                    in_channels=in_ch,
                    out_channels=out_ch,
                    macs=macs,
                    params=params,
                    weight_bytes=params * bytes_per_weight,
                    activation_bytes=out_elements * 4,
                    density=density,
                    effective_macs=macs * density,
                    groups=groups,
                    kernel_size=kernel,
                    weight_elements=int(weight.numel()),
                    input_elements=int(inputs[0][0].numel()),
                    output_elements=out_elements,
                    follows_2_4=follows_nm(weight),
                )
            )

        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape, device=_first_device(model)))
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(p.numel() if p.is_meta else int((p != 0).sum()) for p in model.parameters())
    return ModelCost(
        layers=layers,
        params=params,
        macs=sum(layer.macs for layer in layers),
        effective_macs=sum(layer.effective_macs for layer in layers),
        weight_bytes=params * bytes_per_weight,
        nonzero_params=nonzero,
        input_shape=tuple(int(d) for d in input_shape),
    )


def theoretical_speedup(baseline: ModelCost, variant: ModelCost) -> float:
    """MAC-ratio estimate: baseline dense MACs / variant effective MACs."""
    return baseline.macs / variant.effective_macs if variant.effective_macs else float("inf")
