"""What changes the engine TensorRT builds (``BuildOptions``), its cache key, and per-bundle defaults.

See :mod:`edgeprune.device.engine` for what a build does and why.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.bundle import PRECISIONS, Manifest
from edgeprune.errors import EngineBuildError, UsageError
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


def wants_sparse_weights(manifest: Manifest) -> bool:
    """Whether a bundle asks for TensorRT's 2:4 sparse kernels.

    True when the manifest's sparsity pattern is N:M (``nm``/``2:4``), or when it sets
    ``sparsity.trt_sparse_weights`` explicitly (which also lets a bundle opt out).
    """
    sparsity = manifest.sparsity
    if "trt_sparse_weights" in sparsity:
        return bool(sparsity["trt_sparse_weights"])
    return str(manifest.pattern or "").lower() in NM_NAMES


def options_for_bundle(
    manifest: Manifest,
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
        precision=manifest.precision,
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
