"""Weight masks for the non-structural patterns: unstructured (fine-grained) and N:M.

A mask keeps the shape of the weight; zeros stay in the tensor. Whether they buy anything depends
on the kernel that runs the layer: ONNX Runtime on a CPU executes them like any other number,
TensorRT's sparse tensor-core kernels skip exactly half the work of a valid 2:4 layer.

N:M runs along the **input-channel** axis, as TensorRT requires: for every output channel and
every kernel position, each run of M consecutive input channels holds at most N non-zeros. Layers
whose input channels are not a multiple of M cannot carry the pattern and are skipped (reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.nm import follows_nm, nm_violations
from edgeprune.vocab import MASK_PATTERNS


@dataclass(frozen=True)
class MaskReport:
    """What a masking pass did to one layer."""

    module: str
    pattern: str
    sparsity: float
    skipped: str | None = None


def prunable_layers(model: nn.Module, ignore: frozenset[str] = frozenset()) -> dict[str, nn.Module]:
    """Conv2d and Linear layers by path, minus ``ignore``."""
    return {
        path: m for path, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and path not in ignore
    }


def unstructured_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the largest-magnitude ``1 - sparsity`` fraction of weights (ties broken by position)."""
    count = int(round(weight.numel() * sparsity))
    mask = torch.ones(weight.numel(), dtype=torch.bool)
    if count > 0:
        order = torch.argsort(weight.detach().abs().flatten(), stable=True)
        mask[order[:count]] = False
    return mask.reshape(weight.shape)


def nm_eligible(weight: torch.Tensor, m: int) -> str | None:
    """None if the weight can carry an N:M pattern along dim 1, else the reason it cannot."""
    if weight.dim() < 2:
        return "not a matrix"
    if weight.shape[1] % m != 0:
        return f"{weight.shape[1]} input channels are not a multiple of {m}"
    return None


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the N largest of every M consecutive input channels, per output channel and position.

    Raises:
        UsageError: the weight is not eligible (see :func:`nm_eligible`), or n > m.
    """
    if not 0 < n <= m:
        raise UsageError(f"N:M needs 0 < N <= M, got {n}:{m}")
    reason = nm_eligible(weight, m)
    if reason:
        raise UsageError(reason)
    # Move input channels last and split them into runs of M: [..., C/M, M].
    w = weight.detach().abs().movedim(1, -1)
    runs = w.reshape(*w.shape[:-1], w.shape[-1] // m, m)
    top = torch.topk(runs, n, dim=-1).indices
    mask = torch.zeros_like(runs, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(w.shape).movedim(-1, 1).contiguous()


def check_nm(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True if the weight obeys the N:M rule along dim 1 (the TensorRT 2:4 check)."""
    if nm_eligible(weight, m):
        return False
    return follows_nm((weight.detach() != 0).cpu().numpy(), n, m)


def make_masks(
    model: nn.Module,
    pattern: str,
    sparsity: float = 0.5,
    n: int = 2,
    m: int = 4,
    ignore: frozenset[str] = frozenset(),
    *,
    block: int = 4,
    banks: int | None = None,
    bank_size: int | None = None,
) -> tuple[dict[str, torch.Tensor], list[MaskReport]]:
    """Masks for every prunable layer, and a per-layer report (skipped layers say why).

    Args:
        model: the model (not modified).
        pattern: a name in ``MASK_PATTERNS``: unstructured, nm, vector, kernel, block or bank.
        sparsity: fraction of weights to zero (N:M fixes it at 1 - N/M).
        n, m: the N:M pattern.
        ignore: layer paths to leave dense.
        block: tile side of the block pattern, in weights of the GEMM view.
        banks, bank_size: the bank pattern's banks per GEMM row, or weights per bank (default 4 banks).
    """
    masks: dict[str, torch.Tensor] = {}
    reports = []
    for path, layer in prunable_layers(model, ignore).items():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        if pattern == "nm":
            if isinstance(layer, nn.Conv2d) and layer.groups > 1:
                reason = "grouped convolution (TensorRT never picks sparse kernels)"
                reports.append(MaskReport(path, pattern, 0.0, reason))
                continue
            why = nm_eligible(weight, m)
            if why:
                reports.append(MaskReport(path, pattern, 0.0, why))
                continue
        elif pattern == "bank":
            why = bank_eligible(weight, banks, bank_size)
            if why:
                reports.append(MaskReport(path, pattern, 0.0, why))
                continue
        elif pattern not in MASK_PATTERNS:
            raise UsageError(f"unknown mask pattern {pattern!r}")
        masks[path] = layer_mask(weight, pattern, sparsity, n=n, m=m, block=block, banks=banks, bank_size=bank_size)
        reports.append(MaskReport(path, pattern, 1.0 - masks[path].float().mean().item()))
    return masks, reports


