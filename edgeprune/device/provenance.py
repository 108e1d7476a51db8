"""What machine and software produced a measurement, recorded beside every result.

Only facts that can be read are recorded; anything unreadable is ``None``. Jetson-specific
provenance (L4T, nvpmodel, jetson_clocks) is read from files under ``root`` so tests can point it
at a fake tree.

On a Jetson the record also carries the state that changes its numbers: the nvpmodel power mode,
whether clocks are locked at their maximum (what ``jetson_clocks`` does), and on every machine the
temperatures and any sign of thermal throttling at the time of the run.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeprune.device.sensors import jetson as jetson_sensors

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
        "thermal": thermal(root),
        "jetson": jetson(root),
    }


# L4T release -> JetPack, for boards without the nvidia-jetpack package installed. Only pairs NVIDIA
# published; the result is labelled "inferred from L4T" wherever it is used.
L4T_TO_JETPACK = {
    "32.6.1": "4.6",
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "38.2": "7.0",
    "39.2": "7.2",
}


def l4t_version(root: Path = Path("/")) -> str | None:
    """The L4T version as ``36.4.3`` from ``# R36 (release), REVISION: 4.3, ...``."""
    line = jetson_release(root)
    if not line:
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", line)
    return f"{match.group(1)}.{match.group(2).rstrip('.')}" if match else None


def jetpack_version(root: Path = Path("/")) -> tuple[str | None, str | None]:
    """The JetPack version and where it came from.

    The ``nvidia-jetpack`` package version in dpkg's status file is authoritative; without it the
    version is looked up from the L4T release (published pairs only) and labelled as inferred.

    Returns:
        ``(version, source)``, or ``(None, None)`` when neither is known.
    """
    status = _read(root / "var/lib/dpkg/status")
    if status:
        for block in status.split("\n\n"):
            if re.search(r"^Package: nvidia-jetpack$", block, re.MULTILINE):
                match = re.search(r"^Version: (\S+)$", block, re.MULTILINE)
                if match:
                    return re.split(r"[-+]", match.group(1))[0], "dpkg nvidia-jetpack"
    l4t = l4t_version(root)
    if l4t:
        for key in (l4t, ".".join(l4t.split(".")[:2])):
            if key in L4T_TO_JETPACK:
                return L4T_TO_JETPACK[key], f"inferred from L4T {l4t}"
    return None, None


def is_jetson(root: Path = Path("/")) -> bool:
    """True on an NVIDIA Jetson (or a fake tree that looks like one)."""
    if (root / "etc/nv_tegra_release").exists():
        return True
    compatible = _read(root / "proc/device-tree/compatible") or ""
    return "nvidia,tegra" in compatible


def thermal(root: Path = Path("/")) -> dict[str, Any]:
    """Temperatures (C) of every readable thermal zone, and what is known about throttling."""
    zones = jetson_sensors.read_thermal_zones(root)
    throttle = jetson_sensors.read_throttling(root, zones)
    return {"temperatures_c": jetson_sensors.temperatures_c(zones), "throttling": throttle.to_dict()}


def jetson(root: Path = Path("/")) -> dict[str, Any] | None:
    """Jetson provenance: board, L4T, JetPack, nvpmodel mode, clock locking; None elsewhere.

    The power mode is read from nvpmodel's state files (no root needed); only when they are
    missing on the live system is ``nvpmodel -q`` run. Clock locking is read from sysfs, because
    ``jetson_clocks --show`` needs root.
    """
    if not is_jetson(root):
        return None
    nvp = jetson_sensors.nvpmodel_from_root(root)
    if (nvp is None or nvp.name is None) and root == Path("/") and shutil.which("nvpmodel"):
        text = jetson_sensors.run_tool(["nvpmodel", "-q"])
        queried = jetson_sensors.parse_nvpmodel(text) if text else None
        if queried is not None and queried.name is not None:
            nvp = queried
    clocks = jetson_sensors.read_clocks(root)
    jetpack, jetpack_source = jetpack_version(root)
    return {
        "board": device_model(root),
        "l4t": l4t_version(root),
        "jetpack": jetpack,
        "jetpack_source": jetpack_source,
        "nvpmodel": nvp.to_dict() if nvp else None,
        "jetson_clocks": clocks.to_dict() if clocks else None,
    }
