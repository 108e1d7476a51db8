"""Pruned-model folders replay exactly, without pickle."""

from __future__ import annotations

import json

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.models.digits import digits_resnet
from edgeprune.models.spec import load_model
from edgeprune.prune.api import PruneRequest, prune_model
from edgeprune.prune.plan import decode_mask, encode_mask, save_pruned


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_mask_encoding_roundtrip(shape: list[int], seed: int) -> None:
    mask = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) > 0.5
    assert torch.equal(decode_mask(json.loads(json.dumps(encode_mask(mask)))), mask)


def test_channel_and_mask_plans_replay(tmp_path) -> None:
    torch.manual_seed(0)
    base = digits_resnet().eval()
    x = torch.randn(2, 1, 32, 32)
    for request in (PruneRequest("channel", sparsity=0.3), PruneRequest("nm")):
        pruned, plan, summary = prune_model(base, (1, 32, 32), request)
        folder = save_pruned(
            tmp_path / request.pattern,
            pruned,
            plan,
            {"source": "digits-resnet", "input_shape": [1, 32, 32], "method": request.pattern},
        )
        assert not list(folder.glob("*.pt")) and not list(folder.glob("*.pkl"))
        loaded = load_model(str(folder))
        torch.testing.assert_close(loaded.model(x), pruned.eval()(x))
        plan_json = json.loads((folder / "plan.json").read_text())
        assert plan_json["pattern"] == request.pattern
        if request.pattern == "channel":
            assert any("out_keep" in e for e in plan_json["structural"])
        else:
            assert set(plan_json["masks"]) == {r["module"] for r in summary["layers"] if not r["skipped"]}
