"""``edgeprune bench --runner``: ONNX Runtime on the CPU, its CUDA provider, or TensorRT.

Where a runtime is missing the run stops before measuring anything, with one line that says what
to install; it never falls back to another runtime and reports that runtime's numbers.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeprune.cli.main import app
from edgeprune.device.measure.bench import BenchRequest, run_bench
from edgeprune.device.measure.settings import BenchOptions, MeasureConfig
from edgeprune.errors import MissingDependencyError, RunnerError, UsageError
from edgeprune.vocab import RUNNERS

QUICK = MeasureConfig(warmup_s=0.01, min_iterations=5, min_duration_s=0.01)
runner = CliRunner()


def _has_cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_unknown_runner_is_refused(tiny_bundle: Path) -> None:
    with pytest.raises(UsageError, match="unknown runner 'tflite'"):
        BenchRequest([tiny_bundle], options=BenchOptions(runner="tflite"))
    assert RUNNERS == ("ort", "ort-cuda", "trt")


def test_ort_record_names_its_runner(tiny_bundle: Path) -> None:
    record = run_bench(BenchRequest([tiny_bundle], None, (1,), QUICK, BenchOptions(power=False))).to_dict()
    assert record["runner"]["kind"] == "ort" and record["runner"]["name"] == "onnxruntime"
    assert record["runner"]["settings"]["providers"] == ["CPUExecutionProvider"]
    assert record["memory"]["gpu_bytes"] is None and record["memory"]["gpu_reason"]


def test_cuda_provider_is_never_replaced_by_the_cpu(tiny_bundle: Path) -> None:
    if _has_cuda_provider():
        pytest.skip("ONNX Runtime's CUDA provider is available here")
    with pytest.raises(RunnerError, match=r"none of the providers \['CUDAExecutionProvider'\] is available"):
        run_bench(BenchRequest([tiny_bundle], None, (1,), QUICK, BenchOptions(power=False, runner="ort-cuda")))


def test_tensorrt_runner_without_tensorrt_says_what_to_install(tiny_bundle: Path) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(MissingDependencyError, match=r"edgeprune\[trt\]"):
        run_bench(BenchRequest([tiny_bundle], None, (1,), QUICK, BenchOptions(power=False, runner="trt")))


@pytest.mark.parametrize(
    ("option", "message"),
    [("tflite", "unknown runner 'tflite'"), ("trt", "edgeprune[trt]")],
)
def test_cli_runner_errors_are_one_line(tiny_bundle: Path, tmp_path: Path, option: str, message: str) -> None:
    if option == "trt" and importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["bench", str(tiny_bundle), "--runner", option, "--no-power", "--json", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert len([line for line in lines if "error" in line.lower()]) == 1
    assert not out.exists()


@pytest.mark.trt
def test_tensorrt_engine_is_built_checked_and_timed(bundle_factory: Callable[..., Path]) -> None:
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("needs TensorRT and a GPU")
    bundle = bundle_factory("trt-tiny")
    record = run_bench(BenchRequest([bundle], None, (1, 4), QUICK, BenchOptions(power=False, runner="trt"))).to_dict()
    variant = record["variants"][0]
    assert variant["reference_check"]["passed"]
    assert variant["engine"]["engine_path"] and set(variant["latency"]) == {"1", "4"}
    assert record["runner"]["kind"] == "trt"
