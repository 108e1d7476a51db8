"""The embedded default: the baseline trains well and fast, and the demo writes everything it promises."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import save_file

from edgeprune.demo import DemoConfig, _config_key, run_demo, table_rows
from edgeprune.device.measure.timing import MeasureConfig
from edgeprune.train import TrainConfig


@pytest.mark.trains
def test_baseline_reaches_97_percent(trained_digits) -> None:
    # Training time is a performance goal: benchmarks/demo_budget.py measures it, not this test.
    assert trained_digits.accuracy >= 0.97


@pytest.mark.slow
@pytest.mark.trains
def test_demo_end_to_end(tmp_path, trained_digits) -> None:
    out = tmp_path / "demo"
    # Seed the run folder with the session's trained baseline, as a previous run would have.
    (out / "baseline").mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in trained_digits.model.state_dict().items()},
        str(out / "baseline" / "weights.safetensors"),
    )
    (out / "baseline" / "train.json").write_text(json.dumps({"key": _config_key(TrainConfig())}))
    config = DemoConfig(
        finetune_epochs=1,
        batch_sizes=(1, 8),
        measure=MeasureConfig(warmup_s=0.02, min_iterations=10, min_duration_s=0.05),
    )
    record = run_demo(out, config)
    assert record["demo"]["baseline_reused"] is True
    assert json.loads((out / "results.json").read_text())["kind"] == "edgeprune.result"
    rows = table_rows(record)
    assert {r["variant"] for r in rows} == {"dense", "unstructured-50", "nm-2:4", "channel-50mac"}
    assert len(rows) == 8
    for row in rows:
        assert row["accuracy"] >= 0.9
        assert row["measured"] is not None and row["measured"] > 0
    channel = next(r for r in rows if r["variant"] == "channel-50mac")
    assert channel["theoretical"] >= 1.9
    for name in ("dense", "unstructured-50", "nm-2-4", "channel-50mac"):
        assert (out / "bundles" / name / "manifest.json").is_file()