# ---------------------------------------------------------------------------------------------
# Coarser granularities (Mao et al. 2017), bank-balanced sparsity (Cao et al. 2019), validation.
#
# Every pattern below is a mask over the weight, chosen by magnitude at a coarser unit than one
# weight. Coarser units cost a little accuracy at the same sparsity but need fewer index bits
# (see :mod:`edgeprune.prune.storage`) and map onto hardware that skips whole units.
#
#   fine-grained  one weight                  W[o, c, i, j]
#   vector        a row of a kernel (1-D)     W[o, c, i, :]
#   kernel        a k x k kernel (2-D)        W[o, c, :, :]
#   filter        all of W[o] (3-D)           structural: the ``channel`` pattern of the engine
#   block         b x b tile of the GEMM view (rows = output channels, columns = c*kh*kw)
#   bank          every GEMM row split into equal banks, each keeping the same count
#
# A Linear layer is a GEMM whose "kernels" are 1x1, so vector and kernel masks degenerate to
# fine-grained there, exactly as they do for a 1x1 convolution.
# ---------------------------------------------------------------------------------------------

DEFAULT_BANKS = 4
DEFAULT_BLOCK = 4


def gemm_view(weight: torch.Tensor) -> torch.Tensor:
    """The weight as the GEMM of its im2col form: ``[out channels, in channels * kh * kw]``.

    Row ``o`` is filter ``o``; column order is (input channel, kernel row, kernel column), the
    order ``torch.nn.functional.unfold`` produces, so masks made here line up with im2col.
    """
    return weight.reshape(weight.shape[0], -1)


def as_4d(weight: torch.Tensor) -> torch.Tensor:
    """A Linear weight ``[out, in]`` as a conv weight ``[out, in, 1, 1]`` (a view)."""
    return weight.reshape(*weight.shape, *([1] * (4 - weight.dim()))) if weight.dim() < 4 else weight


