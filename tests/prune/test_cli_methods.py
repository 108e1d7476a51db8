"""``edgeprune prune`` exposes every pattern and method; bad combinations are one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgeprune.cli.main import app
from tests.prune import single_thread  # noqa: F401  (autouse fixture)

runner = CliRunner()


def _summary(folder) -> dict:
    return json.loads((folder / "model.json").read_text())["summary"]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--pattern", "bank", "--sparsity", "0.5", "--bank-size", "16"], "storage (computed)"),
        (["--pattern", "nm", "--permute"], "TensorRT N:M rule holds on 8 of 10 layers"),
        (["--pattern", "kernel", "--sparsity", "0.75"], "storage (computed)"),
        (["--pattern", "block", "--sparsity", "0.5", "--block-size", "8"], "storage (computed)"),
        (["--pattern", "vector", "--sparsity", "0.5"], "storage (computed)"),
    ],
)
def test_mask_patterns_from_the_command_line(tmp_path, args: list[str], expect: str) -> None:
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "digits-resnet", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    assert expect in " ".join(result.output.split())
    summary = _summary(out)
    assert summary["pattern"] == args[1] and summary["storage"]["compression"] >= 1.0
    if args[1] == "nm":
        assert summary["permutation"]["gain"] > 0
        assert "stem.0: 1 input channels are not a multiple of 4" in " ".join(result.output.split())


def test_data_methods_and_measurements_from_the_command_line(tmp_path) -> None:
    out = tmp_path / "omp"
    result = runner.invoke(
        app,
        [
            "prune",
            "digits-resnet",
            "--out",
            str(out),
            "--pattern",
            "channel",
            "--sparsity",
            "0.5",
            "--selector",
            "omp",
            "--calib-samples",
            "24",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "reconstruction error" in result.output and _summary(out)["selector"] == "omp"
    out = tmp_path / "csr"
    plot = tmp_path / "sens.png"
    result = runner.invoke(
        app,
        ["prune", "digits-resnet", "--out", str(out), "--pattern", "nm", "--sparse-exec", "--sensitivity", str(plot)],
    )
    assert result.exit_code == 0, result.output
    assert plot.is_file() and plot.with_suffix(".md").is_file()
    rows = _summary(out)["sparse_exec"]
    assert {r["module"] for r in rows if r["dense_ms"] is not None} >= {"layer1.conv1", "layer3.conv2"}
    assert "CSR" in result.output and "| layer1.conv1 | " in plot.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pattern", "channel", "--sparsity", "0.5", "--permute"], "--permute applies to the nm pattern only"),
        (
            ["--pattern", "nm", "--schedule", "gradual"],
            "gradual schedule needs --sparsity and a channel or mask pattern",
        ),
        (["--pattern", "nm", "--nm", "2-4"], "--nm must look like 2:4"),
        (["--pattern", "bank", "--sparsity", "0.5", "--banks", "2", "--bank-size", "4"], "not both"),
        (["--pattern", "channel", "--sparsity", "0.5", "--selector", "ridge"], "unknown selector"),
    ],
)
def test_bad_method_options_are_one_line_errors(tmp_path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["prune", "digits-resnet", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output
    assert not out.exists()
