"""Shared bits of the benchmark scripts: where results go, and a machine line for each table."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine_line() -> str:
    """One line naming the machine a figure was taken on."""
    from edgeprune.device.provenance import cpu_model

    return (
        f"{cpu_model() or platform.processor()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def today() -> str:
    return datetime.date.today().isoformat()


def write_result(name: str, text: str) -> Path:
    """Write a markdown result file under benchmarks/results/ and echo it."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(text)
    print(text)
    return path
