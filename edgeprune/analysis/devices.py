"""Device table: peak arithmetic throughput per precision and memory bandwidth, each figure sourced.

The roofline estimate (:mod:`edgeprune.analysis.speedup`) prices every layer at
``max(FLOP / peak FLOP/s, bytes / bandwidth)``, so it is only as honest as these figures. Every
figure here carries where it came from:

* *data sheet*: the number NVIDIA prints in the module's data sheet or product page;
* *derived*: computed from data-sheet unit counts and clocks (the arithmetic is given), used where
  NVIDIA prints only a whole-module "AI TOPS" figure that includes the DLAs, which TensorRT does
  not use for a GPU engine;
* *measured*: the host CPU's figures, which a small calibration run on this machine measures
  (:func:`calibrate_host`), cached per machine.

All Jetson figures are for the module's maximum power mode with the GPU at its maximum clock;
lower nvpmodel modes scale them down. Memory bandwidth is the theoretical peak of the bus
(width x transfer rate); kernels typically achieve 60-80% of it, which is one more reason the
roofline is an upper bound on speed, labelled as an estimate wherever it is shown.

Sparse (2:4) tensor-core peaks are exactly twice the dense ones on Ampere (Orin); earlier
architectures have no sparse tensor cores. No device here has a kernel for unstructured sparsity.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from edgeprune.errors import UsageError

HOST_CPU = "host-cpu"
CALIBRATION_VERSION = 1

# Sources, cited once and referred to by key in each figure.
SOURCES: dict[str, str] = {
    "nano-ds": "NVIDIA Jetson Nano System-on-Module data sheet (128-core Maxwell GPU, 921.6 MHz max; "
    "4 GB 64-bit LPDDR4, 25.6 GB/s); NVIDIA Jetson Nano product page: 472 GFLOPS (FP16)",
    "tx2-ds": "NVIDIA Jetson TX2 System-on-Module data sheet (256-core Pascal GPU, 1.3 GHz max; "
    "8 GB 128-bit LPDDR4, 59.7 GB/s); NVIDIA Jetson modules page: 1.33 TFLOPS (FP16)",
    "xnx-ds": "NVIDIA Jetson Xavier NX System-on-Module data sheet DA-09366-001 (384 CUDA cores, "
    "48 tensor cores, 1100 MHz max; 8 GB 128-bit LPDDR4x at 1600 MHz = 51.2 GB/s; "
    "module total 21 TOPS INT8 including 2 DLAs)",
    "agx-xavier-ds": "NVIDIA Jetson AGX Xavier System-on-Module data sheet (512 CUDA cores, 64 tensor cores, "
    "1377 MHz max; 32 GB 256-bit LPDDR4x, 136.5 GB/s; module total 32 TOPS INT8 including "
    "2 DLAs; GPU 11 TFLOPS FP16)",
    "orin-nano-ds": "NVIDIA Jetson Orin Nano Series data sheet (8 GB: 1024 CUDA cores, 32 tensor cores, "
    "625 MHz max; 'up to 40 (sparse) INT8 TOPS and 20 (dense)'; 128-bit LPDDR5, 68 GB/s)",
    "orin-nano-super": "NVIDIA Technical Blog 'NVIDIA Jetson Orin Nano Developer Kit Gets a Super Boost' "
    "(Dec 2024) and the Orin Nano Super developer kit data sheet: JetPack 6.1+ MAXN SUPER "
    "raises the GPU to 1020 MHz, 67 sparse INT8 TOPS, memory to 102 GB/s",
    "orin-nx-ds": "NVIDIA Jetson Orin NX Series data sheet (16 GB: 1024 CUDA cores, 32 tensor cores, "
    "918 MHz max; module total 100 sparse INT8 TOPS including 2 DLAs; 128-bit LPDDR5, "
    "102.4 GB/s)",
    "agx-orin-brief": "NVIDIA Jetson AGX Orin Series Technical Brief v1.2 (GPU: 2048 CUDA cores, 64 tensor "
    "cores, 1.3 GHz; 5.3 FP32 TFLOPS; 170 sparse INT8 TOPS on the GPU, up to 105 more on "
    "the DLAs, 275 in all) and AGX Orin data sheet (64 GB 256-bit LPDDR5, 204.8 GB/s)",
    "ampere-sparse": "NVIDIA A100 Tensor Core GPU Architecture whitepaper and Mishra et al. 2021 "
    "(arXiv 2104.08378): 2:4 sparse tensor cores double dense FP16/INT8 math throughput",
    "volta-tc": "NVIDIA Tesla V100 GPU Architecture whitepaper: one Volta tensor core does 64 FP16 FMA "
    "(128 FLOP) per clock; Xavier's Volta tensor cores add INT8 at twice the FP16 rate",
    "ampere-tc": "derived from the AGX Orin Technical Brief: 170 sparse INT8 TOPS / 2 / (16 SM x 1.3 GHz) = "
    "4096 dense INT8 ops per clock per SM (4 third-generation tensor cores per SM); FP16 at half the INT8 "
    "rate, as on A100 (NVIDIA A100 whitepaper)",
    "no-int8": "Maxwell (sm_53) has no INT8 dot-product instructions; on Nano and TX2 (sm_62) TensorRT "
    "reports no fast INT8 (platformHasFastInt8 false, per NVIDIA developer-forum answers), so no INT8 peak",
    "host-measured": "measured on this machine by edgeprune.analysis.devices.calibrate_host: best of "
    "several float32 GEMMs (numpy) for FLOP/s, best of several large array copies "
    "(read + write bytes) for bandwidth",
}


@dataclass(frozen=True)
class Figure:
    """One device figure with its provenance.

    Attributes:
        value: the figure in base units (operations/s or bytes/s), or None where the device has
            no such capability (e.g. INT8 on a Jetson Nano).
        source: key into :data:`SOURCES`.
        how: "data sheet", "derived: <arithmetic>", or "measured".
    """

    value: float | None
    source: str
    how: str = "data sheet"


@dataclass(frozen=True)
class DeviceSpec:
    """Peak figures of one target.

    Attributes:
        name: table key, e.g. ``jetson-agx-orin``.
        label: human name.
        kind: ``gpu`` or ``cpu``.
        arch: GPU architecture (maxwell, pascal, volta, ampere) or ``cpu``.
        runtime: what runs models there (TensorRT on Jetsons, ONNX Runtime on the host CPU).
        default_precision: what a model is usually deployed in on this target.
        peak_ops_per_s: dense peak per precision (fp32, fp16, int8); FLOP/s or OP/s.
        sparse_ops_per_s: 2:4 sparse peak per precision where sparse tensor cores exist.
        memory_bytes_per_s: DRAM bandwidth.
        sparse_2_4_kernels: a kernel exploiting 2:4 exists (Ampere and newer, via TensorRT).
        unstructured_sparse_kernels: a kernel exploiting unstructured sparsity exists.
        notes: caveats shown with the table.
    """

    name: str
    label: str
    kind: str
    arch: str
    runtime: str
    default_precision: str
    peak_ops_per_s: dict[str, Figure]
    memory_bytes_per_s: Figure
    sparse_ops_per_s: dict[str, Figure] = field(default_factory=dict)
    sparse_2_4_kernels: bool = False
    unstructured_sparse_kernels: bool = False
    notes: tuple[str, ...] = ()

    def peak(self, precision: str, sparse: bool = False) -> float | None:
        """Peak ops/s at ``precision``; the 2:4 sparse peak when ``sparse`` and it exists."""
        table = self.sparse_ops_per_s if sparse else self.peak_ops_per_s
        figure = table.get(precision)
        return None if figure is None else figure.value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with each figure's source spelled out."""
        data = asdict(self)
        for key in ("peak_ops_per_s", "sparse_ops_per_s"):
            for figure in data[key].values():
                figure["source_text"] = SOURCES.get(figure["source"], figure["source"])
        data["memory_bytes_per_s"]["source_text"] = SOURCES.get(self.memory_bytes_per_s.source, "")
        return data


