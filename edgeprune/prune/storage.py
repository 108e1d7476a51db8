"""How many bytes a layer's weights take in each sparse storage format.

Sparsity only shrinks a model once the zeros are stored in a compressed format, and every format
pays for its zeros with index bits. Which format wins depends on the pattern, which is the point
Mao et al. (2017) make about granularity: coarse units need one index per unit rather than one per
weight, so at equal sparsity they compress better.

Formats, for a layer whose GEMM view (see :func:`~edgeprune.prune.patterns.gemm_view`) has R rows
and L columns, ``nnz`` non-zeros, values of ``value_bits`` bits:

=================  ===========================================================================
dense              R * L values
csr                nnz values + nnz column indices + (R + 1) row pointers
bitmask            nnz values + one bit per weight
csb                compressed sparse banks (Cao et al. 2019): every bank stores the same count
                   k (the largest bank's), each entry a value plus a log2(bank size)-bit index;
                   no pointers. Compact only when banks are balanced.
nm                 N:M compressed (TensorRT / sparse tensor cores): N of every M values plus
                   log2(M) bits of metadata each; only for layers that obey the N:M rule
vector_csr         CSR over kernel rows (kw weights a unit, one index per unit)
kernel_csr         CSR over k x k kernels
block_csr          BSR over b x b tiles of the GEMM view (edge tiles stored whole)
=================  ===========================================================================

Byte counts are computed, not measured: they are what a file or an accelerator's buffer in that
format would hold, rounded up to whole bytes per layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.prune.patterns import as_4d, check_nm, gemm_view, nm_eligible, prunable_layers, resolve_bank_size

FORMATS = ("dense", "csr", "bitmask", "csb", "nm", "vector_csr", "kernel_csr", "block_csr")
# On equal bytes, prefer the format a kernel can run without decoding (a 2:4 layer stored as 2:4).
_TIE_ORDER = ("nm", "csb", "kernel_csr", "vector_csr", "block_csr", "bitmask", "csr", "dense")


def _bytes(bits: float) -> int:
    return int(math.ceil(bits / 8))


def _unit_csr_bits(occupied: torch.Tensor, unit_size: int, value_bits: int, index_bits: int) -> float:
    """Bits of a CSR whose entries are whole units: ``occupied`` is ``[unit rows, units per row]``."""
    units = int(occupied.sum())
    return units * (unit_size * value_bits + index_bits) + (occupied.shape[0] + 1) * index_bits


def csr_bytes(weight: torch.Tensor, value_bits: int = 32, index_bits: int = 32) -> int:
    """CSR of the GEMM view: values, column indices and row pointers."""
    g = gemm_view(weight.detach()) != 0
    return _bytes(_unit_csr_bits(g, 1, value_bits, index_bits))


def bitmask_bytes(weight: torch.Tensor, value_bits: int = 32) -> int:
    """Non-zero values plus one presence bit per weight."""
    nnz = int((weight.detach() != 0).sum())
    return _bytes(nnz * value_bits + weight.numel())


def csb_bytes(weight: torch.Tensor, bank_size: int, value_bits: int = 32) -> int:
    """Compressed sparse banks: every bank padded to the fullest bank's count, value + in-bank index.

    Raises:
        ValueError: the rows do not split into banks of ``bank_size``.
    """
    g = gemm_view(weight.detach()) != 0
    size = resolve_bank_size(g.shape[1], bank_size=bank_size)
    counts = g.reshape(g.shape[0], g.shape[1] // size, size).sum(-1)
    per_bank = int(counts.max()) if counts.numel() else 0
    index = max(1, math.ceil(math.log2(size)))
    return _bytes(counts.numel() * per_bank * (value_bits + index))


def nm_bytes(weight: torch.Tensor, n: int = 2, m: int = 4, value_bits: int = 32) -> int:
    """N:M compressed: N values per run of M plus ceil(log2 M) bits of metadata per value.

    For 2:4 this is half the values plus 2 bits each: 44% smaller than dense at fp16, 38% at int8,
    the figures Mishra et al. (2021) give.
    """
    meta = max(1, math.ceil(math.log2(m)))
    kept = weight.numel() * n // m
    return _bytes(kept * (value_bits + meta))


def unit_csr_bytes(weight: torch.Tensor, unit: str, value_bits: int = 32, index_bits: int = 32, block: int = 4) -> int:
    """CSR whose entries are coarse units: ``vector`` (kernel row), ``kernel`` or ``block`` (b x b).

    Raises:
        ValueError: unknown unit.
    """
    w = as_4d(weight.detach()) != 0
    if unit == "vector":
        occupied = w.any(-1).reshape(w.shape[0], -1)
        return _bytes(_unit_csr_bits(occupied, w.shape[-1], value_bits, index_bits))
    if unit == "kernel":
        occupied = w.any(-1).any(-1)
        return _bytes(_unit_csr_bits(occupied, w.shape[-1] * w.shape[-2], value_bits, index_bits))
    if unit == "block":
        g = (gemm_view(weight.detach()) != 0).float()
        pad_r, pad_c = (-g.shape[0]) % block, (-g.shape[1]) % block
        padded = torch.nn.functional.pad(g, (0, pad_c, 0, pad_r))
        tiles = padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block).sum((1, 3)) > 0
        return _bytes(_unit_csr_bits(tiles, block * block, value_bits, index_bits))
    raise UsageError(f"unknown unit {unit!r}: vector, kernel or block")


def layer_storage(
    weight: torch.Tensor,
    *,
    value_bits: int = 32,
    index_bits: int = 32,
    banks: int | None = 4,
    bank_size: int | None = None,
    n: int = 2,
    m: int = 4,
    block: int = 4,
) -> dict[str, Any]:
    """Bytes of one weight in every format of :data:`FORMATS` (None where it cannot be stored so).

    Returns:
        ``{"<format>_bytes": int | None, ..., "csb_note": str | None, "nm_note": str | None,
        "best_format": str, "best_bytes": int, "compression": dense / best}``.
    """
    g = gemm_view(weight.detach())
    nnz = int((weight.detach() != 0).sum())
    dense = _bytes(weight.numel() * value_bits)
    row: dict[str, Any] = {
        "gemm_shape": [int(g.shape[0]), int(g.shape[1])],
        "numel": weight.numel(),
        "nnz": nnz,
        "density": nnz / max(1, weight.numel()),
        "dense_bytes": dense,
        "csr_bytes": csr_bytes(weight, value_bits, index_bits),
        "bitmask_bytes": bitmask_bytes(weight, value_bits),
        "csb_bytes": None,
        "csb_note": None,
        "nm_bytes": None,
        "nm_note": None,
    }
    try:
        size = resolve_bank_size(g.shape[1], None if bank_size is not None else banks, bank_size)
        row["csb_bytes"] = csb_bytes(weight, size, value_bits)
        row["bank_size"] = size
    except ValueError as err:
        row["csb_note"] = str(err)
    why = nm_eligible(weight, m)
    if why is None and not check_nm(weight, n, m):
        why = f"weights do not follow the {n}:{m} rule"
    if why is None:
        row["nm_bytes"] = nm_bytes(weight, n, m, value_bits)
    else:
        row["nm_note"] = why
    for unit in ("vector", "kernel", "block"):
        row[f"{unit}_csr_bytes"] = unit_csr_bytes(weight, unit, value_bits, index_bits, block)
    candidates = {fmt: row[f"{fmt}_bytes"] for fmt in FORMATS if row.get(f"{fmt}_bytes") is not None}
    best = min(candidates, key=lambda fmt: (candidates[fmt], _TIE_ORDER.index(fmt)))
    row["best_format"], row["best_bytes"] = best, candidates[best]
    row["compression"] = dense / candidates[best] if candidates[best] else float("inf")
    return row


def storage_table(
    model: nn.Module,
    *,
    value_bits: int = 32,
    index_bits: int = 32,
    banks: int | None = 4,
    bank_size: int | None = None,
    n: int = 2,
    m: int = 4,
    block: int = 4,
    ignore: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Per Conv2d/Linear layer: bytes in every storage format, the best one, and its compression.

    Args:
        model: any model; only its Conv2d and Linear weights are counted (biases and BatchNorm are
            small and stay dense).
        value_bits: 32 for fp32, 16 for fp16, 8 for int8.
        index_bits: width of CSR column indices and row pointers (32: what MKL and cuSPARSE take).
        banks, bank_size: bank layout for the compressed-sparse-banks format (give one).
        n, m: the N:M layout.
        block: tile side of the block-CSR format.
        ignore: layer paths to leave out.

    Returns:
        One dict per layer (see :func:`layer_storage`) with ``module`` and ``type`` added.
    """
    rows = []
    for path, layer in prunable_layers(model, ignore).items():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        row = {"module": path, "type": type(layer).__name__}
        row.update(
            layer_storage(
                weight,
                value_bits=value_bits,
                index_bits=index_bits,
                banks=banks,
                bank_size=bank_size,
                n=n,
                m=m,
                block=block,
            )
        )
        rows.append(row)
    return rows


def storage_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Model totals per format; a layer that cannot take a format counts at its dense size there.

    ``best_bytes`` sums each layer's own best format (a mixed-format model), ``compression`` is
    dense over that.
    """
    totals: dict[str, Any] = {}
    for fmt in FORMATS:
        totals[f"{fmt}_bytes"] = sum(
            r[f"{fmt}_bytes"] if r.get(f"{fmt}_bytes") is not None else r["dense_bytes"] for r in rows
        )
    totals["best_bytes"] = sum(r["best_bytes"] for r in rows)
    totals["compression"] = totals["dense_bytes"] / totals["best_bytes"] if totals["best_bytes"] else float("inf")
    return totals
