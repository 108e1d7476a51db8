"""``edgeprune package`` in fp16/int8 with --archive, and every bad input: one red line, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file
from typer.testing import CliRunner

from edgeprune.cli.main import app
from edgeprune.cli.package import _calibration
from tests.export import tiny_data, trained_tiny

runner = CliRunner()
SPEC = "tests.export:tiny_net"


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in trained_tiny().state_dict().items()}, str(weights))
    calib = root / "calib.npz"
    np.savez(calib, input=tiny_data(48, seed=4)[0])
    return {"root": root, "weights": weights, "calib": calib}


def package(files: dict[str, Path], out: Path, *args: str):
    return runner.invoke(app, ["package", SPEC, "--weights", str(files["weights"]), "--out", str(out), *args])


def test_int8_with_archive(files: dict[str, Path]) -> None:
    out = files["root"] / "int8"
    result = package(
        files,
        out,
        "--precision",
        "int8",
        "--calibration",
        str(files["calib"]),
        "--calib-method",
        "percentile",
        "--calib-samples",
        "32",
        "--archive",
    )
    assert result.exit_code == 0, result.output
    assert "(int8)" in result.output and "top-1 agreement" in result.output
    assert "percentile on 32 samples" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["method"] == "percentile" and manifest["calibration"]["samples"] == 32
    assert (files["root"] / "int8.tar.gz").is_file()


def test_fp16(files: dict[str, Path]) -> None:
    out = files["root"] / "fp16"
    result = package(files, out, "--precision", "fp16")
    assert result.exit_code == 0, result.output
    assert "(fp16)" in result.output and json.loads((out / "manifest.json").read_text())["precision"] == "fp16"


def test_int8_without_calibration_needs_one(files: dict[str, Path]) -> None:
    out = files["root"] / "x"
    line = one_line_error(package(files, out, "--precision", "int8"))
    assert "int8 needs a calibration set: give --data" in line
    assert not out.exists()


def test_calibration_folder_without_images(files: dict[str, Path]) -> None:
    folder = files["root"] / "no-images"
    folder.mkdir()
    (folder / "labels.csv").write_text("a,b\n")
    out = files["root"] / "y"
    line = one_line_error(package(files, out, "--precision", "int8", "--calibration", str(folder)))
    assert "holds no images" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--precision", "int4"], "--precision 'int4' is not one of"),
        (["--precision", "int8", "--calib-method", "kl"], "--calib-method 'kl' is not one of"),
        (["--precision", "int8", "--calib-samples", "0"], "--calib-samples must be positive"),
        (["--calibration", "c.npz"], "--calibration applies to --precision int8 only"),
    ],
)
def test_bad_options(files: dict[str, Path], args: list[str], message: str) -> None:
    out = files["root"] / "z"
    assert message in one_line_error(package(files, out, *args))
    assert not out.exists()


def test_out_that_is_not_a_bundle(files: dict[str, Path]) -> None:
    out = files["root"] / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert "exists and is not a bundle" in one_line_error(package(files, out))
    assert (out / "notes.txt").read_text() == "keep"


def test_bench_refuses_damaged_bundles(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert package(files, out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # A model file that is not ONNX, with checksums made to match: the runtime's parser says so.
    (out / "model.onnx").write_bytes(b"garbage")
    manifest["files"]["model.onnx"] = hashlib.sha256(b"garbage").hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "cannot load" in one_line_error(runner.invoke(app, ["bench", str(out)]))
    # Tampered: the checksum no longer matches.
    (out / "model.onnx").write_bytes(b"garbage!")
    assert "fails its checksum" in one_line_error(runner.invoke(app, ["bench", str(out)]))
    # A missing field is named; an unknown schema version is refused.
    del manifest["parity"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "missing the field 'parity'" in one_line_error(runner.invoke(app, ["bench", str(out)]))
    manifest["schema_version"] = 2
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "schema_version 2 is not supported" in one_line_error(runner.invoke(app, ["bench", str(out)]))


def test_digits_default_calibration_resolves() -> None:
    from edgeprune.data import resolve_data

    calib = _calibration(None, resolve_data("digits"), "input", (1, 32, 32), 16)
    assert calib.kind == "digits" and calib.samples == 16
