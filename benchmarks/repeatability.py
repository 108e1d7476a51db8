"""Repeatability of the ORT benchmark, and agreement with a plain independent timing loop.

Five repeats of ``run_bench`` on the dense digits bundle (batch 1, one thread) give the spread of
p50 and the CoV. Each repeat is followed by a plain loop (``session.run`` between two
``perf_counter`` calls, no edgeprune code) whose median must agree with our p50 within 3%.

    python benchmarks/repeatability.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _common import machine_line, today, write_result

from edgeprune.device.bench import BenchRequest, run_bench
from edgeprune.device.measure import MeasureConfig
from edgeprune.export.package import package_model
from edgeprune.models.digits import INPUT_SHAPE, digits_resnet

REPEATS = 5


def plain_loop_ms(model_path: Path, iterations: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, *INPUT_SHAPE)).astype(np.float32)
    for _ in range(50):
        session.run(None, {"input": x})
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(None, {"input": x})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    config = MeasureConfig(warmup_s=0.3, min_iterations=300, min_duration_s=2.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "dense"
        package_model(digits_resnet().eval(), INPUT_SHAPE, bundle, name="dense", spec="digits-resnet")
        for _ in range(REPEATS):
            record = run_bench(BenchRequest([bundle], None, (1,), config, intra_op_threads=1, power=False))
            stats = record["variants"][0]["latency"]["1"]
            plain = plain_loop_ms(bundle / "model.onnx", stats["iterations"])
            rows.append((stats["p50_ms"], stats["cov"], stats["iterations"], plain))
    p50s = [r[0] for r in rows]
    lines = [
        f"## ORT benchmark repeatability ({today()})",
        "",
        f"Machine: {machine_line()}",
        "",
        "Command: `python benchmarks/repeatability.py` (dense digits-resnet, batch 1, 1 thread)",
        "",
        "| repeat | p50 ms | CoV | iterations | plain loop median ms | p50 / plain |",
        "|---|---|---|---|---|---|",
    ]
    for i, (p50, cov, n, plain) in enumerate(rows, 1):
        lines.append(f"| {i} | {p50:.4f} | {100 * cov:.1f}% | {n} | {plain:.4f} | {p50 / plain:.3f} |")
    spread = (max(p50s) - min(p50s)) / statistics.median(p50s)
    worst = max(abs(r[0] / r[3] - 1) for r in rows)
    lines += [
        "",
        f"Spread of p50 over {REPEATS} repeats: {100 * spread:.1f}% of the median; "
        f"worst disagreement with the plain loop: {100 * worst:.1f}% (goal: within 3%).",
    ]
    write_result("repeatability.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