def _tc(units: int, ops_per_clock: int, clock_hz: float) -> float:
    return units * ops_per_clock * clock_hz


def _ampere(sms: int, clock_hz: float, source: str) -> tuple[dict[str, Figure], dict[str, Figure]]:
    """Dense and 2:4-sparse tensor-core peaks of an Orin GPU from its SM count and clock."""
    int8 = _tc(sms, 4096, clock_hz)
    how_int8 = f"derived: {sms} SM x 4096 INT8 ops/clock x {clock_hz / 1e6:.0f} MHz"
    how_fp16 = f"derived: {sms} SM x 2048 FP16 FLOP/clock x {clock_hz / 1e6:.0f} MHz"
    dense = {
        "fp32": Figure(
            sms * 128 * 2 * clock_hz, source, f"derived: {sms * 128} CUDA cores x 2 x {clock_hz / 1e6:.0f} MHz"
        ),
        "fp16": Figure(int8 / 2, "ampere-tc", how_fp16),
        "int8": Figure(int8, "ampere-tc", how_int8),
    }
    sparse = {
        "fp16": Figure(int8, "ampere-sparse", "derived: 2 x dense FP16"),
        "int8": Figure(2 * int8, "ampere-sparse", "derived: 2 x dense INT8"),
    }
    return dense, sparse


