"""A CPU execution path for unstructured sparsity: CSR kernels, used per layer only where they win.

Dense kernels execute zeros like any other number, so a 50%-sparse layer runs as fast as a dense
one. A CSR (compressed sparse row) kernel skips the zeros but pays for it with irregular memory
access and index arithmetic, and on a CPU with a tuned dense GEMM it only wins at high sparsity:
the *crossover* depends on the layer's shape and the machine. Wen et al. (2016, Fig. 1) measured
CSR slower than dense for most of sparse AlexNet's layers; this module measures the same trade
here, per layer, and swaps in CSR only where it is faster.

* :class:`CSRLinear`: ``y = W_csr x + b``.
* :class:`CSRConv2d`: the convolution in its im2col (GEMM) form, ``Y = W_csr [C*kh*kw, B*L]``,
  with the columns from ``torch.nn.functional.unfold``.
* :func:`sparsify_model`: times each sparse layer dense and as CSR on its real input shape and
  replaces the ones where CSR is faster by at least ``min_speedup``.
* :func:`crossover_table`: dense GEMM against CSR for one GEMM shape over a range of sparsities.

These modules are for PyTorch inference on the host; they do not export to ONNX (the ONNX Runtime
CPU kernels are dense), which is why they are a separate path and not part of a bundle.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import UsageError


def to_csr(dense: torch.Tensor) -> torch.Tensor:
    """A 2-D tensor as torch's CSR layout (the 'beta' warning is silenced; the layout is what we test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return dense.detach().contiguous().to_sparse_csr()


