"""Storage formats: byte counts from first principles, and the compression each pattern earns."""

from __future__ import annotations

import torch

from edgeprune.prune.patterns import bank_balanced_mask, kernel_mask, make_masks, nm_mask, unstructured_mask
from edgeprune.prune.storage import (
    bitmask_bytes,
    csb_bytes,
    csr_bytes,
    layer_storage,
    nm_bytes,
    storage_table,
    storage_totals,
)
from edgeprune.train import apply_masks
from tests.prune import (
    Tiny,
    randomized,
    single_thread,  # noqa: F401  (autouse fixture)
)


def test_csr_and_bitmask_bytes_count_values_indices_and_pointers() -> None:
    weight = torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # 3 values (4 B) + 3 column indices (4 B) + 4 row pointers (4 B)
    assert csr_bytes(weight) == 3 * 4 + 3 * 4 + 4 * 4
    assert csr_bytes(weight, value_bits=16, index_bits=16) == 3 * 2 + 3 * 2 + 4 * 2
    # 3 values + 12 bits of mask, rounded up to whole bytes
    assert bitmask_bytes(weight) == 12 + 2


def test_2_4_compressed_saves_what_mishra_et_al_report() -> None:
    weight = torch.randn(64, 64)
    sparse = weight * nm_mask(weight, 2, 4)
    dense16, dense8 = weight.numel() * 2, weight.numel()
    assert 1 - nm_bytes(sparse, 2, 4, value_bits=16) / dense16 == 0.4375  # "-44% at FP16"
    assert 1 - nm_bytes(sparse, 2, 4, value_bits=8) / dense8 == 0.375  # "-38% at INT8"
    row = layer_storage(sparse, value_bits=16)
    assert row["nm_bytes"] == nm_bytes(sparse, 2, 4, 16) and row["best_format"] == "nm"
    assert layer_storage(weight)["nm_bytes"] is None  # a dense layer cannot be stored as 2:4
    assert "2:4 rule" in layer_storage(weight)["nm_note"]


def test_compressed_sparse_banks_pay_for_imbalance() -> None:
    weight = torch.randn(8, 32)
    balanced = weight * bank_balanced_mask(weight, 0.75, bank_size=8)
    unbalanced = weight * unstructured_mask(weight, 0.75)
    # Balanced: 2 of 8 per bank, each a 32-bit value + 3-bit index; no pointers.
    assert csb_bytes(balanced, 8) == (8 * 4 * 2 * 35 + 7) // 8
    # Same number of zeros, but CSB pads every bank to the fullest one.
    assert csb_bytes(unbalanced, 8) > csb_bytes(balanced, 8)
    assert layer_storage(balanced, bank_size=8)["best_format"] == "csb"


def test_coarse_units_need_fewer_index_bytes_mao_et_al() -> None:
    weight = torch.randn(32, 32, 3, 3)
    coarse = weight * kernel_mask(weight, 0.9)
    fine = weight * unstructured_mask(weight, float((coarse == 0).float().mean()))
    assert int((fine != 0).sum()) == int((coarse != 0).sum())
    fine_row, coarse_row = layer_storage(fine), layer_storage(coarse)
    assert coarse_row["best_format"] == "kernel_csr"
    assert coarse_row["best_bytes"] < fine_row["best_bytes"]  # same sparsity, better compression


def test_storage_table_covers_every_layer_and_totals_add_up() -> None:
    model = randomized(Tiny())
    masks, _ = make_masks(model, "unstructured", 0.8)
    apply_masks(model, masks)
    rows = storage_table(model)
    assert [r["module"] for r in rows] == ["conv1", "conv2", "conv3", "fc"]
    for row in rows:
        assert row["dense_bytes"] == row["numel"] * 4
        assert row["best_bytes"] == min(
            row[f"{f}_bytes"]
            for f in ("dense", "csr", "bitmask", "csb", "nm", "vector_csr", "kernel_csr", "block_csr")
            if row[f"{f}_bytes"] is not None
        )
        assert row["compression"] > 1.5
    totals = storage_totals(rows)
    assert totals["dense_bytes"] == sum(r["dense_bytes"] for r in rows)
    assert totals["best_bytes"] == sum(r["best_bytes"] for r in rows)
