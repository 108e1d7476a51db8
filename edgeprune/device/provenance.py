"""What machine and software produced a measurement, recorded beside every result.

Only facts that can be read are recorded; anything unreadable is ``None``. Jetson-specific
provenance (L4T, nvpmodel, jetson_clocks) is read from files under ``root`` so tests can point it
at a fake tree.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("edgeprune", "numpy", "onnxruntime", "onnx", "torch", "tensorrt", "cuda-python")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions of the libraries that change numbers; ``None`` for those absent."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def cpu_model(root: Path = Path("/")) -> str | None:
    """The CPU model name from /proc/cpuinfo (x86 'model name', or the Arm 'Hardware' line)."""
    text = _read(root / "proc/cpuinfo")
    if not text:
        return platform.processor() or None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Model"):
            return value.strip()
    return None


def cpu_governor(root: Path = Path("/")) -> str | None:
    """The scaling governor of cpu0 (performance, schedutil, ...), which changes latency."""
    return _read(root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def jetson_release(root: Path = Path("/")) -> str | None:
    """The L4T release line from /etc/nv_tegra_release, present on every Jetson."""
    text = _read(root / "etc/nv_tegra_release")
    return text.splitlines()[0] if text else None


def device_model(root: Path = Path("/")) -> str | None:
    """The board name from the device tree (Jetson) or DMI (x86)."""
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model", "sys/class/dmi/id/product_name"):
        text = _read(root / rel)
        if text:
            return text.replace("\x00", "").strip()
    return None


def collect(root: Path = Path("/")) -> dict[str, Any]:
    """Provenance for a result record."""
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "device_model": device_model(root),
        "cpu_model": cpu_model(root),
        "cpu_count": os.cpu_count(),
        "cpu_governor": cpu_governor(root),
        "l4t_release": jetson_release(root),
        "python": sys.version.split()[0],
        "libraries": library_versions(),
    }