def csr_matmul(weight_csr: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``weight_csr @ dense`` for a CSR ``[O, K]`` and a dense ``[K, N]``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.mm(weight_csr, dense)


class CSRLinear(nn.Module):
    """A Linear layer whose weight is stored and multiplied as CSR."""

    weight_csr: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_csr", to_csr(linear.weight))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = csr_matmul(self.weight_csr, flat.T.contiguous()).T
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


class CSRConv2d(nn.Module):
    """A Conv2d (groups=1) run as im2col + CSR GEMM."""

    weight_csr: torch.Tensor

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.groups != 1:
            raise UsageError("CSR convolution supports groups=1 only")
        if not isinstance(conv.padding, tuple):
            raise UsageError(f"padding mode {conv.padding!r} is not supported; use explicit padding")
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.register_buffer("weight_csr", to_csr(conv.weight.reshape(conv.out_channels, -1)))
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        positions = cols.shape[-1]
        gemm_in = cols.transpose(0, 1).reshape(cols.shape[1], batch * positions)
        out = csr_matmul(self.weight_csr, gemm_in)  # [O, B*L]
        h_out = (height + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        w_out = (width + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        out = out.reshape(self.out_channels, batch, h_out, w_out).transpose(0, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out.contiguous()


def to_csr_module(module: nn.Module) -> nn.Module:
    """The CSR twin of a Linear or groups=1 Conv2d.

    Raises:
        ValueError: any other module.
    """
    if isinstance(module, nn.Linear):
        return CSRLinear(module)
    if isinstance(module, nn.Conv2d):
        return CSRConv2d(module)
    raise UsageError(f"no CSR execution for {type(module).__name__}")


def time_ms(fn: Callable[[], Any], repeats: int = 30, warmup: int = 3, min_time_s: float = 0.05) -> float:
    """Median wall time of ``fn()`` in milliseconds (host perf_counter; CPU work is synchronous)."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - started < min_time_s:
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if len(samples) >= 20 * repeats:
            break
    samples.sort()
    return samples[len(samples) // 2]


def _layer_inputs(model: nn.Module, example: torch.Tensor, paths: list[str]) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}

    def recorder(path: str) -> Callable[[nn.Module, Any, Any], None]:
        def record(_module: nn.Module, args: Any, _output: Any) -> None:
            seen.setdefault(path, args[0].detach().clone())

        return record

    handles = [modules[p].register_forward_hook(recorder(p)) for p in paths]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


@torch.no_grad()
def sparsify_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    min_speedup: float = 1.0,
    min_sparsity: float = 0.0,
    force: bool = False,
    repeats: int = 30,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Replace each sparse layer by its CSR twin where that is measured faster; the input is untouched.

    Args:
        model: a masked (unstructured) model.
        input_shape: one sample's shape.
        batch_size: the batch the decision is timed at (the crossover moves with it).
        min_speedup: replace a layer only if dense ms / CSR ms is at least this.
        min_sparsity: skip layers less sparse than this without timing them.
        force: replace every eligible sparse layer without timing (for tests and experiments).
        repeats: timed repetitions per layer and path.

    Returns:
        (model with CSR layers where they win, one report row per Conv2d/Linear layer).
    """
    result = copy.deepcopy(model).eval()
    modules = dict(result.named_modules())
    paths = [p for p, m in modules.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
    example = torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(0))
    inputs = _layer_inputs(result, example, paths)
    report = []
    for path in paths:
        layer = modules[path]
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        sparsity = 1.0 - float((weight != 0).float().mean())
        row: dict[str, Any] = {
            "module": path,
            "sparsity": sparsity,
            "dense_ms": None,
            "csr_ms": None,
            "speedup": None,
            "theoretical": 1 / max(1e-9, 1 - sparsity),
            "csr": False,
            "reason": None,
        }
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            row["reason"] = "grouped convolution"
        elif path not in inputs:
            row["reason"] = "not reached by the forward pass"
        elif sparsity <= min_sparsity or sparsity == 0.0:
            row["reason"] = f"sparsity {sparsity:.0%} at or below {min_sparsity:.0%}"
        else:
            twin = to_csr_module(layer)
            if force:
                row["csr"], row["reason"] = True, "forced"
            else:
                x = inputs[path]
                row["dense_ms"] = time_ms(partial(layer, x), repeats)
                row["csr_ms"] = time_ms(partial(twin, x), repeats)
                row["speedup"] = row["dense_ms"] / row["csr_ms"]
                row["csr"] = row["speedup"] >= min_speedup
                if not row["csr"]:
                    row["reason"] = f"CSR measured {row['speedup']:.2f}x of dense (< {min_speedup:.2f}x)"
            if row["csr"]:
                _set_module(result, path, twin)
        report.append(row)
    return result, report


@torch.no_grad()
def crossover_table(
    rows: int,
    depth: int,
    columns: int,
    sparsities: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99),
    repeats: int = 30,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Dense GEMM against CSR GEMM for ``W [rows, depth] @ X [depth, columns]`` at each sparsity.

    For a convolution: rows = output channels, depth = C*kh*kw, columns = batch x output positions.
    The zeros are placed uniformly at random (unstructured pruning), the dense operand is the same
    for both paths, and each path is timed by :func:`time_ms`.
    """
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, depth, generator=generator)
    x = torch.randn(depth, columns, generator=generator)
    table = []
    for sparsity in sparsities:
        mask = torch.rand(rows, depth, generator=generator) >= sparsity
        w = weight * mask
        w_csr = to_csr(w)
        dense_ms = time_ms(partial(torch.mm, w, x), repeats)
        csr_ms = time_ms(partial(csr_matmul, w_csr, x), repeats)
        actual = 1.0 - float(mask.float().mean())
        table.append(
            {
                "rows": rows,
                "depth": depth,
                "columns": columns,
                "sparsity": actual,
                "dense_ms": dense_ms,
                "csr_ms": csr_ms,
                "measured_speedup": dense_ms / csr_ms,
                "theoretical_speedup": 1.0 / max(1e-9, 1.0 - actual),
            }
        )
    return table


def crossover_sparsity(table: list[dict[str, Any]]) -> float | None:
    """The lowest sparsity in a crossover table from which CSR stays faster than dense, or None."""
    winning = None
    for row in sorted(table, key=lambda r: r["sparsity"], reverse=True):
        if row["measured_speedup"] >= 1.0:
            winning = row["sparsity"]
        else:
            break
    return winning
