"""TensorRT engine builder and on-disk engine cache (device side).

A bundle carries an ONNX model; the TensorRT engine is built from it *on the device*, because an
engine is tied to the exact TensorRT version and the GPU it was built on. This module builds one
with the TensorRT Python API of 10.x (JetPack 6) and 11.x (current hosts) and caches it on disk by
``(ONNX sha256, TensorRT version, GPU compute capability, build options)``, so a second benchmark
of the same bundle does not pay minutes of kernel timing again.

What a build does, and why:

- **workspace limit** (``set_memory_pool_limit(WORKSPACE, n)``): Jetson memory is shared with the
  CPU, so the builder must not take all of it.
- **one optimization profile** spanning the batch sizes to be measured: the ONNX has a symbolic
  batch; min/opt/max bound it and ``opt`` is the shape kernels are tuned for.
- **SPARSE_WEIGHTS** only when the bundle asks for 2:4 sparsity: it makes the builder time sparse
  kernels where weights already follow the pattern (it never rewrites weights).
- **precision**: on 10.x the FP16 (and for INT8 bundles the INT8) builder flag; on 11.x there are
  no precision flags at all (every network is strongly typed), so the ONNX itself must carry FP16
  tensors or Q/DQ nodes, and the result records a warning saying so. INT8 never uses an implicit
  calibrator (deprecated in 10.1, removed in 11.0): scales come from the ONNX's Q/DQ nodes.
- **a timing cache kept on disk**, so rebuilding (other options, another bundle of the same
  architecture) reuses kernel timings.
- **detailed profiling verbosity**, so the engine inspector can name each layer's kernel.

The build log is captured through an ``ILogger`` and parsed for the sparsity report
(:func:`edgeprune.device.trtlog.parse_sparsity`); the inspector's per-layer JSON is parsed too.
Both land in the result and in a small JSON sidecar next to the cached engine.

``tensorrt`` and ``cuda`` are imported only inside the functions that need them; without them this
module still imports, and calling a function that needs them raises
:class:`~edgeprune.errors.MissingDependencyError` naming the ``trt`` extra.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeprune.bundle import MODEL_FILE, PRECISIONS, read_manifest, sha256_file
from edgeprune.device.trtlog import LayerInfo, SparsityReport, parse_layer_info, parse_sparsity
from edgeprune.errors import EngineBuildError, MissingDependencyError, RunnerError, UsageError, missing
from edgeprune.vocab import NM_NAMES

SUPPORTED_TRT_MAJORS = (10, 11)
CACHE_KEY_SCHEMA = 1
SIDECAR_SCHEMA = 1
ENGINE_FILE = "engine.plan"
SIDECAR_FILE = "meta.json"
BUILD_LOG_FILE = "build.log"
LAYER_INFO_FILE = "layers.json"
DEFAULT_WORKSPACE_BYTES = 1 << 30
# Sparsity patterns in a bundle manifest that ask TensorRT for 2:4 sparse kernels.
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------------------------
# Options and cache key
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOptions:
    """Everything that changes the engine TensorRT builds.

    Attributes:
        precision: ``fp32``, ``fp16`` or ``int8`` (see the module docstring for what each means on
            TensorRT 10.x and 11.x).
        sparse_weights: set ``BuilderFlag.SPARSE_WEIGHTS`` so the builder times 2:4 sparse kernels.
        workspace_bytes: the workspace memory-pool limit.
        min_batch, opt_batch, max_batch: the optimization profile's batch range; ``opt_batch`` is
            the batch size kernels are tuned for.
        builder_optimization_level: TensorRT's default is 3; higher builds slower for (sometimes)
            faster engines, so it is part of the cache key.
        timing_cache: file to load the timing cache from and save it back to. Not part of the
            cache key: it only speeds the build up. ``None`` lets the engine cache choose one.
    """

    precision: str = "fp32"
    sparse_weights: bool = False
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    builder_optimization_level: int = 3
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.workspace_bytes <= 0:
            raise UsageError(f"workspace_bytes must be positive, got {self.workspace_bytes}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UsageError(
                f"batch sizes must satisfy 1 <= min <= opt <= max, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if not 0 <= self.builder_optimization_level <= 5:
            raise UsageError(f"builder_optimization_level must be 0..5, got {self.builder_optimization_level}")

    def key_fields(self) -> dict[str, Any]:
        """The fields that identify the engine (everything but the timing-cache location)."""
        return {
            "precision": self.precision,
            "sparse_weights": self.sparse_weights,
            "workspace_bytes": self.workspace_bytes,
            "min_batch": self.min_batch,
            "opt_batch": self.opt_batch,
            "max_batch": self.max_batch,
            "builder_optimization_level": self.builder_optimization_level,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, timing-cache path included."""
        return {**self.key_fields(), "timing_cache": str(self.timing_cache) if self.timing_cache else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildOptions:
        """Inverse of :meth:`to_dict`; unknown keys are ignored so old sidecars stay readable."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "timing_cache"}
        cache = data.get("timing_cache")
        return cls(**known, timing_cache=Path(cache) if cache else None)


def cache_key(onnx_sha256: str, trt_version: str, compute_capability: str, options: BuildOptions) -> str:
    """Stable engine-cache key: the sha256 of a canonical JSON of everything the engine depends on.

    Canonical means sorted keys and fixed separators, so the same inputs give the same key in any
    Python process; the key schema version is included so a future change of the recipe cannot
    collide with old entries.

    Raises:
        UsageError: ``onnx_sha256`` is not a 64-digit hex digest, or a version field is empty.
    """
    digest = onnx_sha256.lower()
    if not _SHA256.match(digest):
        raise UsageError(f"onnx_sha256 must be a hex sha256 digest, got {onnx_sha256!r}")
    if not trt_version or not compute_capability:
        raise UsageError("cache_key needs the TensorRT version and the GPU compute capability")
    payload = {
        "schema": CACHE_KEY_SCHEMA,
        "onnx_sha256": digest,
        "trt_version": str(trt_version),
        "compute_capability": str(compute_capability),
        "options": options.key_fields(),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def wants_sparse_weights(manifest: Mapping[str, Any]) -> bool:
    """Whether a bundle asks for TensorRT's 2:4 sparse kernels.

    True when the manifest's sparsity pattern is N:M (``nm``/``2:4``), or when it sets
    ``sparsity.trt_sparse_weights`` explicitly (which also lets a bundle opt out).
    """
    sparsity = manifest.get("sparsity") or {}
    if "trt_sparse_weights" in sparsity:
        return bool(sparsity["trt_sparse_weights"])
    return str(sparsity.get("pattern", "")).lower() in NM_NAMES


def options_for_bundle(
    manifest: Mapping[str, Any],
    *,
    batch_sizes: Sequence[int] = (1,),
    opt_batch: int | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    builder_optimization_level: int = 3,
    timing_cache: Path | None = None,
) -> BuildOptions:
    """Derive build options from a bundle manifest and the batch sizes a benchmark will time.

    Args:
        manifest: a validated bundle manifest (precision and sparsity pattern are read from it).
        batch_sizes: every batch size the engine must accept; the profile spans min..max.
        opt_batch: the batch size kernels are tuned for; defaults to the largest one. For the
            cleanest per-batch latency, build one engine per batch size instead.
        workspace_bytes, builder_optimization_level, timing_cache: as in :class:`BuildOptions`.

    Raises:
        UsageError: no batch sizes, or a non-positive one.
    """
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise UsageError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    return BuildOptions(
        precision=str(manifest.get("precision", "fp32")),
        sparse_weights=wants_sparse_weights(manifest),
        workspace_bytes=workspace_bytes,
        min_batch=sizes[0],
        opt_batch=opt_batch if opt_batch is not None else sizes[-1],
        max_batch=sizes[-1],
        builder_optimization_level=builder_optimization_level,
        timing_cache=timing_cache,
    )


def profile_shapes(
    name: str, shape: Sequence[int], options: BuildOptions
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """Min/opt/max shapes of one network input for the optimization profile.

    Only the leading (batch) dimension may be dynamic (-1): edgeprune bundles export a symbolic
    batch and fixed sizes elsewhere, and any other dynamic dimension has no value we could choose.

    Returns:
        ``None`` for a fully static input whose batch matches the options (no profile needed).

    Raises:
        EngineBuildError: a non-batch dimension is dynamic, or a static batch contradicts the
            requested batch sizes.
    """
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims[1:]):
        raise EngineBuildError(
            f"input {name} has dynamic non-batch dimensions {list(dims)}: export the ONNX with fixed sizes "
            "except the batch"
        )
    if not dims or dims[0] >= 0:
        if dims and not options.min_batch == options.max_batch == dims[0]:
            raise EngineBuildError(
                f"input {name} has a fixed batch of {dims[0]} but batch sizes "
                f"{options.min_batch}..{options.max_batch} were requested: "
                "export the ONNX with a dynamic batch"
            )
        return None
    rest = dims[1:]
    return (options.min_batch, *rest), (options.opt_batch, *rest), (options.max_batch, *rest)


def precision_plan(precision: str, trt_major: int) -> tuple[list[str], list[str]]:
    """Which builder flags a precision needs on a TensorRT major version, and what to warn about.

    Returns:
        ``(flag_names, warnings)``: ``BuilderFlag`` member names to set, and messages to record.

    Raises:
        UsageError: the TensorRT major version is not supported.
    """
    if trt_major not in SUPPORTED_TRT_MAJORS:
        raise UsageError(f"TensorRT {trt_major}.x is not supported (edgeprune supports {SUPPORTED_TRT_MAJORS})")
    if precision == "fp32":
        return [], []
    if trt_major == 10:
        # Weak typing: FP16 lets the builder pick half-precision kernels; INT8 enables the int8
        # kernels the Q/DQ nodes call for (FP16 too, for the layers between Q/DQ pairs).
        return (["FP16"] if precision == "fp16" else ["INT8", "FP16"]), []
    if precision == "fp16":
        carrier = "FP16 tensors (ModelOpt AutoCast)"
    else:
        carrier = "Q/DQ nodes (ModelOpt quantization)"
    return [], [
        f"TensorRT {trt_major}.x has no precision flags (networks are strongly typed): "
        f"{precision} comes only from the ONNX, which must carry {carrier}; "
        "an FP32 ONNX builds an FP32 engine"
    ]


# --------------------------------------------------------------------------------------------
# Optional dependencies
# --------------------------------------------------------------------------------------------


def import_tensorrt() -> Any:
    """Import ``tensorrt`` or raise MissingDependencyError naming the ``trt`` extra."""
    try:
        import tensorrt
    except ImportError as err:
        raise missing("tensorrt", "trt") from err
    return tensorrt


def trt_major(version: str) -> int:
    """The major number of a TensorRT version string such as ``10.3.0.30``."""
    try:
        return int(str(version).split(".", 1)[0])
    except ValueError as err:
        raise UsageError(f"cannot read a TensorRT version from {version!r}") from err


def import_cudart() -> Any:
    """Import cuda-python's runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6).

    Raises:
        MissingDependencyError: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as err:
            raise missing("cuda-python", "trt") from err
    return runtime


def cuda_check(result: Any, what: str) -> Any:
    """Check a cuda-python call's ``(err, value...)`` tuple and return the value(s).

    Every ``cuda.bindings.runtime`` call returns its error code first; ignoring it turns a failed
    allocation into a later segfault, so every call goes through here.

    Raises:
        RunnerError: naming the call and the CUDA error.
    """
    parts = result if isinstance(result, tuple) else (result,)
    err = parts[0]
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        raise RunnerError(f"CUDA call {what} failed with {name}")
    if len(parts) == 1:
        return None
    return parts[1] if len(parts) == 2 else parts[1:]


def cuda_device_info(device: int = 0) -> dict[str, Any]:
    """Compute capability, name and CUDA versions of a GPU, for the cache key and provenance.

    Uses cuda-python, and pycuda where cuda-python is missing (old JetPacks).

    Raises:
        MissingDependencyError: neither cuda-python nor pycuda is installed.
        RunnerError: the CUDA runtime reports an error (no GPU, driver too old).
    """
    try:
        rt = import_cudart()
    except MissingDependencyError:
        return _pycuda_device_info(device)
    attr = rt.cudaDeviceAttr
    major = cuda_check(
        rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute"
    )
    minor = cuda_check(
        rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute"
    )
    props = cuda_check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    raw_name = getattr(props, "name", b"")
    if isinstance(raw_name, bytes):
        name = raw_name.decode("utf-8", "replace").rstrip("\x00")
    else:
        name = str(raw_name)
    runtime_version = cuda_check(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    driver_version = cuda_check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")
    return {
        "compute_capability": f"{major}.{minor}",
        "name": name,
        "cuda_runtime_version": _cuda_version_string(runtime_version),
        "cuda_driver_version": _cuda_version_string(driver_version),
        "backend": "cuda-python",
    }


def _pycuda_device_info(device: int) -> dict[str, Any]:
    try:
        import pycuda.driver as drv
    except ImportError as err:
        raise missing("cuda-python", "trt") from err
    drv.init()
    dev = drv.Device(device)
    major, minor = dev.compute_capability()
    return {
        "compute_capability": f"{major}.{minor}",
        "name": dev.name(),
        "cuda_runtime_version": ".".join(str(p) for p in drv.get_version()),
        "cuda_driver_version": _cuda_version_string(drv.get_driver_version()),
        "backend": "pycuda",
    }


def _cuda_version_string(code: int) -> str:
    """CUDA encodes versions as ``1000*major + 10*minor`` (12060 -> ``12.6``)."""
    return f"{int(code) // 1000}.{(int(code) % 1000) // 10}"


# --------------------------------------------------------------------------------------------
# Results and cache
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    """A built (or cached) engine and what the build said about it.

    Attributes:
        key: the engine-cache key.
        engine_path: the serialized engine.
        build_log_path: the captured TensorRT build log (INFO and above, VERBOSE if asked).
        layer_info_path: the engine inspector's JSON, if the engine could be inspected.
        sparsity: the build log's sparsity report (eligible / picked / not picked).
        layers: the inspector's per-layer kernels; ``looks_sparse_heuristic`` is only a hint.
        warnings: things a reader of the numbers must know (precision on 11.x, a timing cache
            that did not match, no Q/DQ nodes for INT8...).
        build_time_s: wall time of ``build_serialized_network`` (None if unknown).
        device_memory_bytes: activation memory the engine needs (``device_memory_size_v2``).
        from_cache: True when this result was read from the cache instead of built now.
    """

    key: str
    engine_path: Path
    build_log_path: Path
    layer_info_path: Path | None
    onnx_sha256: str
    trt_version: str
    cuda_version: str | None
    compute_capability: str
    gpu_name: str | None
    options: BuildOptions
    sparsity: SparsityReport
    layers: list[LayerInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    build_time_s: float | None = None
    engine_bytes: int = 0
    engine_sha256: str = ""
    device_memory_bytes: int | None = None
    from_cache: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings, layers included)."""
        return {
            "key": self.key,
            "engine_path": str(self.engine_path),
            "build_log_path": str(self.build_log_path),
            "layer_info_path": str(self.layer_info_path) if self.layer_info_path else None,
            "onnx_sha256": self.onnx_sha256,
            "trt_version": self.trt_version,
            "cuda_version": self.cuda_version,
            "compute_capability": self.compute_capability,
            "gpu_name": self.gpu_name,
            "options": self.options.to_dict(),
            "sparsity": self.sparsity.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "warnings": list(self.warnings),
            "build_time_s": self.build_time_s,
            "engine_bytes": self.engine_bytes,
            "engine_sha256": self.engine_sha256,
            "device_memory_bytes": self.device_memory_bytes,
            "from_cache": self.from_cache,
        }


def default_cache_dir() -> Path:
    """``$EDGEPRUNE_CACHE_DIR/engines``, else ``$XDG_CACHE_HOME/edgeprune/engines``, else ``~/.cache/...``."""
    if env := os.environ.get("EDGEPRUNE_CACHE_DIR"):
        return Path(env) / "engines"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeprune" / "engines"


class EngineCache:
    """Engines on disk, one folder per cache key::

        <root>/<key>/engine.plan     the serialized engine
        <root>/<key>/meta.json       sidecar: versions, SM, options, sparsity report, warnings
        <root>/<key>/build.log       the captured build log
        <root>/<key>/layers.json     the engine inspector's JSON (when available)
        <root>/timing/trt<version>-sm<cc>.cache   timing caches, shared across engines

    Entries are written to a temporary sibling folder and renamed into place, so a crash mid-write
    never leaves a half entry that :meth:`get` would serve.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def entry_dir(self, key: str) -> Path:
        """The folder of one entry (it may not exist)."""
        if not _SHA256.match(key):
            raise UsageError(f"not an engine cache key: {key!r}")
        return self.root / key

    def timing_cache_path(self, trt_version: str, compute_capability: str) -> Path:
        """Where the shared timing cache for one TensorRT version and GPU lives."""
        safe_version = re.sub(r"[^0-9A-Za-z.]", "_", trt_version)
        return self.root / "timing" / f"trt{safe_version}-sm{compute_capability.replace('.', '')}.cache"

    def keys(self) -> list[str]:
        """Keys of the complete entries."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _SHA256.match(p.name) and (p / SIDECAR_FILE).is_file())

    def get(self, key: str, verify: bool = True) -> BuildResult | None:
        """The cached result for ``key``, or None when absent or damaged.

        Args:
            verify: re-hash the engine file against the sidecar (a damaged engine is a miss).
        """
        folder = self.entry_dir(key)
        sidecar_path = folder / SIDECAR_FILE
        engine_path = folder / ENGINE_FILE
        if not sidecar_path.is_file() or not engine_path.is_file():
            return None
        try:
            meta = json.loads(sidecar_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(meta, dict):
            return None
        if meta.get("schema_version") != SIDECAR_SCHEMA or meta.get("key") != key:
            return None
        if verify and sha256_file(engine_path) != meta.get("engine_sha256"):
            return None
        layers_path = folder / LAYER_INFO_FILE
        layers: list[LayerInfo] = []
        if layers_path.is_file():
            try:
                layers = parse_layer_info(layers_path.read_text())
            except ValueError:
                layers = []
        return BuildResult(
            key=key,
            engine_path=engine_path,
            build_log_path=folder / BUILD_LOG_FILE,
            layer_info_path=layers_path if layers_path.is_file() else None,
            onnx_sha256=meta["onnx_sha256"],
            trt_version=meta["trt_version"],
            cuda_version=meta.get("cuda_version"),
            compute_capability=meta["compute_capability"],
            gpu_name=meta.get("gpu_name"),
            options=BuildOptions.from_dict(meta.get("options", {})),
            sparsity=SparsityReport.from_dict(meta.get("sparsity", {})),
            layers=layers,
            warnings=list(meta.get("warnings", [])),
            build_time_s=meta.get("build_time_s"),
            engine_bytes=int(meta.get("engine_bytes", engine_path.stat().st_size)),
            engine_sha256=meta.get("engine_sha256", ""),
            device_memory_bytes=meta.get("device_memory_bytes"),
            from_cache=True,
        )

    def put(
        self,
        key: str,
        engine: bytes,
        meta: Mapping[str, Any],
        build_log: str,
        layer_json: str | None = None,
    ) -> BuildResult:
        """Store an engine with its sidecar, log and layer JSON; replaces an existing entry.

        Args:
            meta: sidecar fields: ``onnx_sha256``, ``trt_version``, ``compute_capability`` and
                ``options`` are required; ``cuda_version``, ``gpu_name``, ``sparsity``,
                ``warnings``, ``build_time_s``, ``device_memory_bytes`` and anything else are kept.

        Returns:
            The stored entry as a fresh (``from_cache=False``) result.
        """
        for required in ("onnx_sha256", "trt_version", "compute_capability", "options"):
            if required not in meta:
                raise UsageError(f"engine sidecar is missing {required!r}")
        final = self.entry_dir(key)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=self.root))
        try:
            (staging / ENGINE_FILE).write_bytes(engine)
            (staging / BUILD_LOG_FILE).write_text(build_log)
            if layer_json is not None:
                (staging / LAYER_INFO_FILE).write_text(layer_json)
            sidecar = {
                **dict(meta),
                "schema_version": SIDECAR_SCHEMA,
                "key": key,
                "engine_file": ENGINE_FILE,
                "engine_sha256": hashlib.sha256(engine).hexdigest(),
                "engine_bytes": len(engine),
                "build_log": BUILD_LOG_FILE,
                "layer_info": LAYER_INFO_FILE if layer_json is not None else None,
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            (staging / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        result = self.get(key, verify=False)
        if result is None:  # pragma: no cover - only on a concurrent delete
            raise EngineBuildError(f"engine cache entry {final} vanished while it was written")
        return replace(result, from_cache=False)

    def remove(self, key: str) -> None:
        """Delete one entry (harmless if absent)."""
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_bytes(data)
    tmp.replace(path)


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
    onnx_sha256 = str(manifest["files"][MODEL_FILE])
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
        "bundle_name": manifest.get("name"),
        "bundle_precision": manifest.get("precision"),
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
