"""Power of a discrete NVIDIA GPU through NVML (``pynvml``, from ``nvidia-ml-py``).

``pynvml`` is imported only when the source is opened, and a module object can be passed in
instead so the source is tested without a GPU. NVML reports board power in mW
(``nvmlDeviceGetPowerUsage``) and, on Volta and newer, a cumulative energy counter in mJ
(``nvmlDeviceGetTotalEnergyConsumption``). It covers the GPU board only: the CPU, memory and the
rest of the host are not included.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from edgeprune.errors import SensorUnavailable, missing

NVML_RATE_HZ = 10.0
"""The rate this source is polled at. NVML refreshes power every 20-100 ms on most boards, and on
recent data-centre GPUs ``nvmlDeviceGetPowerUsage`` is itself a one-second average: prefer the
energy counter (:meth:`NvmlSource.read_energy_mj`) for short windows there."""


class NvmlSource:
    """Board power of one NVIDIA GPU.

    ``read_mw`` returns ``{"gpu<index>": mW, "total": mW}``: "total" is the GPU board, the only
    thing NVML can see.
    """

    scope = "GPU board power as reported by NVML; CPU, memory and the rest of the host not included"
    rate_hz = NVML_RATE_HZ

    def __init__(self, index: int = 0, *, nvml: ModuleType | Any | None = None) -> None:
        """Create the source; nothing is loaded until :meth:`open` or the first reading.

        Args:
            index: the NVML device index.
            nvml: a module with pynvml's API, for tests; None to import ``pynvml``.
        """
        self.index = index
        self.name = f"nvml:gpu{index}"
        self._nvml = nvml
        self._handle: Any | None = None
        self.device_name: str | None = None

    def open(self) -> None:
        """Initialise NVML and find the device.

        Raises:
            MissingDependencyError: nvidia-ml-py is not installed.
            SensorUnavailable: no driver, no such device, or power readings not supported.
        """
        if self._handle is not None:
            return
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                raise missing("pynvml", "nvml") from exc
            self._nvml = pynvml
        nvml = self._nvml
        error: type[BaseException] = getattr(nvml, "NVMLError", Exception)
        try:
            nvml.nvmlInit()
            count = int(nvml.nvmlDeviceGetCount())
            if self.index >= count:
                nvml.nvmlShutdown()
                raise SensorUnavailable(f"NVML sees {count} GPU(s); there is no GPU {self.index}")
            handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
            name = nvml.nvmlDeviceGetName(handle)
            nvml.nvmlDeviceGetPowerUsage(handle)
        except error as exc:
            raise SensorUnavailable(f"NVML cannot read GPU {self.index} power: {exc}") from exc
        self.device_name = name.decode() if isinstance(name, bytes) else str(name)
        self._handle = handle

    def rails(self) -> list[str]:
        """The single rail this source reports."""
        return [f"gpu{self.index}"]

    def total_rails(self) -> list[str]:
        """``"total"`` is the GPU board rail."""
        return self.rails()

    def read_mw(self) -> dict[str, float]:
        """GPU board power in mW."""
        self.open()
        assert self._nvml is not None
        power_mw = float(self._nvml.nvmlDeviceGetPowerUsage(self._handle))
        return {f"gpu{self.index}": power_mw, "total": power_mw}

    def read_energy_mj(self) -> float | None:
        """The GPU's cumulative energy counter in mJ, or None where the GPU has none (pre-Volta).

        Differences of this counter over a window give its energy without sampling error.
        """
        self.open()
        assert self._nvml is not None
        error: type[BaseException] = getattr(self._nvml, "NVMLError", Exception)
        try:
            return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except (error, AttributeError):
            return None

    def close(self) -> None:
        """Shut NVML down if this source initialised it."""
        if self._handle is not None and self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._handle = None