def _volta(tensor_cores: int, cuda_cores: int, clock_hz: float, source: str) -> dict[str, Figure]:
    fp16 = _tc(tensor_cores, 128, clock_hz)
    mhz = clock_hz / 1e6
    return {
        "fp32": Figure(cuda_cores * 2 * clock_hz, source, f"derived: {cuda_cores} CUDA cores x 2 x {mhz:.0f} MHz"),
        "fp16": Figure(fp16, "volta-tc", f"derived: {tensor_cores} tensor cores x 128 FLOP/clock x {mhz:.0f} MHz"),
        "int8": Figure(2 * fp16, "volta-tc", "derived: 2 x tensor-core FP16"),
    }


_ORIN_NANO = _ampere(8, 625e6, "orin-nano-ds")
_ORIN_NANO_SUPER = _ampere(8, 1020e6, "orin-nano-super")
_ORIN_NX = _ampere(8, 918e6, "orin-nx-ds")
_AGX_ORIN = _ampere(16, 1.3e9, "agx-orin-brief")
_ORIN_NOTE = "module 'AI TOPS' include the DLAs; TensorRT GPU engines use the GPU figures here"

DEVICES: dict[str, DeviceSpec] = {
    "jetson-nano": DeviceSpec(
        "jetson-nano",
        "Jetson Nano (4 GB)",
        "gpu",
        "maxwell",
        "TensorRT",
        "fp16",
        {
            "fp32": Figure(236e9, "nano-ds", "derived: 128 cores x 2 x 921.6 MHz"),
            "fp16": Figure(472e9, "nano-ds"),
            "int8": Figure(None, "no-int8", "not supported"),
        },
        Figure(25.6e9, "nano-ds"),
    ),
    "jetson-tx2": DeviceSpec(
        "jetson-tx2",
        "Jetson TX2 (8 GB)",
        "gpu",
        "pascal",
        "TensorRT",
        "fp16",
        {
            "fp32": Figure(665.6e9, "tx2-ds", "derived: 256 cores x 2 x 1.3 GHz"),
            "fp16": Figure(1.33e12, "tx2-ds"),
            "int8": Figure(None, "no-int8", "not supported"),
        },
        Figure(59.7e9, "tx2-ds"),
    ),
    "jetson-xavier-nx": DeviceSpec(
        "jetson-xavier-nx",
        "Jetson Xavier NX (8 GB)",
        "gpu",
        "volta",
        "TensorRT",
        "fp16",
        _volta(48, 384, 1.1e9, "xnx-ds"),
        Figure(51.2e9, "xnx-ds"),
        notes=("module 21 TOPS includes the 2 DLAs; GPU figures derived from tensor cores x clock",),
    ),
    "jetson-agx-xavier": DeviceSpec(
        "jetson-agx-xavier",
        "Jetson AGX Xavier (32 GB)",
        "gpu",
        "volta",
        "TensorRT",
        "fp16",
        _volta(64, 512, 1.377e9, "agx-xavier-ds"),
        Figure(136.5e9, "agx-xavier-ds"),
        notes=("module 32 TOPS includes the 2 DLAs; GPU figures derived from tensor cores x clock",),
    ),
    "jetson-orin-nano": DeviceSpec(
        "jetson-orin-nano",
        "Jetson Orin Nano (8 GB, 15 W)",
        "gpu",
        "ampere",
        "TensorRT",
        "fp16",
        _ORIN_NANO[0],
        Figure(68e9, "orin-nano-ds"),
        _ORIN_NANO[1],
        sparse_2_4_kernels=True,
        notes=("derived GPU INT8 = 20.5 dense / 41 sparse TOPS, matching the data sheet's 20 / 40",),
    ),
    "jetson-orin-nano-super": DeviceSpec(
        "jetson-orin-nano-super",
        "Jetson Orin Nano Super (8 GB, MAXN SUPER)",
        "gpu",
        "ampere",
        "TensorRT",
        "fp16",
        _ORIN_NANO_SUPER[0],
        Figure(102e9, "orin-nano-super"),
        _ORIN_NANO_SUPER[1],
        sparse_2_4_kernels=True,
        notes=("derived GPU INT8 = 33.4 dense / 66.8 sparse TOPS, matching NVIDIA's 67 sparse TOPS",),
    ),
    "jetson-orin-nx": DeviceSpec(
        "jetson-orin-nx",
        "Jetson Orin NX (16 GB)",
        "gpu",
        "ampere",
        "TensorRT",
        "fp16",
        _ORIN_NX[0],
        Figure(102.4e9, "orin-nx-ds"),
        _ORIN_NX[1],
        sparse_2_4_kernels=True,
        notes=(_ORIN_NOTE + " (GPU 60 sparse TOPS + DLAs 40 = the data sheet's 100)",),
    ),
    "jetson-agx-orin": DeviceSpec(
        "jetson-agx-orin",
        "Jetson AGX Orin (64 GB)",
        "gpu",
        "ampere",
        "TensorRT",
        "fp16",
        {**_AGX_ORIN[0], "fp32": Figure(5.3e12, "agx-orin-brief")},
        Figure(204.8e9, "agx-orin-brief"),
        _AGX_ORIN[1],
        sparse_2_4_kernels=True,
        notes=(_ORIN_NOTE + " (GPU 170 sparse TOPS + DLAs 105 = 275)",),
    ),
}


