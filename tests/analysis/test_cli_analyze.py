"""``edgeprune analyze``: device, pattern-aware columns, lint warnings, and the JSON with all three figures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgeprune.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pruned")
    out = {}
    for pattern, extra in (("channel", ["--sparsity", "0.5"]), ("nm", [])):
        result = runner.invoke(
            app, ["prune", "digits-resnet", "--pattern", pattern, *extra, "--out", str(root / pattern)]
        )
        assert result.exit_code == 0, result.output
        out[pattern] = root / pattern
    return out


def test_json_carries_lint_and_three_figures(pruned, tmp_path) -> None:
    out = tmp_path / "a.json"
    result = runner.invoke(app, ["analyze", str(pruned["nm"]), "--device", "jetson-agx-orin", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    figures = data["theoretical"]
    assert figures["mac_ratio"] > 1.5
    assert figures["kernel_aware"] == pytest.approx(1.0)  # digits layers are too narrow for sparse kernels
    assert set(figures["labels"]) == {"mac_ratio", "kernel_aware", "roofline"}
    assert data["pattern"] == "nm" and data["precision"] == "fp16"
    assert any(w["code"] == "nm-small" for w in data["lint"])
    assert data["device"]["name"] == "jetson-agx-orin"
    assert data["layers"][0]["name"] == "stem.0" and "macs" in data  # the cost fields as before
    assert "MAC ratio" in result.output and "kernel-aware" in result.output and "roofline" in result.output
    assert "warning nm-small" in result.output


def test_pattern_aware_table(pruned) -> None:
    result = runner.invoke(app, ["analyze", str(pruned["channel"]), "--pattern-aware"])
    assert result.exit_code == 0, result.output
    assert "kernel×" in result.output and "smaller dense kernel" in result.output


def test_storage_table_prefers_2_4_for_a_2_4_model(pruned, tmp_path) -> None:
    out = tmp_path / "s.json"
    result = runner.invoke(app, ["analyze", str(pruned["nm"]), "--storage", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "storage format" in result.output
    storage = json.loads(out.read_text())["storage"]
    by_layer = {row["module"]: row for row in storage["layers"]}
    # The first and last layers are left dense by the 2:4 pruner; every other layer stores best as 2:4.
    assert by_layer["stem.0"]["nm_bytes"] is None
    pruned_layers = [row for name, row in by_layer.items() if name not in ("stem.0", "fc")]
    assert pruned_layers and all(row["best_format"] == "nm" for row in pruned_layers)
    assert storage["totals"]["nm_bytes"] < storage["totals"]["dense_bytes"]
    assert storage["totals"]["compression"] > 1.0


def test_plain_model_has_no_theoretical_figures(tmp_path) -> None:
    out = tmp_path / "b.json"
    result = runner.invoke(app, ["analyze", "digits-resnet", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["theoretical"] is None and data["device"]["name"] == "host-cpu"
    assert data["device"]["peak_ops_per_s"]["fp32"]["how"].startswith("measured")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "jetson-thor-9000"], "unknown device"),
        (["--precision", "fp8"], "unknown precision"),
        (["--pattern", "diagonal"], "unknown sparsity pattern"),
        (["--batch-size", "0"], "at least 1"),
    ],
)
def test_bad_options_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["analyze", "digits-resnet", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
