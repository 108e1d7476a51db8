"""The CLI: help with examples, and bad input -> one line, exit 2, nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgeprune.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["demo", "analyze", "prune", "package", "bench", "report"])
def test_help_has_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output or "Examples:" in result.output


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_unknown_model(tmp_path) -> None:
    out = tmp_path / "out"
    line = one_line_error(runner.invoke(app, ["prune", "no-such-net", "--sparsity", "0.5", "--out", str(out)]))
    assert "unknown model 'no-such-net'" in line
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2"])
def test_sparsity_outside_open_interval(tmp_path, value: str) -> None:
    out = tmp_path / "out"
    line = one_line_error(runner.invoke(app, ["prune", "digits-resnet", "--sparsity", value, "--out", str(out)]))
    assert "between 0 and 1" in line
    assert not out.exists()


def test_unreadable_weights(tmp_path) -> None:
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x00garbage")
    out = tmp_path / "out"
    line = one_line_error(
        runner.invoke(app, ["prune", "digits-resnet", "--weights", str(bad), "--sparsity", "0.5", "--out", str(out)])
    )
    assert "cannot read weights file" in line
    assert not out.exists()
    assert bad.read_bytes() == b"\x00garbage"


def test_not_a_bundle(tmp_path) -> None:
    line = one_line_error(runner.invoke(app, ["bench", str(tmp_path)]))
    assert "not a bundle" in line


def test_prune_package_bench_analyze(tmp_path) -> None:
    pruned = tmp_path / "pruned"
    result = runner.invoke(
        app, ["prune", "digits-resnet", "--pattern", "channel", "--sparsity", "0.3", "--out", str(pruned)]
    )
    assert result.exit_code == 0, result.output
    assert (pruned / "plan.json").is_file()
    bundle_dir = tmp_path / "bundle"
    result = runner.invoke(app, ["package", str(pruned), "--out", str(bundle_dir)])
    assert result.exit_code == 0, result.output
    assert "theoretical speedup" in result.output
    dense = tmp_path / "dense"
    assert runner.invoke(app, ["package", "digits-resnet", "--out", str(dense)]).exit_code == 0
    json_out = tmp_path / "r.json"
    result = runner.invoke(
        app,
        [
            "bench",
            str(bundle_dir),
            "--baseline",
            str(dense),
            "--batch-sizes",
            "1",
            "--min-duration-s",
            "0.05",
            "--min-iterations",
            "5",
            "--json",
            str(json_out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json_out.is_file()
    result = runner.invoke(app, ["analyze", str(pruned), "--json", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    assert "layer1.conv1" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--min-duration-s", "0"], "min_duration_s must be more than 0"),
        (["--min-duration-s", "-1"], "min_duration_s must be more than 0"),
        (["--min-iterations", "0"], "min_iterations must be at least 1"),
        (["--threads", "-1"], "intra_op_threads must be at least 0 and at most 1024"),
        (["--energy-s", "0"], "energy_s must be more than 0"),
        (["--runner", "tflite"], "unknown runner 'tflite'"),
    ],
)
def test_bench_options_are_checked_before_any_work(tmp_path, args: list[str], message: str) -> None:
    """One schema for the settings: a value the agent would refuse is refused here, in one line, exit 2."""
    line = one_line_error(runner.invoke(app, ["bench", str(tmp_path / "no-bundle-needed"), *args]))
    assert message in line
