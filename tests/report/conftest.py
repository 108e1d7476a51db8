"""Synthetic but schema-valid result records, and one report rendered once for the whole session.

The latency figures go through the real :func:`edgeprune.device.measure.summarize`, so they have
exactly the keys and types ``edgeprune bench`` writes; only the samples are made up (normal noise
around a chosen p50, seeded).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeprune.device.measure.timing import summarize

BATCHES = (1, 32)
BASE_MS = {1: 2.0, 32: 30.0}
# name -> (pattern, precision, latency factor vs baseline, MAC factor, params factor, accuracy)
VARIANTS = {
    "net-ch50": ("channel", "fp32", 0.6, 0.5, 0.5, 0.981),
    "net-2of4": ("2:4", "fp16", 0.8, 0.5, 1.0, 0.984),
    "net-int8": ("dense", "int8", 0.5, 1.0, 1.0, 0.979),
}
DENSE_MACS = 40e6
DENSE_PARAMS = 1.2e6


def samples(p50_ms: float, seed: int, n: int = 120, rel_noise: float = 0.01) -> list[float]:
    """``n`` latency samples around ``p50_ms`` with about ``rel_noise`` relative spread."""
    rng = np.random.default_rng(seed)
    return list(p50_ms * (1.0 + rel_noise * rng.standard_normal(n)))


def stats(p50_ms: float, batch: int, seed: int) -> dict[str, Any]:
    return summarize(samples(p50_ms, seed), batch).to_dict()


def make_record(slow: Mapping[str, float] | None = None, extras: bool = True, seed: int = 0) -> dict[str, Any]:
    """A record of a baseline and three variants at batch sizes 1 and 32.

    Args:
        slow: variant name -> factor applied to its samples (1.5 = 50% slower).
        extras: include the optional parts (layer profile, sensitivity, power samples, extra
            theoretical estimates, a demo key); without them the record looks like a plain CPU run.
        seed: base seed of the synthetic samples.
    """
    slow = dict(slow or {})
    baseline_latency = {str(b): stats(BASE_MS[b], b, seed + b) for b in BATCHES}
    baseline = {
        "name": "net-dense",
        "bundle": "bundles/net-dense",
        "is_baseline": True,
        "precision": "fp32",
        "pattern": "dense",
        "accuracy": 0.985,
        "cost": {
            "macs": DENSE_MACS,
            "params": DENSE_PARAMS,
            "weight_bytes": DENSE_PARAMS * 4,
            "dense_macs": DENSE_MACS,
            "effective_macs": DENSE_MACS,
            "theoretical_speedup": 1.0,
        },
        "reference_check": {"max_abs_diff": 1e-6, "atol": 1e-4, "passed": True},
        "latency": baseline_latency,
        "comparison": None,
    }
    variants = [baseline]
    for i, (name, (pattern, precision, lat, mac, par, acc)) in enumerate(VARIANTS.items()):
        factor = slow.get(name, 1.0)
        latency = {}
        for b in BATCHES:
            # The 1.5x slowdown applies to the samples themselves, as the issue asks.
            raw = [x * factor for x in samples(BASE_MS[b] * lat, seed + 100 * (i + 1) + b)]
            latency[str(b)] = summarize(raw, b).to_dict()
        base_pair = {str(b): stats(BASE_MS[b], b, seed + 1000 * (i + 1) + b) for b in BATCHES}
        theoretical = 1.0 / mac if pattern != "dense" else 1.0
        cost: dict[str, Any] = {
            "macs": DENSE_MACS * (mac if pattern == "channel" else 1.0),
            "params": DENSE_PARAMS * par,
            "weight_bytes": DENSE_PARAMS * par * (1 if precision == "int8" else 2 if precision == "fp16" else 4),
            "dense_macs": DENSE_MACS,
            "effective_macs": DENSE_MACS * mac,
            "theoretical_speedup": theoretical,
        }
        if extras:
            cost["theoretical"] = {
                "mac_ratio": theoretical,
                "kernel_aware": theoretical * 0.8,
                "roofline": theoretical * 0.7,
            }
        per_batch = {}
        for b in BATCHES:
            measured = base_pair[str(b)]["p50_ms"] / latency[str(b)]["p50_ms"]
            per_batch[str(b)] = {
                "measured_speedup": measured,
                "theoretical_speedup": theoretical,
                "measured_over_theoretical": measured / theoretical,
            }
        variant: dict[str, Any] = {
            "name": name,
            "bundle": f"bundles/{name}",
            "is_baseline": False,
            "precision": precision,
            "pattern": pattern,
            "accuracy": acc,
            "cost": cost,
            "reference_check": {"max_abs_diff": 2e-5, "atol": 1e-3, "passed": True},
            "latency": latency,
            "baseline_latency": base_pair,
            "comparison": {
                "per_batch": per_batch,
                "theoretical_label": "MAC ratio (dense MACs / effective MACs), estimate",
            },
        }
        if extras and name == "net-ch50":
            variant["layers"] = [
                {"name": f"conv{k}", "time_share": share, "theoretical_speedup": 2.0, "measured_speedup": ms}
                for k, (share, ms) in enumerate([(0.4, 1.6), (0.3, 1.9), (0.2, 1.2), (0.1, 1.0)])
            ]
        if extras:
            variant["sensitivity"] = [
                {
                    "layer": f"conv{k}",
                    "sparsity": [0.0, 0.25, 0.5, 0.75],
                    "accuracy": [0.985, 0.985 - 0.002 * k, 0.98 - 0.01 * k, 0.9 - 0.05 * k],
                }
                for k in range(4)
            ]
        variants.append(variant)
    record: dict[str, Any] = {
        "schema_version": 1,
        "kind": "edgeprune.result",
        "created_unix_s": 1_700_000_000.0,
        "provenance": {
            "hostname": "testhost",
            "os": "Linux 6.1",
            "machine": "aarch64",
            "device_model": "NVIDIA Jetson Orin Nano Developer Kit",
            "cpu_model": "ARMv8 Processor",
            "cpu_count": 6,
            "cpu_governor": "schedutil",
            "l4t_release": "# R36 (release), REVISION: 4.0",
            "python": "3.10.12",
            "libraries": {"edgeprune": "0.1.0", "numpy": "1.26.4", "onnxruntime": "1.18.0", "torch": None},
        },
        "runner": {
            "name": "onnxruntime",
            "settings": {"providers": ["CPUExecutionProvider"], "intra_op_threads": 4},
        },
        "method": {
            "warmup_s": 0.2,
            "min_iterations": 50,
            "min_duration_s": 1.0,
            "interleaved_chunk": 10,
            "timer": "host perf_counter_ns around infer(), inputs already in host memory",
        },
        "memory": {
            "peak_rss_bytes": 123_456_789,
            "gpu_bytes": None,
            "gpu_reason": "no GPU runner in this run",
        },
        "power": {
            "energy_mj_per_inference": None,
            "mean_power_mw": None,
            "reason": "no power sensor was sampled in this run",
        },
        "variants": variants,
    }
    if extras:
        t = np.linspace(0.0, 10.0, 101)
        record["power"] = {
            "energy_mj_per_inference": 3.2,
            "mean_power_mw": 5400.0,
            "sensor": "tegrastats VDD_IN",
            "samples": [[float(x), float(4000 + 1500 * (2.0 < x < 8.0))] for x in t],
            "window_s": [2.0, 8.0],
        }
        record["demo"] = {"note": "synthetic record for tests"}
    return record


def write_record(path: Path, record: dict[str, Any]) -> Path:
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def full_record() -> dict[str, Any]:
    return make_record()


@pytest.fixture(scope="session")
def minimal_record() -> dict[str, Any]:
    return make_record(extras=False, seed=7)


@pytest.fixture
def record_factory() -> Callable[..., dict[str, Any]]:
    return make_record


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory, full_record: dict[str, Any]) -> dict[str, Path]:
    """One full report, rendered once and shared (matplotlib takes a few seconds)."""
    from edgeprune.report import write_report

    return write_report([copy.deepcopy(full_record)], tmp_path_factory.mktemp("report-full"))


@pytest.fixture(scope="session")
def rendered_minimal(tmp_path_factory: pytest.TempPathFactory, minimal_record: dict[str, Any]) -> dict[str, Path]:
    """A report of a record without any optional part: most figures are skipped, with reasons."""
    from edgeprune.report import write_report

    return write_report([copy.deepcopy(minimal_record)], tmp_path_factory.mktemp("report-minimal"))
