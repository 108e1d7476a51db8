"""Building an engine from a bundle with the TensorRT Python API (10.x and 11.x)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune.bundle import MODEL_FILE, read_manifest
from edgeprune.device.engine.cache import BuildResult, EngineCache, _atomic_write
from edgeprune.device.engine.logs import parse_sparsity
from edgeprune.device.engine.options import BuildOptions, cache_key, options_for_bundle, precision_plan, profile_shapes
from edgeprune.device.runners.cuda import cuda_device_info, import_tensorrt, trt_major
from edgeprune.errors import EngineBuildError, MissingDependencyError, RunnerError

# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------

_SEVERITY_LETTERS = {"INTERNAL_ERROR": "F", "ERROR": "E", "WARNING": "W", "INFO": "I", "VERBOSE": "V"}
_LETTER_RANK = {"F": 0, "E": 1, "W": 2, "I": 3, "V": 4}


def _severity_letter(severity: Any) -> str:
    name = getattr(severity, "name", None) or str(severity).rsplit(".", 1)[-1]
    return _SEVERITY_LETTERS.get(str(name).upper(), "I")


def _make_logger(trt: Any, verbose: bool) -> Any:
    """An ILogger that keeps every message as a trtexec-style ``[I] [TRT] ...`` line.

    The sparsity report is printed at INFO, so INFO is the floor; VERBOSE (kernel timings) is
    huge and only kept when asked for.
    """
    floor = _LETTER_RANK["V" if verbose else "I"]

    class CaptureLogger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            letter = _severity_letter(severity)
            if _LETTER_RANK[letter] <= floor:
                self.lines.append(f"[{letter}] [TRT] {msg}")

    return CaptureLogger()


def _error_tail(lines: Sequence[str], limit: int = 8) -> str:
    errors = [line for line in lines if line.startswith(("[E]", "[F]"))]
    return "; ".join((errors or list(lines))[-limit:])


def _network_evidence(trt: Any, network: Any) -> dict[str, bool | None]:
    """Whether the parsed network holds FP16 tensors and Q/DQ layers (None if it cannot tell)."""
    try:
        half = trt.DataType.HALF
        quantize = trt.LayerType.QUANTIZE
        has_half = False
        has_qdq = False
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == quantize:
                has_qdq = True
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype == half:
                    has_half = True
        return {"fp16_tensors": has_half, "qdq_nodes": has_qdq}
    except AttributeError:
        return {"fp16_tensors": None, "qdq_nodes": None}


def _load_timing_cache(config: Any, path: Path | None, warnings: list[str]) -> None:
    """Attach a timing cache, seeded from ``path`` when it holds a usable one."""
    blob = b""
    if path is not None and path.is_file():
        blob = path.read_bytes()
    cache = None
    try:
        cache = config.create_timing_cache(blob)
    except Exception:  # a corrupt file: TensorRT raises its own untyped errors
        cache = None
    if cache is None or not config.set_timing_cache(cache, False):
        if blob:
            warnings.append(f"timing cache {path} did not match this TensorRT/GPU and was started afresh")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)


def build_engine(
    bundle_dir: Path,
    options: BuildOptions | None = None,
    *,
    cache: EngineCache | None = None,
    compute_capability: str | None = None,
    verbose_log: bool = False,
    force: bool = False,
) -> BuildResult:
    """Build (or fetch from the cache) the TensorRT engine for a bundle.

    Args:
        bundle_dir: a bundle folder; its checksums are verified before anything is built.
        options: build options; default :func:`options_for_bundle` with batch size 1.
        cache: where engines are kept; default :class:`EngineCache` at :func:`default_cache_dir`.
        compute_capability: the GPU's, e.g. ``"8.7"``; default: asked from CUDA.
        verbose_log: keep VERBOSE messages in the build log (large).
        force: rebuild even if the cache has the engine.

    Raises:
        MissingDependencyError: tensorrt (or cuda-python, to read the GPU) is not installed.
        BundleError: the bundle is damaged.
        EngineBuildError: the ONNX does not parse, the profile cannot be set, or the build fails.
    """
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    onnx_path = bundle_dir / MODEL_FILE
    onnx_sha256 = manifest.files[MODEL_FILE]
    options = options or options_for_bundle(manifest)
    cache = cache or EngineCache()

    trt = import_tensorrt()
    trt_version = str(trt.__version__)
    major = trt_major(trt_version)
    flag_names, warnings = precision_plan(options.precision, major)

    device: dict[str, Any] = {}
    try:
        device = cuda_device_info()
    except (MissingDependencyError, RunnerError) as err:
        if compute_capability is None:
            raise EngineBuildError(
                f"cannot read the GPU's compute capability ({err}); pass compute_capability explicitly"
            ) from err
    sm = compute_capability or str(device["compute_capability"])
    key = cache_key(onnx_sha256, trt_version, sm, options)
    if not force and (hit := cache.get(key)) is not None:
        return hit

    logger = _make_logger(trt, verbose_log)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch on 10.x, strongly typed on 11.x
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        detail = "; ".join(errors) or _error_tail(logger.lines)
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: {detail}")

    evidence = _network_evidence(trt, network)
    if options.precision == "fp16" and major >= 11 and evidence["fp16_tensors"] is False:
        warnings.append("model.onnx holds no FP16 tensors, so this TensorRT 11 engine runs in FP32")
    if options.precision == "int8" and evidence["qdq_nodes"] is False:
        warnings.append("model.onnx holds no Q/DQ nodes: INT8 needs explicit quantization (no calibrator is used)")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    config.builder_optimization_level = options.builder_optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if options.sparse_weights:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    for flag in flag_names:
        config.set_flag(getattr(trt.BuilderFlag, flag))

    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shapes = profile_shapes(tensor.name, tuple(tensor.shape), options)
        if shapes is not None:
            profile.set_shape(tensor.name, *shapes)
            dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)

    timing_path = options.timing_cache or cache.timing_cache_path(trt_version, sm)
    _load_timing_cache(config, timing_path, warnings)

    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_time_s = time.perf_counter() - started
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx_path}: {_error_tail(logger.lines)}")
    engine_bytes = bytes(plan)
    _atomic_write(timing_path, bytes(config.get_timing_cache().serialize()))

    layer_json, device_memory = _inspect(trt, logger, engine_bytes, warnings)
    log_text = "\n".join(logger.lines) + "\n"
    meta = {
        "onnx_sha256": onnx_sha256,
        "bundle_name": manifest.name,
        "bundle_precision": manifest.precision,
        "trt_version": trt_version,
        "cuda_version": device.get("cuda_runtime_version"),
        "cuda_driver_version": device.get("cuda_driver_version"),
        "compute_capability": sm,
        "gpu_name": device.get("name"),
        "options": options.to_dict(),
        "builder_flags": (["SPARSE_WEIGHTS"] if options.sparse_weights else []) + flag_names,
        "profiling_verbosity": "DETAILED",
        "timing_cache": str(timing_path),
        "network_evidence": evidence,
        "sparsity": parse_sparsity(log_text).to_dict(),
        "warnings": warnings,
        "build_time_s": build_time_s,
        "device_memory_bytes": device_memory,
    }
    return cache.put(key, engine_bytes, meta, log_text, layer_json)


def _inspect(trt: Any, logger: Any, engine_bytes: bytes, warnings: list[str]) -> tuple[str | None, int | None]:
    """Deserialize the fresh engine once for its inspector JSON and activation-memory size."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        warnings.append("the built engine could not be deserialized for inspection; no per-layer info")
        return None, None
    device_memory = engine_device_memory_bytes(engine)
    try:
        inspector = engine.create_engine_inspector()
        layer_json = str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception as err:  # inspection is a bonus; a failure must not lose the engine
        warnings.append(f"engine inspector failed: {err}")
        layer_json = None
    return layer_json, device_memory


def engine_device_memory_bytes(engine: Any) -> int | None:
    """Activation memory an engine needs: ``device_memory_size_v2`` (10.x+), else the older field."""
    for attribute in ("device_memory_size_v2", "device_memory_size"):
        value = getattr(engine, attribute, None)
        if value is not None:
            return int(value)
    return None
