"""Engine builder and cache, everything but a real TensorRT build.

The build flow runs against a stand-in ``tensorrt`` module that records what the builder was asked
to do (flags, workspace, profile, timing cache) and replays sparsity lines through the captured
logger. It checks the *calls* the real API would receive; tests/device/test_trt_runner.py builds a
real engine wherever TensorRT and a GPU exist.
"""

from __future__ import annotations

import enum
import json
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edgeprune.bundle import Manifest, ModelInfo, TensorSpec, write_bundle
from edgeprune.device.engine import (
    BuildOptions,
    EngineCache,
    build_engine,
    cache_key,
    options_for_bundle,
    precision_plan,
    profile_shapes,
    wants_sparse_weights,
)
from edgeprune.device.engine import build as engine_mod
from edgeprune.errors import EngineBuildError, MissingDependencyError, UsageError

SHA = "ab" * 32
MANIFEST = Manifest(
    name="nm-2:4",
    precision="fp16",
    model=ModelInfo(spec="digits-resnet", pattern="nm"),
    inputs=(TensorSpec("input", ("batch", 1, 32, 32)),),
    outputs=(TensorSpec("logits", ("batch", 10)),),
    sparsity={"pattern": "nm", "layers": []},
    cost={},
    parity={},
)


def _with_sparsity(**sparsity: Any) -> Manifest:
    return replace(MANIFEST, sparsity=sparsity)


DEVICE = {
    "compute_capability": "8.7",
    "name": "Orin",
    "cuda_runtime_version": "12.6",
    "cuda_driver_version": "12.6",
}


# -- options, key, plan ----------------------------------------------------------------------------


def test_cache_key_is_stable_and_pinned() -> None:
    options = BuildOptions(precision="fp16", sparse_weights=True, min_batch=1, opt_batch=4, max_batch=8)
    key = cache_key(SHA, "10.3.0.30", "8.7", options)
    assert key == cache_key(SHA.upper(), "10.3.0.30", "8.7", BuildOptions(**{**options.__dict__}))
    # Pinned: the canonical JSON recipe must not drift, or every cached engine is orphaned.
    assert key == "40ea61e77b8ffa53b901f082e5e570dda85692f9a8042826c728e14cba782381"


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "cd" * 32},
        {"trt_version": "10.3.0.31"},
        {"compute_capability": "8.6"},
        {"options": BuildOptions(precision="fp16")},
        {"options": BuildOptions(sparse_weights=True)},
        {"options": BuildOptions(max_batch=2)},
        {"options": BuildOptions(workspace_bytes=1 << 29)},
        {"options": BuildOptions(builder_optimization_level=4)},
    ],
)
def test_cache_key_changes_with_every_input(change: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "onnx_sha256": SHA,
        "trt_version": "10.3.0.30",
        "compute_capability": "8.7",
        "options": BuildOptions(),
    }
    assert cache_key(**{**base, **change}) != cache_key(**base)


def test_timing_cache_location_is_not_part_of_the_key() -> None:
    a = cache_key(SHA, "10.3", "8.7", BuildOptions(timing_cache=Path("a.cache")))
    assert a == cache_key(SHA, "10.3", "8.7", BuildOptions())


def test_cache_key_rejects_bad_inputs() -> None:
    with pytest.raises(UsageError, match="sha256"):
        cache_key("not-a-digest", "10.3", "8.7", BuildOptions())
    with pytest.raises(UsageError, match="compute capability"):
        cache_key(SHA, "10.3", "", BuildOptions())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"precision": "bf16"},
        {"workspace_bytes": 0},
        {"min_batch": 4, "opt_batch": 2, "max_batch": 8},
        {"builder_optimization_level": 6},
    ],
)
def test_build_options_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        BuildOptions(**kwargs)


def test_build_options_round_trip() -> None:
    options = BuildOptions(precision="int8", max_batch=4, opt_batch=2, timing_cache=Path("t.cache"))
    assert BuildOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options


def test_options_for_bundle() -> None:
    options = options_for_bundle(MANIFEST, batch_sizes=(8, 1, 4))
    assert (options.precision, options.sparse_weights) == ("fp16", True)
    assert (options.min_batch, options.opt_batch, options.max_batch) == (1, 8, 8)
    assert options_for_bundle(MANIFEST, batch_sizes=(1, 8), opt_batch=1).opt_batch == 1
    with pytest.raises(UsageError):
        options_for_bundle(MANIFEST, batch_sizes=())


def test_wants_sparse_weights() -> None:
    assert wants_sparse_weights(_with_sparsity(pattern="nm"))
    assert wants_sparse_weights(_with_sparsity(pattern="2:4"))
    assert not wants_sparse_weights(_with_sparsity(pattern="channel"))
    assert not wants_sparse_weights(_with_sparsity(pattern="nm", trt_sparse_weights=False))
    assert not wants_sparse_weights(_with_sparsity())


