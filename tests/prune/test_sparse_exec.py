"""The CSR path computes what the dense layers compute, and is used only where it is measured faster."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgeprune.prune.patterns import make_masks
from edgeprune.prune.sparse_exec import (
    CSRConv2d,
    CSRLinear,
    crossover_sparsity,
    crossover_table,
    sparsify_model,
)
from edgeprune.train import apply_masks
from tests.prune import (
    TINY_SHAPE,
    Tiny,
    randomized,
    single_thread,  # noqa: F401  (autouse fixture)
)


@settings(max_examples=25, deadline=None)
@given(
    cin=st.integers(1, 5),
    cout=st.integers(1, 6),
    k=st.sampled_from([1, 3]),
    stride=st.sampled_from([1, 2]),
    pad=st.integers(0, 1),
    bias=st.booleans(),
    sparsity=st.floats(0.0, 0.95),
    seed=st.integers(0, 99),
)
def test_csr_conv_equals_dense_conv(
    cin: int, cout: int, k: int, stride: int, pad: int, bias: bool, sparsity: float, seed: int
) -> None:
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride, pad, bias=bias)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) >= sparsity)
    x = torch.randn(2, cin, 7, 6)
    torch.testing.assert_close(CSRConv2d(conv)(x), conv(x), rtol=1e-4, atol=1e-5)


def test_csr_linear_equals_dense_linear() -> None:
    linear = nn.Linear(12, 5)
    with torch.no_grad():
        linear.weight.mul_(torch.rand_like(linear.weight) > 0.7)
    x = torch.randn(3, 12)
    torch.testing.assert_close(CSRLinear(linear)(x), linear(x), rtol=1e-5, atol=1e-6)


def test_sparsify_model_swaps_sparse_layers_and_keeps_outputs() -> None:
    model = randomized(Tiny())
    masks, _ = make_masks(model, "unstructured", 0.9, ignore=frozenset({"conv1"}))
    apply_masks(model, masks)
    forced, report = sparsify_model(model, TINY_SHAPE, force=True)
    assert {r["module"] for r in report if r["csr"]} == {"conv2", "conv3", "fc"}
    assert isinstance(forced.conv2, CSRConv2d) and isinstance(forced.fc, CSRLinear)
    assert isinstance(forced.conv1, nn.Conv2d)  # dense layer untouched
    x = torch.randn(2, *TINY_SHAPE)
    torch.testing.assert_close(forced(x), model(x), rtol=1e-4, atol=1e-5)
    timed, report = sparsify_model(model, TINY_SHAPE, repeats=3, min_speedup=1e9)
    assert not any(r["csr"] for r in report)  # nothing is 1e9x faster: every layer stays dense
    assert all(r["dense_ms"] > 0 and r["csr_ms"] > 0 for r in report if r["module"] != "conv1")


def test_crossover_table_and_its_reading() -> None:
    table = crossover_table(16, 32, 16, sparsities=(0.5, 0.99), repeats=3)
    assert len(table) == 2 and abs(table[0]["sparsity"] - 0.5) < 0.1 and table[1]["sparsity"] > 0.95
    assert all(r["theoretical_speedup"] >= 1.9 for r in table)
    synthetic = [{"sparsity": s, "measured_speedup": v} for s, v in ((0.5, 0.3), (0.8, 0.9), (0.9, 1.2), (0.95, 2.0))]
    assert crossover_sparsity(synthetic) == 0.9
    assert crossover_sparsity([{"sparsity": 0.9, "measured_speedup": 0.5}]) is None
