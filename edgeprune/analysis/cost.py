"""Cost model: MACs, parameters and bytes per layer, and theoretical speedup.

MACs are counted for Conv2d and Linear layers only: they are more than 95% of the arithmetic of
a CNN, and BatchNorm folds into the preceding conv at export. A conv's MACs are
``output elements x (input channels / groups) x kernel area``, counted with forward hooks on one
example batch, so any spatial size and stride is right by construction.

*Effective* MACs are what a kernel that exploits the layer's sparsity would execute: dense MACs
times the fraction of non-zero weights. For a channel-pruned model the layers are simply smaller,
so effective equals dense. ``theoretical speedup = baseline dense MACs / effective MACs`` is the
MAC-ratio estimate; it is labelled as such wherever it is shown, because it ignores memory
traffic and kernel availability (see the analysis issue for the kernel-aware and roofline forms).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class LayerCost:
    """Cost of one Conv2d or Linear layer at batch 1."""

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

    @property
    def arithmetic_intensity(self) -> float:
        """MACs per byte moved (weights + output activations), at fp32."""
        moved = self.weight_bytes + self.activation_bytes
        return self.macs / moved if moved else 0.0


@dataclass(frozen=True)
class ModelCost:
    """Per-layer costs and totals; ``params`` counts every parameter of the model."""

    layers: list[LayerCost]
    params: int
    macs: int
    effective_macs: float
    weight_bytes: int
    nonzero_params: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [asdict(layer) for layer in self.layers]
        return data


@torch.no_grad()
def model_cost(model: nn.Module, input_shape: tuple[int, ...], bytes_per_weight: int = 4) -> ModelCost:
    """Count MACs, parameters and bytes for one sample of ``input_shape`` (no batch dim).

    Args:
        model: the model; it is run once in eval mode and left as it was.
        input_shape: e.g. ``(1, 32, 32)``.
        bytes_per_weight: 4 for fp32, 2 for fp16, 1 for int8.
    """
    layers: list[LayerCost] = []
    hooks = []

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            weight = module.weight
            assert isinstance(weight, torch.Tensor)
            if isinstance(module, nn.Conv2d):
                per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
                in_ch, out_ch = module.in_channels, module.out_channels
            else:
                assert isinstance(module, nn.Linear)
                per_output = module.in_features
                in_ch, out_ch = module.in_features, module.out_features
            macs = int(output[0].numel()) * per_output
            params = sum(p.numel() for p in module.parameters(recurse=False))
            density = float((weight != 0).sum()) / weight.numel()
            layers.append(LayerCost(
                name=name, type=type(module).__name__, in_channels=in_ch, out_channels=out_ch, macs=macs,
                params=params, weight_bytes=params * bytes_per_weight,
                activation_bytes=int(output[0].numel()) * 4, density=density, effective_macs=macs * density,
            ))
        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape))
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return ModelCost(
        layers=layers,
        params=params,
        macs=sum(layer.macs for layer in layers),
        effective_macs=sum(layer.effective_macs for layer in layers),
        weight_bytes=params * bytes_per_weight,
        nonzero_params=nonzero,
    )


def theoretical_speedup(baseline: ModelCost, variant: ModelCost) -> float:
    """MAC-ratio estimate: baseline dense MACs / variant effective MACs."""
    return baseline.macs / variant.effective_macs if variant.effective_macs else float("inf")