def test_profile_shapes() -> None:
    options = BuildOptions(min_batch=1, opt_batch=4, max_batch=8)
    assert profile_shapes("x", (-1, 3, 8, 8), options) == ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))
    assert profile_shapes("x", (1, 3), BuildOptions()) is None
    with pytest.raises(EngineBuildError, match="fixed batch of 1"):
        profile_shapes("x", (1, 3), options)
    with pytest.raises(EngineBuildError, match="dynamic non-batch"):
        profile_shapes("x", (-1, -1), options)


def test_precision_plan() -> None:
    assert precision_plan("fp32", 10) == ([], [])
    assert precision_plan("fp16", 10) == (["FP16"], [])
    assert precision_plan("int8", 10) == (["INT8", "FP16"], [])
    flags, warnings = precision_plan("fp16", 11)
    assert flags == [] and "must carry FP16 tensors" in warnings[0]
    flags, warnings = precision_plan("int8", 11)
    assert flags == [] and "Q/DQ" in warnings[0]
    assert precision_plan("fp32", 11) == ([], [])
    with pytest.raises(UsageError, match="not supported"):
        precision_plan("fp16", 8)


# -- cache -----------------------------------------------------------------------------------------


def _meta(**extra: Any) -> dict[str, Any]:
    return {
        "onnx_sha256": SHA,
        "trt_version": "10.3.0.30",
        "compute_capability": "8.7",
        "options": BuildOptions().to_dict(),
        "cuda_version": "12.6",
        "sparsity": {"eligible": ["a"], "picked": [], "not_picked": ["a"], "reported": True},
        **extra,
    }


