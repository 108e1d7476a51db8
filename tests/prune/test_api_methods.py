"""Every pattern and method through ``prune_model``: requests validate, plans replay, data methods run."""

from __future__ import annotations

import json

import pytest
import torch

from edgeprune.errors import UsageError
from edgeprune.models.digits import digits_resnet
from edgeprune.models.spec import load_model
from edgeprune.prune.api import PruneRequest, prune_model
from edgeprune.prune.patterns import bank_counts, check_nm
from edgeprune.prune.plan import save_pruned
from tests.prune import (
    TINY_SHAPE,
    Tiny,
    randomized,
    single_thread,  # noqa: F401  (autouse fixture)
)

DIGITS_SHAPE = (1, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pattern": "bank"}, "needs --sparsity"),
        ({"pattern": "unstructured", "sparsity": 0.5, "permute": True}, "nm pattern only"),
        ({"pattern": "unstructured", "sparsity": 0.5, "selector": "lasso"}, "--pattern channel"),
        ({"pattern": "channel", "sparsity": 0.5, "selector": "ridge"}, "unknown selector"),
        ({"pattern": "nm", "schedule": "gradual"}, "gradual schedule"),
        ({"pattern": "unstructured", "sparsity": 0.5, "tolerance": 0.01}, "gradual schedule only"),
        ({"pattern": "bank", "sparsity": 0.5, "banks": 2, "bank_size": 8}, "not both"),
        ({"pattern": "channel", "regularizer": "l0"}, "unknown regularizer"),
        ({"pattern": "stripes", "sparsity": 0.5}, "unknown pattern"),
    ],
)
def test_bad_requests_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        PruneRequest(**kwargs)


def test_data_methods_without_data_are_a_user_error() -> None:
    with pytest.raises(UsageError, match="needs training data"):
        prune_model(Tiny(), TINY_SHAPE, PruneRequest("channel", sparsity=0.5, selector="lasso"))


@pytest.mark.parametrize("pattern", ["vector", "kernel", "block", "bank"])
def test_mask_patterns_replay_from_a_pruned_folder(tmp_path, pattern: str) -> None:
    base = digits_resnet().eval()
    pruned, plan, summary = prune_model(base, DIGITS_SHAPE, PruneRequest(pattern, sparsity=0.5))
    assert summary["storage"]["compression"] > 1.0
    layers = {r["module"]: r for r in summary["layers"]}
    assert "stem.0" not in layers and "fc" not in layers  # left dense by default
    assert all(0.4 <= r["sparsity"] <= 0.6 for r in layers.values())
    if pattern == "bank":
        assert bool((bank_counts(pruned.layer2.conv2.weight, banks=4) == 36).all())  # 288/4 = 72 a bank, half kept
    folder = save_pruned(
        tmp_path / pattern, pruned, plan, {"source": "digits-resnet", "input_shape": [1, 32, 32], "method": pattern}
    )
    assert set(json.loads((folder / "plan.json").read_text())["masks"]) == set(layers)
    x = torch.randn(2, *DIGITS_SHAPE)
    torch.testing.assert_close(load_model(str(folder)).model(x), pruned.eval()(x))


def test_nm_with_permutation_passes_the_validator() -> None:
    base = digits_resnet().eval()
    pruned, plan, summary = prune_model(base, DIGITS_SHAPE, PruneRequest("nm", permute=True))
    assert summary["permutation"]["kept_after"] > summary["permutation"]["kept_before"]
    checks = {c["module"]: c for c in summary["nm_check"]}
    assert all(checks[path]["ok"] for path in plan.masks)
    assert not checks["stem.0"]["ok"] and "not a multiple of 4" in checks["stem.0"]["reason"]
    assert check_nm(pruned.layer3.conv2.weight)


def _tiny_data(count: int = 48) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, *TINY_SHAPE, generator=generator)
    y = torch.randint(0, 3, (count,), generator=generator)
    return (x, y, x[:16], y[:16])


@pytest.mark.trains
def test_data_aware_methods_run_end_to_end() -> None:
    model, data = randomized(Tiny()), _tiny_data()
    rebuilt, plan, summary = prune_model(
        model, TINY_SHAPE, PruneRequest("channel", sparsity=0.5, selector="omp", calib_samples=32), data
    )
    assert rebuilt.conv2.in_channels == 4 and summary["selector"] == "omp"
    assert all(layer["relative_error"] < 1 for layer in summary["layers"])
    ssl, plan, summary = prune_model(
        model,
        TINY_SHAPE,
        PruneRequest("channel", regularizer="group-lasso", reg_strength=2.0, reg_epochs=2, reg_lr=0.05),
        data,
    )
    assert summary["regularization"]["kind"] == "group-lasso"
    assert summary["removed"]["max_output_diff"] < 1e-4
    gradual, plan, summary = prune_model(
        model,
        TINY_SHAPE,
        PruneRequest("unstructured", sparsity=0.6, schedule="gradual", steps=2, step_epochs=1, tolerance=0.5),
        data,
    )
    assert [round(h["sparsity"], 3) for h in summary["schedule"]["history"]] == [0.525, 0.6]
    assert abs(1 - float(plan.masks["conv2"].float().mean()) - 0.6) < 0.01
    lasso, _, summary = prune_model(
        model,
        TINY_SHAPE,
        PruneRequest("unstructured", regularizer="l1", reg_strength=5.0, reg_epochs=3, reg_lr=0.05),
        data,
    )
    assert any(layer["sparsity"] > 0 for layer in summary["layers"])