def _keep_largest_units(scores: torch.Tensor, sizes: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep mask over units: drop the lowest-scoring units until ``sparsity`` of the weights is gone.

    Units may differ in size (edge blocks); the number dropped is the prefix of the ascending order
    whose weight count is closest to the target, so the achieved sparsity is as near as units allow.
    """
    flat_scores, flat_sizes = scores.flatten(), sizes.flatten().to(torch.float64)
    target = float(flat_sizes.sum()) * sparsity
    order = torch.argsort(flat_scores, stable=True)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(flat_sizes[order], 0)])
    drop = int(torch.argmin((cumulative - target).abs()))
    keep = torch.ones(flat_scores.numel(), dtype=torch.bool)
    keep[order[:drop]] = False
    return keep.reshape(scores.shape)


def vector_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Drop whole kernel rows ``W[o, c, i, :]`` with the smallest L1 norm (Mao et al.'s 1-D unit)."""
    w = as_4d(weight.detach()).abs()
    scores = w.sum(-1)  # [O, C, kh]
    keep = _keep_largest_units(scores, torch.full_like(scores, w.shape[-1]), sparsity)
    return keep.unsqueeze(-1).expand_as(w).reshape(weight.shape).contiguous()


def kernel_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Drop whole k x k kernels ``W[o, c]`` with the smallest L1 norm (Mao et al.'s 2-D unit)."""
    w = as_4d(weight.detach()).abs()
    scores = w.sum((-2, -1))  # [O, C]
    keep = _keep_largest_units(scores, torch.full_like(scores, w.shape[-1] * w.shape[-2]), sparsity)
    return keep[..., None, None].expand_as(w).reshape(weight.shape).contiguous()


def block_mask(weight: torch.Tensor, sparsity: float, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """Drop b x b tiles of the GEMM view with the smallest mean magnitude.

    Edge tiles of a matrix whose sides are not multiples of ``block`` are smaller; ranking by the
    mean rather than the sum keeps them comparable with full tiles.
    """
    if block < 1:
        raise UsageError(f"block size must be positive, got {block}")
    g = gemm_view(weight.detach()).abs()
    rows, cols = g.shape
    pad_r, pad_c = (-rows) % block, (-cols) % block
    padded = torch.nn.functional.pad(g, (0, pad_c, 0, pad_r))
    real = torch.nn.functional.pad(torch.ones_like(g), (0, pad_c, 0, pad_r))
    br, bc = padded.shape[0] // block, padded.shape[1] // block
    sums = padded.reshape(br, block, bc, block).sum((1, 3))
    sizes = real.reshape(br, block, bc, block).sum((1, 3))
    keep = _keep_largest_units(sums / sizes, sizes, sparsity)
    full = keep.repeat_interleave(block, 0).repeat_interleave(block, 1)[:rows, :cols]
    return full.reshape(weight.shape).contiguous()


def resolve_bank_size(row_length: int, banks: int | None = None, bank_size: int | None = None) -> int:
    """Bank size for a GEMM row of ``row_length`` given a bank count or a bank size (not both).

    Raises:
        ValueError: both or neither-valid parameters, or a row that does not split evenly.
    """
    if banks is not None and bank_size is not None:
        raise UsageError("give the bank count or the bank size, not both")
    if bank_size is None:
        count = DEFAULT_BANKS if banks is None else banks
        if count < 1:
            raise UsageError(f"bank count must be positive, got {count}")
        if row_length % count:
            raise UsageError(f"a row of {row_length} weights does not split into {count} equal banks")
        return row_length // count
    if bank_size < 1:
        raise UsageError(f"bank size must be positive, got {bank_size}")
    if row_length % bank_size:
        raise UsageError(f"a row of {row_length} weights does not split into banks of {bank_size}")
    return bank_size


def bank_eligible(weight: torch.Tensor, banks: int | None = None, bank_size: int | None = None) -> str | None:
    """None if every GEMM row of the weight splits into equal banks, else the reason it does not."""
    try:
        resolve_bank_size(gemm_view(weight).shape[1], banks, bank_size)
    except ValueError as err:
        return str(err)
    return None


def bank_balanced_mask(
    weight: torch.Tensor, sparsity: float, banks: int | None = None, bank_size: int | None = None
) -> torch.Tensor:
    """Bank-balanced pruning (Cao et al., FPGA'19, Algorithm 1).

    Every row of the GEMM view is split into equal banks; inside each bank the smallest weights
    are pruned so that every bank keeps the same number, ``bank_size - round(bank_size * sparsity)``
    (at least one). Equal counts are what lets an accelerator give each bank to its own lane with
    no load imbalance and decode nothing (the compressed-sparse-banks format). Ties are broken by
    ``topk``, so the count is exact even where Algorithm 1's threshold would keep extra equal values.

    Raises:
        ValueError: a row does not split into equal banks (see :func:`resolve_bank_size`).
    """
    g = gemm_view(weight.detach()).abs()
    size = resolve_bank_size(g.shape[1], banks, bank_size)
    keep = max(1, size - int(round(size * sparsity)))
    bank_view = g.reshape(g.shape[0], g.shape[1] // size, size)
    top = torch.topk(bank_view, keep, dim=-1).indices
    mask = torch.zeros_like(bank_view, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(weight.shape).contiguous()


def bank_counts(weight: torch.Tensor, banks: int | None = None, bank_size: int | None = None) -> torch.Tensor:
    """Non-zeros per bank, ``[rows, banks]``: equal everywhere for a bank-balanced weight."""
    g = gemm_view(weight.detach() != 0)
    size = resolve_bank_size(g.shape[1], banks, bank_size)
    return g.reshape(g.shape[0], g.shape[1] // size, size).sum(-1)


@dataclass(frozen=True)
class NMCheck:
    """Whether one layer obeys the N:M rule that TensorRT's sparse kernels require.

    Attributes:
        module: layer path.
        ok: the rule holds (every run of M input channels, per output channel and kernel
            position, holds at most N non-zeros) and the layer type can carry it.
        reason: why not, when not.
        violating_runs: runs with more than N non-zeros (0 when ineligible).
        runs: runs checked.
    """

    module: str
    ok: bool
    reason: str | None
    violating_runs: int = 0
    runs: int = 0


def validate_nm(model: nn.Module, n: int = 2, m: int = 4, ignore: frozenset[str] = frozenset()) -> list[NMCheck]:
    """Per layer, whether the TensorRT N:M (2:4) rule holds, and why not where it does not.

    TensorRT checks exactly this before it considers a sparse tactic; a layer that fails is run
    dense, silently, which is why the report names each one.
    """
    checks = []
    for path, layer in prunable_layers(model, ignore).items():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        if isinstance(layer, nn.Conv2d) and layer.groups > 1:
            checks.append(NMCheck(path, False, "grouped convolution (TensorRT never picks sparse kernels)"))
            continue
        why = nm_eligible(weight, m)
        if why:
            checks.append(NMCheck(path, False, why))
            continue
        total, bad = nm_violations((weight.detach() != 0).cpu().numpy(), 1, n, m)
        reason = None if bad == 0 else f"{bad} of {total} runs of {m} hold more than {n} non-zeros"
        checks.append(NMCheck(path, bad == 0, reason, bad, total))
    return checks


def layer_mask(
    weight: torch.Tensor,
    pattern: str,
    sparsity: float,
    *,
    n: int = 2,
    m: int = 4,
    block: int = DEFAULT_BLOCK,
    banks: int | None = None,
    bank_size: int | None = None,
) -> torch.Tensor:
    """The mask of one weight for any mask pattern in :data:`MASK_PATTERNS`.

    Raises:
        ValueError: unknown pattern, or a weight that cannot carry it (the message says why).
    """
    if pattern == "unstructured":
        return unstructured_mask(weight, sparsity)
    if pattern == "nm":
        return nm_mask(weight, n, m)
    if pattern == "vector":
        return vector_mask(weight, sparsity)
    if pattern == "kernel":
        return kernel_mask(weight, sparsity)
    if pattern == "block":
        return block_mask(weight, sparsity, block)
    if pattern == "bank":
        return bank_balanced_mask(weight, sparsity, banks, bank_size)
    raise UsageError(f"unknown mask pattern {pattern!r}: choose one of {', '.join(MASK_PATTERNS)}")