def test_engine_cache_round_trip(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = cache_key(SHA, "10.3.0.30", "8.7", BuildOptions())
    layers = json.dumps({"Layers": [{"Name": "a", "TacticName": "sm87_sparse_x"}], "Bindings": ["in", "out"]})
    stored = cache.put(key, b"plan-bytes", _meta(warnings=["w"]), "[I] [TRT] log\n", layers)
    assert stored.from_cache is False
    assert sorted(p.name for p in (tmp_path / key).iterdir()) == [
        "build.log",
        "engine.plan",
        "layers.json",
        "meta.json",
    ]
    hit = cache.get(key)
    assert hit is not None and hit.from_cache
    assert hit.engine_path.read_bytes() == b"plan-bytes"
    assert hit.engine_bytes == 10 and hit.cuda_version == "12.6" and hit.warnings == ["w"]
    assert hit.sparsity.not_picked == ["a"]
    assert hit.layers[0].looks_sparse_heuristic
    sidecar = json.loads((tmp_path / key / "meta.json").read_text())
    assert sidecar["build_log"] == "build.log" and sidecar["schema_version"] == 1
    assert cache.keys() == [key]
    json.dumps(hit.to_dict())
    cache.remove(key)
    assert cache.get(key) is None and cache.keys() == []


def test_damaged_engine_is_a_miss(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = cache_key(SHA, "10.3.0.30", "8.7", BuildOptions())
    cache.put(key, b"plan-bytes", _meta(), "")
    (tmp_path / key / "engine.plan").write_bytes(b"tampered")
    assert cache.get(key) is None
    with pytest.raises(UsageError):
        cache.entry_dir("../escape")
    with pytest.raises(UsageError, match="missing"):
        cache.put(key, b"x", {"onnx_sha256": SHA}, "")


# -- build flow against a stand-in tensorrt ----------------------------------------------------------


class _Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


def _fake_tensorrt(version: str, *, fp16_tensors: bool = False, fail: str = "") -> types.ModuleType:
    """A stand-in for the tensorrt module with just the calls build_engine makes."""
    trt = types.ModuleType("tensorrt")
    calls: dict[str, Any] = {"flags": set(), "builds": 0, "profiles": [], "timing_blob": None}
    trt.calls = calls  # type: ignore[attr-defined]
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16 INT8 SPARSE_WEIGHTS")  # type: ignore[attr-defined]
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")  # type: ignore[attr-defined]
    trt.ProfilingVerbosity = enum.Enum("ProfilingVerbosity", "LAYER_NAMES_ONLY DETAILED")  # type: ignore[attr-defined]
    trt.LayerInformationFormat = enum.Enum("LayerInformationFormat", "ONELINE JSON")  # type: ignore[attr-defined]
    trt.DataType = enum.Enum("DataType", "FLOAT HALF INT8")  # type: ignore[attr-defined]
    trt.LayerType = enum.Enum("LayerType", "CONVOLUTION QUANTIZE")  # type: ignore[attr-defined]

    class ILogger:
        Severity = _Severity

        def __init__(self) -> None:
            pass

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class Layer:
        type = trt.LayerType.CONVOLUTION
        num_outputs = 1

        def get_output(self, index: int) -> Tensor:
            return Tensor("y", (-1, 10), trt.DataType.HALF if fp16_tensors else trt.DataType.FLOAT)

    class Network:
        num_inputs = 1
        num_layers = 2

        def get_input(self, index: int) -> Tensor:
            return Tensor("input", (-1, 1, 32, 32), trt.DataType.FLOAT)

        def get_layer(self, index: int) -> Layer:
            return Layer()

    class OnnxParser:
        num_errors = 1 if fail == "parse" else 0

        def __init__(self, network: Network, logger: ILogger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            calls["onnx"] = path
            return fail != "parse"

        def get_error(self, index: int) -> str:
            return "In node 3 (Conv): unsupported attribute"

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob

        def serialize(self) -> bytes:
            return b"TIMING:" + self.blob

    class Config:
        def __init__(self) -> None:
            self.cache: TimingCache | None = None

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            calls["pool"] = (pool.name, size)

        def set_flag(self, flag: Any) -> None:
            calls["flags"].add(flag.name)

        def add_optimization_profile(self, profile: Profile) -> None:
            calls["profiles"].append(profile.shapes)

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            return TimingCache(blob)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            if cache.blob == b"stale":
                return False
            calls["timing_blob"] = cache.blob
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            assert self.cache is not None
            return self.cache

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[Any, ...]] = {}

        def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
            self.shapes[name] = (low, opt, high)

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            calls["builds"] += 1
            calls["level"] = config.builder_optimization_level  # type: ignore[attr-defined]
            calls["verbosity"] = config.profiling_verbosity.name  # type: ignore[attr-defined]
            log = self.logger.log  # type: ignore[attr-defined]
            log(_Severity.VERBOSE, "Tactic timing noise")
            if fail == "build":
                log(_Severity.ERROR, "Error Code 4: Internal Error (out of memory)")
                return None
            log(_Severity.INFO, "(Sparsity) Layers eligible for sparse math: conv1, conv2")
            log(_Severity.INFO, "(Sparsity) TRT inference plan picked sparse implementation for layers: conv2")
            return b"ENGINE:" + ",".join(sorted(calls["flags"])).encode()

    class Inspector:
        def get_engine_information(self, fmt: Any) -> str:
            assert fmt.name == "JSON"
            layers = [{"Name": "conv2", "LayerType": "CaskConvolution", "TacticName": "sm87_xmma_fprop_sparse_conv"}]
            return json.dumps({"Layers": layers, "Bindings": ["input", "logits"]})

    class Engine:
        device_memory_size_v2 = 1234

        def create_engine_inspector(self) -> Inspector:
            return Inspector()

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> Engine:
            assert plan.startswith(b"ENGINE:")
            return Engine()

    for cls in (ILogger, OnnxParser, Builder, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    onnx = tmp_path / "src.onnx"
    onnx.write_bytes(b"not really onnx; the stand-in parser does not read it")
    return write_bundle(tmp_path / "bundle", MANIFEST, {"model.onnx": onnx})


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "cuda_device_info", lambda device=0: dict(DEVICE))


def _install(monkeypatch: pytest.MonkeyPatch, trt: types.ModuleType) -> Any:
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt.calls  # type: ignore[attr-defined]


def test_build_on_trt10(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cuda: None) -> None:
    calls = _install(monkeypatch, _fake_tensorrt("10.3.0.30"))
    cache = EngineCache(tmp_path / "engines")
    options = options_for_bundle(MANIFEST, batch_sizes=(1, 4, 8), opt_batch=4, workspace_bytes=256 << 20)
    result = build_engine(bundle, options, cache=cache)

    assert calls["flags"] == {"FP16", "SPARSE_WEIGHTS"}
    assert calls["pool"] == ("WORKSPACE", 256 << 20)
    assert calls["level"] == 3 and calls["verbosity"] == "DETAILED"
    assert calls["network_flags"] == 0
    assert calls["profiles"] == [{"input": ((1, 1, 32, 32), (4, 1, 32, 32), (8, 1, 32, 32))}]
    assert calls["onnx"] == str(bundle / "model.onnx")

    assert result.from_cache is False
    assert result.trt_version == "10.3.0.30" and result.compute_capability == "8.7"
    assert result.cuda_version == "12.6" and result.gpu_name == "Orin"
    assert result.sparsity.eligible == ["conv1", "conv2"]
    assert result.sparsity.picked == ["conv2"] and result.sparsity.not_picked == ["conv1"]
    assert [layer.looks_sparse_heuristic for layer in result.layers] == [True]
    assert result.device_memory_bytes == 1234
    assert result.warnings == []
    assert result.engine_path.read_bytes() == b"ENGINE:FP16,SPARSE_WEIGHTS"
    log = result.build_log_path.read_text()
    assert "[I] [TRT] (Sparsity) Layers eligible for sparse math: conv1, conv2" in log
    assert "Tactic timing noise" not in log  # VERBOSE is dropped unless asked for

    sidecar = json.loads((result.engine_path.parent / "meta.json").read_text())
    assert sidecar["builder_flags"] == ["SPARSE_WEIGHTS", "FP16"]
    assert sidecar["options"]["max_batch"] == 8
    assert sidecar["sparsity"]["picked"] == ["conv2"]
    timing = cache.timing_cache_path("10.3.0.30", "8.7")
    assert sidecar["timing_cache"] == str(timing) and timing.read_bytes() == b"TIMING:"

    again = build_engine(bundle, options, cache=cache)
    assert again.from_cache and calls["builds"] == 1 and again.key == result.key
    rebuilt = build_engine(bundle, options, cache=cache, force=True)
    assert calls["builds"] == 2 and not rebuilt.from_cache
    assert calls["timing_blob"] == b"TIMING:"  # the second build was seeded from disk


def test_build_on_trt11_records_the_precision_warning(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cuda: None
) -> None:
    calls = _install(monkeypatch, _fake_tensorrt("11.1.0.7"))
    result = build_engine(bundle, cache=EngineCache(tmp_path / "engines"))
    assert calls["flags"] == {"SPARSE_WEIGHTS"}  # no FP16 flag exists on 11.x
    assert any("must carry FP16 tensors" in w for w in result.warnings)
    assert any("holds no FP16 tensors" in w for w in result.warnings)


def test_build_on_trt11_with_fp16_onnx(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cuda: None
) -> None:
    _install(monkeypatch, _fake_tensorrt("11.1.0.7", fp16_tensors=True))
    result = build_engine(bundle, cache=EngineCache(tmp_path / "engines"))
    assert not any("holds no FP16 tensors" in w for w in result.warnings)


def test_stale_timing_cache_is_replaced(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cuda: None
) -> None:
    _install(monkeypatch, _fake_tensorrt("10.3.0.30"))
    timing = tmp_path / "t.cache"
    timing.write_bytes(b"stale")
    result = build_engine(bundle, BuildOptions(timing_cache=timing), cache=EngineCache(tmp_path / "engines"))
    assert any("did not match" in w for w in result.warnings)
    assert timing.read_bytes() == b"TIMING:"


def test_parse_and_build_failures(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cuda: None) -> None:
    cache = EngineCache(tmp_path / "engines")
    _install(monkeypatch, _fake_tensorrt("10.3.0.30", fail="parse"))
    with pytest.raises(EngineBuildError, match="unsupported attribute"):
        build_engine(bundle, cache=cache)
    _install(monkeypatch, _fake_tensorrt("10.3.0.30", fail="build"))
    with pytest.raises(EngineBuildError, match="out of memory"):
        build_engine(bundle, cache=cache)
    assert cache.keys() == []


def test_unknown_gpu_needs_an_explicit_compute_capability(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(monkeypatch, _fake_tensorrt("10.3.0.30"))

    def no_gpu(device: int = 0) -> dict[str, Any]:
        raise MissingDependencyError("cuda-python is not installed")

    monkeypatch.setattr(engine_mod, "cuda_device_info", no_gpu)
    with pytest.raises(EngineBuildError, match="pass compute_capability"):
        build_engine(bundle, cache=EngineCache(tmp_path / "engines"))
    result = build_engine(bundle, cache=EngineCache(tmp_path / "engines"), compute_capability="8.7")
    assert result.compute_capability == "8.7" and result.cuda_version is None


def test_missing_tensorrt_names_the_extra(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"edgeprune\[trt\]"):
        build_engine(bundle, compute_capability="8.7")


def test_modules_import_without_tensorrt_cuda_or_torch() -> None:
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'tensorrt', 'cuda', 'pycuda', 'torch'}:\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import edgeprune.device.engine, edgeprune.device.engine.trtexec, edgeprune.device.engine.logs\n"
        "import edgeprune.device.runners.trt\n"
        "from edgeprune.device.runners.trt import TrtRunner\n"
        "from edgeprune.errors import MissingDependencyError\n"
        "try:\n"
        "    TrtRunner(b'plan').activate()\n"
        "except MissingDependencyError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "tensorrt is not installed" in done.stdout and "edgeprune[trt]" in done.stdout
