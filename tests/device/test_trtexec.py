"""trtexec command construction, binary lookup, and a run against a stand-in binary.

The stand-in prints real recorded trtexec output (tests/fixtures/trt) so ``run_trtexec``'s plumbing
(log capture, parsing, exported JSON, errors) is exercised without TensorRT; the real trtexec is
only run where TensorRT is installed.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from edgeprune.device.engine import BuildOptions
from edgeprune.device.engine import trtexec as trtexec_mod
from edgeprune.device.engine.trtexec import (
    export_paths,
    find_trtexec,
    mode_flags,
    run_trtexec,
    trtexec_command,
)
from edgeprune.errors import MissingDependencyError, RunnerError, UsageError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trt"
SHAPES = {"input": ["batch", 1, 32, 32]}
OPTIONS = BuildOptions(precision="fp16", sparse_weights=True, min_batch=1, opt_batch=4, max_batch=8)


def _command(trt_major: int, **kwargs: object) -> list[str]:
    return trtexec_command(
        Path("b/model.onnx"),
        Path("out/model.plan"),
        OPTIONS,
        trt_major=trt_major,
        input_shapes=SHAPES,
        **kwargs,  # type: ignore[arg-type]
    )


def test_trt10_command_is_fully_explicit() -> None:
    assert _command(10) == [
        "trtexec",
        "--onnx=b/model.onnx",
        "--saveEngine=out/model.plan",
        "--minShapes=input:1x1x32x32",
        "--optShapes=input:4x1x32x32",
        "--maxShapes=input:8x1x32x32",
        "--shapes=input:4x1x32x32",
        "--memPoolSize=workspace:1024M",
        "--builderOptimizationLevel=3",
        "--sparsity=enable",
        "--fp16",
        "--profilingVerbosity=detailed",
        "--warmUp=200",
        "--iterations=10",
        "--duration=3",
        "--avgRuns=10",
        "--percentile=90,95,99",
        "--infStreams=1",
        "--separateProfileRun",
        "--exportLayerInfo=out/model.layers.json",
        "--exportProfile=out/model.profile.json",
        "--exportTimes=out/model.times.json",
    ]


def test_trt11_writes_the_flipped_defaults_and_no_precision_flag() -> None:
    cmd = _command(11)
    for flag in ("--noCudaGraph", "--includeDataTransfers", "--noSpinWait"):
        assert flag in cmd
    assert "--fp16" not in cmd and "--int8" not in cmd
    assert "--separateProfileRun" not in cmd  # 11.x always profiles in a separate run
    assert "--sparsity=enable" in cmd


def test_mode_flags_per_version() -> None:
    house = {"use_cuda_graph": False, "data_transfers": True, "spin_wait": False}
    flags10, implicit10 = mode_flags(10, **house)
    assert flags10 == ["--separateProfileRun"]
    assert implicit10 == ["use_cuda_graph", "data_transfers", "spin_wait"]
    flags11, implicit11 = mode_flags(11, **house)
    assert flags11 == ["--noCudaGraph", "--includeDataTransfers", "--noSpinWait"] and implicit11 == []
    tuned = {"use_cuda_graph": True, "data_transfers": False, "spin_wait": True}
    assert mode_flags(10, **tuned) == (
        ["--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--separateProfileRun"],
        [],
    )
    assert mode_flags(11, **tuned) == (["--useCudaGraph", "--noDataTransfers", "--useSpinWait"], [])


def test_int8_uses_qdq_never_a_calibrator() -> None:
    cmd = trtexec_command(Path("m.onnx"), Path("m.plan"), BuildOptions(precision="int8"), trt_major=10)
    assert "--int8" in cmd and "--fp16" in cmd
    assert not any(arg.startswith("--calib") for arg in cmd)
    assert "--sparsity=disable" in cmd
    assert not any(
        arg.startswith("--int8")
        for arg in trtexec_command(Path("m.onnx"), Path("m.plan"), BuildOptions(precision="int8"), trt_major=11)
    )


def test_load_engine_omits_build_flags() -> None:
    cmd = trtexec_command(None, Path("m.plan"), OPTIONS, trt_major=10, input_shapes=SHAPES, run_batch=2)
    assert cmd[1] == "--loadEngine=m.plan"
    assert "--shapes=input:2x1x32x32" in cmd
    assert not any(a.startswith(("--onnx", "--saveEngine", "--minShapes", "--fp16", "--sparsity")) for a in cmd)


def test_timing_cache_and_quoted_names() -> None:
    options = BuildOptions(timing_cache=Path("cache/t.cache"), workspace_bytes=(1 << 20) + 1)
    cmd = trtexec_command(Path("m.onnx"), Path("m.plan"), options, trt_major=10, input_shapes={"in:0": [1, 3]})
    assert "--timingCacheFile=cache/t.cache" in cmd
    assert "--memPoolSize=workspace:2M" in cmd  # rounded up, never below the request
    assert "--shapes='in:0':1x3" in cmd


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": "force"}, "deprecated since TensorRT 10.0"),
        ({"sparsity": "sometimes"}, "sparsity must be one of"),
        ({"iterations": 0}, "iterations"),
        ({"percentiles": (100,)}, "percentiles"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _command(10, **kwargs)


def test_unsupported_major_and_symbolic_dims() -> None:
    with pytest.raises(UsageError, match="not supported"):
        _command(8)
    with pytest.raises(UsageError, match="only the batch"):
        trtexec_command(Path("m.onnx"), Path("m.plan"), OPTIONS, trt_major=10, input_shapes={"x": ["b", "seq"]})


# -- binary lookup ---------------------------------------------------------------------------------


def test_missing_binary_path_gives_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match="trtexec not found") as info:
        find_trtexec(tmp_path / "nowhere" / "trtexec")
    assert "/usr/src/tensorrt/bin/trtexec" in str(info.value)
    assert "pip wheels do not include it" in str(info.value)


def test_missing_binary_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(trtexec_mod, "TRTEXEC_FALLBACK_PATHS", (str(tmp_path / "absent"),))
    with pytest.raises(MissingDependencyError, match="trtexec on PATH"):
        find_trtexec()
    with pytest.raises(MissingDependencyError):
        run_trtexec(Path("m.onnx"), tmp_path / "m.plan", OPTIONS, trt_major=10)


# -- running a stand-in binary ---------------------------------------------------------------------

_LAYER_JSON = {
    "Layers": [{"Name": "conv2", "LayerType": "CaskConvolution", "TacticName": "sm80_xmma_fprop_sparse_conv"}],
    "Bindings": ["input", "logits"],
}


def _fake_trtexec(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "bin" / "trtexec"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys, time\n"
        "args = sys.argv[1:]\n"
        "if '--help' in args:\n"
        "    print('&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --help')\n"
        "    sys.exit(0)\n"
        f"{body}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_run_trtexec_parses_log_and_exports(tmp_path: Path) -> None:
    log = (FIXTURES / "sparsity-4.log").read_text() + (FIXTURES / "trtexec-summary-5.log").read_text()
    (tmp_path / "canned.log").write_text(log)
    binary = _fake_trtexec(
        tmp_path,
        "for a in args:\n"
        "    if a.startswith('--exportLayerInfo='):\n"
        f"        pathlib.Path(a.split('=', 1)[1]).write_text({json.dumps(json.dumps(_LAYER_JSON))})\n"
        "    if a.startswith('--exportProfile='):\n"
        "        pathlib.Path(a.split('=', 1)[1]).write_text("
        "json.dumps([{'count': 3}, {'name': 'conv2', 'timeMs': 1.5, 'averageMs': 0.5, "
        "'medianMs': 0.5, 'percentage': 100.0}]))\n"
        f"print(pathlib.Path({str(tmp_path / 'canned.log')!r}).read_text(), end='')\n",
    )
    engine = tmp_path / "engines" / "model.plan"
    result = run_trtexec(Path("model.onnx"), engine, OPTIONS, binary=binary, input_shapes=SHAPES, iterations=50)
    assert result["trt_major"] == 10  # read from the binary's own version banner
    assert result["command"][0] == str(binary)
    assert "--iterations=50" in result["command"]
    assert result["summary"]["throughput_qps"] == 318.007
    assert result["summary"]["gpu_compute"]["median_ms"] == 3.14062
    assert result["summary"]["trt_version"] == "10.3.0"
    assert result["sparsity"]["picked"] == ["conv2", "conv3"]
    assert result["sparsity"]["not_picked"] == ["conv1"]
    assert result["layers"][0]["looks_sparse_heuristic"] is True
    assert result["layer_profile"][0]["name"] == "conv2"
    assert result["settings"]["implicit_defaults"] == ["use_cuda_graph", "data_transfers", "spin_wait"]
    assert result["settings"]["data_transfers"] is True and result["settings"]["iterations"] == 50
    assert Path(result["log_path"]).read_text() == log
    assert result["exports"]["times"] is None  # the stand-in wrote no times file
    assert result["exports"]["layer_info"] == str(export_paths(engine)["layer_info"])
    json.dumps(result)  # JSON-ready


def test_run_trtexec_failure_quotes_the_log(tmp_path: Path) -> None:
    binary = _fake_trtexec(tmp_path, "print('[E] Error[4]: cannot parse model.onnx')\nsys.exit(1)")
    with pytest.raises(RunnerError, match=r"(?s)status 1.*cannot parse model\.onnx") as info:
        run_trtexec(Path("model.onnx"), tmp_path / "m.plan", OPTIONS, binary=binary, trt_major=11)
    assert "m.trtexec.log" in str(info.value)


def test_run_trtexec_timeout(tmp_path: Path) -> None:
    binary = _fake_trtexec(tmp_path, "print('building', flush=True)\ntime.sleep(30)")
    with pytest.raises(RunnerError, match="did not finish within 0.5 s"):
        run_trtexec(Path("model.onnx"), tmp_path / "m.plan", OPTIONS, binary=binary, trt_major=10, timeout_s=0.5)