# --- the host CPU: measured, cached ---------------------------------------------------------------------


def cache_dir() -> Path:
    """``$EDGEPRUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgeprune``, else ``~/.cache/edgeprune``."""
    if env := os.environ.get("EDGEPRUNE_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeprune"


def _machine_key() -> dict[str, Any]:
    import numpy as np

    from edgeprune.device.provenance import cpu_model

    return {
        "cpu_model": cpu_model() or platform.processor(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "version": CALIBRATION_VERSION,
    }


def measure_gemm_flop_per_s(size: int = 1024, repeats: int = 5) -> float:
    """Best float32 GEMM rate of numpy's BLAS over ``repeats`` runs, in FLOP/s.

    The best run, not the mean: on a shared machine the best is the closest to what the silicon
    can do, which is what a peak figure means.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def measure_copy_bytes_per_s(mib: int = 128, repeats: int = 5) -> float:
    """Best large-array copy rate, counting the bytes read plus the bytes written, in bytes/s.

    The arrays are far larger than any last-level cache, so the copy streams through DRAM.
    """
    import numpy as np

    count = mib * (1 << 20) // 8
    src = np.ones(count, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # warm-up: fault the pages in
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2.0 * src.nbytes / best


def calibrate_host(refresh: bool = False, cache: bool = True) -> DeviceSpec:
    """The host CPU's entry, from a calibration run (about a second), cached per machine.

    Only fp32 is measured: ONNX Runtime's CPU kernels run the bundles in fp32, so fp16 and int8
    peaks are left out (None) rather than guessed.

    Args:
        refresh: measure again even if a cached result for this machine exists.
        cache: read and write the cache file (``cache_dir()/host-cpu-calibration.json``).
    """
    key = _machine_key()
    path = cache_dir() / "host-cpu-calibration.json"
    data: dict[str, Any] | None = None
    if cache and not refresh and path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                data = stored
        except (OSError, ValueError):
            data = None
    if data is None:
        data = {
            "key": key,
            "measured_on": date.today().isoformat(),
            "gemm_flop_per_s": measure_gemm_flop_per_s(),
            "copy_bytes_per_s": measure_copy_bytes_per_s(),
        }
        if cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(data, indent=1) + "\n")
            except OSError:
                pass  # a read-only home still gets a (re-measured) figure
    how = f"measured {data['measured_on']} on {key['cpu_model']} ({key['cpu_count']} CPUs)"
    return DeviceSpec(
        HOST_CPU,
        f"host CPU ({key['cpu_model']})",
        "cpu",
        "cpu",
        "ONNX Runtime (CPU)",
        "fp32",
        {
            "fp32": Figure(float(data["gemm_flop_per_s"]), "host-measured", how),
            "fp16": Figure(None, "host-measured", "not measured: ONNX Runtime CPU runs fp32"),
            "int8": Figure(None, "host-measured", "not measured"),
        },
        Figure(float(data["copy_bytes_per_s"]), "host-measured", how),
        notes=("a shared machine measures below its peak; figures are best-of-N",),
    )


def device_names() -> list[str]:
    """Every name :func:`get_device` accepts."""
    return [HOST_CPU, *DEVICES]


def get_device(name: str | DeviceSpec | None = None) -> DeviceSpec:
    """Look a device up by name; ``None`` or ``host-cpu`` is the calibrated host CPU.

    Raises:
        UsageError: unknown name (the message lists the known ones).
    """
    if isinstance(name, DeviceSpec):
        return name
    if name is None or name == HOST_CPU:
        return calibrate_host()
    key = name.lower().replace("_", "-")
    if key in DEVICES:
        return DEVICES[key]
    if f"jetson-{key}" in DEVICES:
        return DEVICES[f"jetson-{key}"]
    raise UsageError(f"unknown device '{name}': choose one of {', '.join(device_names())}")


def device_table() -> list[dict[str, Any]]:
    """Every Jetson entry as rows for a table or JSON (the host CPU is calibrated on demand)."""
    return [spec.to_dict() for spec in DEVICES.values()]
