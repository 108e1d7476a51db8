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
(:func:`edgeprune.device.engine.logs.parse_sparsity`); the inspector's per-layer JSON is parsed too.
Both land in the result and in a small JSON sidecar next to the cached engine.

``tensorrt`` and ``cuda`` are imported only inside the functions that need them; without them this
module still imports, and calling a function that needs them raises
:class:`~edgeprune.errors.MissingDependencyError` naming the ``trt`` extra.

The room: :mod:`.options` (what changes an engine, its cache key), :mod:`.cache` (results and the
on-disk cache), :mod:`.build` (the build), :mod:`.logs` (TensorRT's build log, inspector and
profile parsers), :mod:`.trtexec` (the same through NVIDIA's command-line tool). The CUDA and
TensorRT imports live with the runners (:mod:`edgeprune.device.runners.cuda`). The names below
are the room's public face.
"""

from edgeprune.device.engine.build import build_engine, engine_device_memory_bytes
from edgeprune.device.engine.cache import BuildResult, EngineCache, default_cache_dir
from edgeprune.device.engine.options import (
    SUPPORTED_TRT_MAJORS,
    BuildOptions,
    cache_key,
    options_for_bundle,
    precision_plan,
    profile_shapes,
    wants_sparse_weights,
)

__all__ = [
    "SUPPORTED_TRT_MAJORS",
    "BuildOptions",
    "BuildResult",
    "EngineCache",
    "build_engine",
    "cache_key",
    "default_cache_dir",
    "engine_device_memory_bytes",
    "options_for_bundle",
    "precision_plan",
    "profile_shapes",
    "wants_sparse_weights",
]
