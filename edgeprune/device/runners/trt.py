"""TensorRT runner: deserializes an engine and runs it with explicit CUDA buffers, stream and events.

It follows the Runner contract (:mod:`edgeprune.device.runners.base`): ``activate()`` deserializes
the engine and creates an execution context and a stream (never timed), ``infer()`` runs one batch,
``deactivate()`` frees everything.

One ``infer()`` does what an application does per request, so the host time around it is the
end-to-end latency a user would see::

    H2D copy of every input (pinned host -> device)
    execute_async_v3 on our stream
    D2H copy of every output
    stream synchronize

Settings that change the numbers are fixed and recorded in ``settings``: no CUDA graph, data
transfers included, blocking synchronization (the CUDA default, not spin-wait). They match
:func:`edgeprune.device.engine.trtexec.trtexec_command`'s defaults, so both paths measure the same loop.

:meth:`TrtRunner.time_gpu_ms` adds CUDA-event timing beside host time: GPU time of the
``execute_async_v3`` work alone, and of copies + compute, next to the host wall time.

CUDA goes through cuda-python (``cuda.bindings.runtime``; every call returns ``(err, value)`` and
every error is checked). PyCUDA is a fallback for old JetPacks without cuda-python; it is driven
through its primary context instead of ``pycuda.autoinit``.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.device.engine.build import engine_device_memory_bytes
from edgeprune.device.runners.base import Runner, TensorSpec, check_inputs
from edgeprune.device.runners.cuda import cuda_check, import_cudart, import_tensorrt
from edgeprune.errors import MissingDependencyError, RunnerError, missing


@dataclass(frozen=True)
class GpuTiming:
    """One timed inference, three clocks.

    Attributes:
        gpu_compute_ms: CUDA events around ``execute_async_v3`` only (what trtexec calls
            "GPU Compute Time"); resolution about 0.5 us.
        gpu_total_ms: CUDA events around H2D + compute + D2H.
        host_ms: ``perf_counter_ns`` around the whole call, synchronization included.
    """

    gpu_compute_ms: float
    gpu_total_ms: float
    host_ms: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# CUDA backends: the few calls the runner needs, behind one small interface
# --------------------------------------------------------------------------------------------


class _CudaPython:
    """cuda-python runtime bindings; every call's error code is checked."""

    name = "cuda-python"

    def __init__(self) -> None:
        self.rt = import_cudart()
        kinds = self.rt.cudaMemcpyKind
        self.h2d = kinds.cudaMemcpyHostToDevice
        self.d2h = kinds.cudaMemcpyDeviceToHost

    def host_alloc(self, nbytes: int) -> tuple[np.ndarray, Any]:
        ptr = int(cuda_check(self.rt.cudaMallocHost(nbytes), "cudaMallocHost"))
        raw = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8))
        return np.ctypeslib.as_array(raw, shape=(nbytes,)), ptr

    def host_free(self, handle: Any) -> None:
        cuda_check(self.rt.cudaFreeHost(handle), "cudaFreeHost")

    def device_alloc(self, nbytes: int) -> tuple[int, Any]:
        ptr = int(cuda_check(self.rt.cudaMalloc(nbytes), "cudaMalloc"))
        return ptr, ptr

    def device_free(self, handle: Any) -> None:
        cuda_check(self.rt.cudaFree(handle), "cudaFree")

    def stream_create(self) -> Any:
        return cuda_check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_destroy(self, stream: Any) -> None:
        cuda_check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def stream_sync(self, stream: Any) -> None:
        cuda_check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def copy_h2d(self, device_ptr: int, host: np.ndarray, nbytes: int, stream: Any) -> None:
        result = self.rt.cudaMemcpyAsync(device_ptr, host.ctypes.data, nbytes, self.h2d, stream)
        cuda_check(result, "cudaMemcpyAsync(H2D)")

    def copy_d2h(self, host: np.ndarray, device_ptr: int, nbytes: int, stream: Any) -> None:
        result = self.rt.cudaMemcpyAsync(host.ctypes.data, device_ptr, nbytes, self.d2h, stream)
        cuda_check(result, "cudaMemcpyAsync(D2H)")

    def event_create(self) -> Any:
        return cuda_check(self.rt.cudaEventCreate(), "cudaEventCreate")

    def event_record(self, event: Any, stream: Any) -> None:
        cuda_check(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        cuda_check(self.rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        return float(cuda_check(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def event_destroy(self, event: Any) -> None:
        cuda_check(self.rt.cudaEventDestroy(event), "cudaEventDestroy")

    def close(self) -> None:
        """Nothing to release: the runtime API owns the primary context."""


class _PyCuda:
    """PyCUDA fallback, on the device's primary context (shared with TensorRT's runtime API)."""

    name = "pycuda"

    def __init__(self) -> None:
        try:
            import pycuda.driver as drv
        except ImportError as err:
            raise missing("cuda-python", "trt") from err
        self.drv = drv
        drv.init()
        self.context = drv.Device(0).retain_primary_context()
        self.context.push()

    def host_alloc(self, nbytes: int) -> tuple[np.ndarray, Any]:
        array = self.drv.pagelocked_empty(nbytes, np.uint8)
        return array, array

    def host_free(self, handle: Any) -> None:
        base = getattr(handle, "base", None)  # pagelocked arrays keep their HostAllocation in .base
        if base is not None and hasattr(base, "free"):
            base.free()

    def device_alloc(self, nbytes: int) -> tuple[int, Any]:
        allocation = self.drv.mem_alloc(nbytes)
        return int(allocation), allocation

    def device_free(self, handle: Any) -> None:
        handle.free()

    def stream_create(self) -> Any:
        return self.drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_destroy(self, stream: Any) -> None:
        """PyCUDA frees streams when they are garbage collected."""

    def stream_sync(self, stream: Any) -> None:
        stream.synchronize()

    def copy_h2d(self, device_ptr: int, host: np.ndarray, nbytes: int, stream: Any) -> None:
        self.drv.memcpy_htod_async(device_ptr, host[:nbytes], stream)

    def copy_d2h(self, host: np.ndarray, device_ptr: int, nbytes: int, stream: Any) -> None:
        self.drv.memcpy_dtoh_async(host[:nbytes], device_ptr, stream)

    def event_create(self) -> Any:
        return self.drv.Event()

    def event_record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(start.time_till(end))

    def event_destroy(self, event: Any) -> None:
        """PyCUDA frees events when they are garbage collected."""

    def close(self) -> None:
        self.context.pop()
        self.context.detach()


def _cuda_backend(prefer: str) -> Any:
    """cuda-python when installed (or asked for), else PyCUDA."""
    if prefer not in ("auto", "cuda-python", "pycuda"):
        raise RunnerError(f"unknown CUDA backend {prefer!r}: use auto, cuda-python or pycuda")
    if prefer in ("auto", "cuda-python"):
        try:
            return _CudaPython()
        except MissingDependencyError:
            if prefer == "cuda-python":
                raise
    return _PyCuda()


@dataclass
class _Buffer:
    host: np.ndarray  # pinned, as raw bytes
    host_handle: Any
    device_ptr: int
    device_handle: Any
    capacity: int


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


class TrtRunner(Runner):
    """Runs a serialized TensorRT engine.

    Args:
        engine: the engine file, or its bytes.
        cuda_backend: ``auto`` (cuda-python, else PyCUDA), ``cuda-python`` or ``pycuda``.

    Buffers are sized to the batch actually fed and grow when a larger batch arrives, so an
    engine with a profile up to batch 64 does not pin memory for 64 when timing batch 1.
    """

    def __init__(self, engine: Path | bytes, cuda_backend: str = "auto") -> None:
        super().__init__("tensorrt")
        self._engine_source = engine
        self._cuda_backend_choice = cuda_backend
        self.settings = {
            "cuda_graph": False,
            "data_transfers_included": True,
            "synchronization": "cudaStreamSynchronize (blocking, no spin-wait)",
            "host_timing": "perf_counter_ns around H2D + execute_async_v3 + D2H + synchronize",
        }
        self._trt: Any = None
        self._logger: Any = None
        self._cuda: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers: dict[str, _Buffer] = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    def _activate_impl(self) -> None:
        trt = import_tensorrt()
        self._trt = trt
        plan = self._read_plan()
        self._cuda = _cuda_backend(self._cuda_backend_choice)
        try:
            # Keep the logger referenced for the runtime's lifetime: TensorRT holds a raw pointer.
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise RunnerError(
                    "TensorRT could not deserialize the engine: it was built by another TensorRT version "
                    "or for another GPU; rebuild it on this device"
                )
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise RunnerError("TensorRT could not create an execution context (out of GPU memory?)")
            self._stream = self._cuda.stream_create()
            io_mode = trt.TensorIOMode.INPUT
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == io_mode]
            self._outputs = [n for n in names if self._engine.get_tensor_mode(n) != io_mode]
        except BaseException:
            try:
                self._release()
            except RunnerError:
                pass  # the original failure is the one to report
            raise
        self.settings.update(
            {
                "tensorrt_version": str(trt.__version__),
                "cuda_backend": self._cuda.name,
                "engine_bytes": len(plan),
                "device_memory_bytes": engine_device_memory_bytes(self._engine),
            }
        )

    def _read_plan(self) -> bytes:
        if isinstance(self._engine_source, (bytes, bytearray)):
            return bytes(self._engine_source)
        path = Path(self._engine_source)
        if not path.is_file():
            raise RunnerError(f"engine file {path} does not exist (build it with edgeprune.device.engine)")
        return path.read_bytes()

    def _deactivate_impl(self) -> None:
        self._release()

    def _release(self) -> None:
        """Free buffers, stream, context and engine; every step runs even if one fails."""
        errors: list[str] = []
        cuda = self._cuda
        if cuda is not None:
            for buffer in self._buffers.values():
                pairs = ((cuda.device_free, buffer.device_handle), (cuda.host_free, buffer.host_handle))
                for free, handle in pairs:
                    try:
                        free(handle)
                    except Exception as err:  # keep freeing the rest
                        errors.append(str(err))
            if self._stream is not None:
                try:
                    cuda.stream_destroy(self._stream)
                except Exception as err:
                    errors.append(str(err))
        self._buffers = {}
        self._stream = None
        self._context = None
        self._engine = None
        self._runtime = None
        if cuda is not None:
            try:
                cuda.close()
            except Exception as err:
                errors.append(str(err))
        self._cuda = None
        if errors:
            raise RunnerError(f"freeing TensorRT runner resources failed: {'; '.join(errors)}")

    # -- contract --------------------------------------------------------------------------

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))

    def _input_specs_impl(self) -> list[TensorSpec]:
        specs = []
        for name in self._inputs:
            shape = tuple(int(d) if int(d) >= 0 else None for d in self._engine.get_tensor_shape(name))
            specs.append(TensorSpec(name, shape, self._dtype(name).name))
        return specs

    def _buffer(self, name: str, nbytes: int) -> _Buffer:
        """The pinned host + device buffer pair for a tensor, grown to at least ``nbytes``."""
        current = self._buffers.get(name)
        if current is not None and current.capacity >= nbytes:
            return current
        if current is not None:
            self._cuda.device_free(current.device_handle)
            self._cuda.host_free(current.host_handle)
            del self._buffers[name]
        size = max(nbytes, 1)
        host, host_handle = self._cuda.host_alloc(size)
        try:
            device_ptr, device_handle = self._cuda.device_alloc(size)
        except BaseException:
            self._cuda.host_free(host_handle)
            raise
        buffer = _Buffer(host, host_handle, device_ptr, device_handle, size)
        self._buffers[name] = buffer
        return buffer

    def _prepare(self, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
        """Set input shapes, stage inputs in pinned memory, size outputs, bind every address."""
        layout: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
        for name in self._inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self._dtype(name))
            if not self._context.set_input_shape(name, tuple(array.shape)):
                raise RunnerError(
                    f"tensorrt: input {name} shape {array.shape} is outside the engine's optimization profile"
                )
            buffer = self._buffer(name, array.nbytes)
            buffer.host[: array.nbytes] = array.reshape(-1).view(np.uint8)
            layout[name] = (tuple(array.shape), array.dtype, array.nbytes)
        for name in self._outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RunnerError(f"tensorrt: output {name} shape {shape} is not known after setting the inputs")
            dtype = self._dtype(name)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            self._buffer(name, nbytes)
            layout[name] = (shape, dtype, nbytes)
        for name in (*self._inputs, *self._outputs):
            if not self._context.set_tensor_address(name, self._buffers[name].device_ptr):
                raise RunnerError(f"tensorrt: cannot bind tensor {name}")
        return layout

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._cuda.stream_handle(self._stream)):
            raise RunnerError("tensorrt: execute_async_v3 failed (see the TensorRT log above)")

    def _copy_in(self, layout: Mapping[str, tuple[tuple[int, ...], np.dtype, int]]) -> None:
        for name in self._inputs:
            buffer = self._buffers[name]
            self._cuda.copy_h2d(buffer.device_ptr, buffer.host, layout[name][2], self._stream)

    def _copy_out(self, layout: Mapping[str, tuple[tuple[int, ...], np.dtype, int]]) -> None:
        for name in self._outputs:
            buffer = self._buffers[name]
            self._cuda.copy_d2h(buffer.host, buffer.device_ptr, layout[name][2], self._stream)

    def _collect(self, layout: Mapping[str, tuple[tuple[int, ...], np.dtype, int]]) -> dict[str, np.ndarray]:
        outputs = {}
        for name in self._outputs:
            shape, dtype, nbytes = layout[name]
            # Copy out of the pinned buffer: the next infer() overwrites it.
            outputs[name] = self._buffers[name].host[:nbytes].view(dtype).reshape(shape).copy()
        return outputs

    def _infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        layout = self._prepare(feeds)
        self._copy_in(layout)
        self._enqueue()
        self._copy_out(layout)
        self._cuda.stream_sync(self._stream)
        return self._collect(layout)

    # -- GPU timing ------------------------------------------------------------------------

    def time_gpu_ms(self, feeds: Mapping[str, np.ndarray]) -> GpuTiming:
        """Run one inference and time it with CUDA events beside the host clock.

        Events are recorded on the runner's own stream, so other work on the GPU is not counted,
        but anything else queued on this stream would be. Staging inputs into pinned memory is
        outside all three clocks, as it is for :meth:`infer`'s callers who time with the host.

        Raises:
            RunnerError: not active, bad inputs, or a CUDA/TensorRT failure.
        """
        self._require_active()
        check_inputs(feeds, self._input_specs_impl(), self.name)
        layout = self._prepare(feeds)
        cuda = self._cuda
        events = [cuda.event_create() for _ in range(4)]
        try:
            start_total, start_compute, end_compute, end_total = events
            host_start = time.perf_counter_ns()
            cuda.event_record(start_total, self._stream)
            self._copy_in(layout)
            cuda.event_record(start_compute, self._stream)
            self._enqueue()
            cuda.event_record(end_compute, self._stream)
            self._copy_out(layout)
            cuda.event_record(end_total, self._stream)
            cuda.stream_sync(self._stream)
            host_ms = (time.perf_counter_ns() - host_start) / 1e6
            return GpuTiming(
                gpu_compute_ms=cuda.event_elapsed_ms(start_compute, end_compute),
                gpu_total_ms=cuda.event_elapsed_ms(start_total, end_total),
                host_ms=host_ms,
            )
        finally:
            for event in events:
                cuda.event_destroy(event)
