"""Build results and the on-disk engine cache, keyed by ONNX, TensorRT version, GPU and options."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeprune.bundle import sha256_file
from edgeprune.device.engine.logs import LayerInfo, SparsityReport, parse_layer_info
from edgeprune.device.engine.options import (
    _SHA256,
    BUILD_LOG_FILE,
    ENGINE_FILE,
    LAYER_INFO_FILE,
    SIDECAR_FILE,
    SIDECAR_SCHEMA,
    BuildOptions,
)
from edgeprune.errors import EngineBuildError, UsageError

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
