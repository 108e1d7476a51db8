"""The optional TensorRT and CUDA imports, and the GPU facts a build and a runner need.

``tensorrt`` and ``cuda`` (cuda-python) are imported only inside these functions; without them a
call raises :class:`~edgeprune.errors.MissingDependencyError` naming the ``trt`` extra.
"""

from __future__ import annotations

from typing import Any

from edgeprune.errors import MissingDependencyError, RunnerError, UsageError, missing

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
