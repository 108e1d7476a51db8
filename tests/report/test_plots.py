"""Figures: every PNG written decodes; figures without data are skipped with a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgeprune.report.plots import PLOTS, render_plot, speedup_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


def test_full_record_draws_every_figure(rendered: dict[str, Path]) -> None:
    for spec in PLOTS:
        assert spec.key in rendered, f"{spec.key} was not drawn"
        assert rendered[spec.key].name == f"{spec.key}.png"
        assert_png(rendered[spec.key])


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("layer_time_share", "no per-layer profile"),
        ("layer_speedup", "no per-layer profile"),
        ("sensitivity", "no sensitivity scan"),
        ("power", "power was not measured (run 1: no power sensor was sampled in this run)"),
    ],
)
def test_missing_data_skips_with_reason(tmp_path: Path, minimal_record: dict[str, Any], key: str, reason: str) -> None:
    outcome = render_plot(key, [minimal_record], tmp_path / f"{key}.png")
    assert outcome.path is None
    assert outcome.reason is not None and reason in outcome.reason
    assert not (tmp_path / f"{key}.png").exists()


def test_minimal_report_draws_what_it_can(rendered_minimal: dict[str, Path]) -> None:
    for key in ("accuracy_ops", "speedup", "latency_batch"):
        assert_png(rendered_minimal[key])
    for key in ("layer_time_share", "layer_speedup", "sensitivity", "power"):
        assert key not in rendered_minimal


def test_speedup_plot_public_api(tmp_path: Path, full_record: dict[str, Any]) -> None:
    path = speedup_plot([full_record], tmp_path / "sub" / "s.png")
    assert path == tmp_path / "sub" / "s.png"
    assert_png(path)


def test_speedup_plot_without_baseline_returns_none(tmp_path: Path, minimal_record: dict[str, Any]) -> None:
    data = json.loads(json.dumps(minimal_record))
    for variant in data["variants"]:
        variant["comparison"] = None
    assert speedup_plot([data], tmp_path / "s.png") is None
    outcome = render_plot("speedup", [data], tmp_path / "s.png")
    assert outcome.reason is not None and "--baseline" in outcome.reason


def test_accuracy_plot_skipped_when_no_accuracy(tmp_path: Path, minimal_record: dict[str, Any]) -> None:
    data = json.loads(json.dumps(minimal_record))
    for variant in data["variants"]:
        variant["accuracy"] = None
    outcome = render_plot("accuracy_ops", [data], tmp_path / "a.png")
    assert outcome.path is None and outcome.reason is not None and "accuracy" in outcome.reason
