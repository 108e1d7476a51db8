"""Repeatability of the ORT benchmark, and agreement with a plain independent timing loop.

Five repeats of ``run_bench`` on the dense digits bundle (batch 1, one thread) give the spread of
p50 and the CoV from one run to the next.

Agreement with a plain loop (``session.run`` between two ``perf_counter`` calls on a session of its
own, no edgeprune code) is measured interleaved: chunks of 100 calls of the loop ``run_bench`` uses
(:func:`edgeprune.device.measure._time_calls` over an :class:`OrtRunner`) alternate with chunks of
the plain loop, 40 rounds per repeat, so both see the same machine. On a shared machine the
median of one minute differs from the next by 10-25%, so a plain loop timed before or after our run
would compare the machine's drift rather than the two methods. Goal: within 3%.

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

from edgeprune.device.measure.bench import BenchRequest, run_bench
from edgeprune.device.measure.settings import BenchOptions, MeasureConfig, _time_calls
from edgeprune.device.runners.ort import OrtRunner
from edgeprune.export.package import package_model
from edgeprune.models.digits import INPUT_SHAPE, digits_resnet

REPEATS = 5
ROUNDS = 40
CHUNK = 100


def agreement(model_path: Path) -> tuple[float, float]:
    """Median ms of our timing loop and of a plain loop, interleaved chunk by chunk."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feeds = {"input": np.random.default_rng(1).standard_normal((1, *INPUT_SHAPE)).astype(np.float32)}
    ours: list[float] = []
    plain: list[float] = []
    with OrtRunner(model_path, intra_op_threads=1) as runner:
        for _ in range(50):
            session.run(None, feeds)
            runner.infer(feeds)
        for r in range(ROUNDS):
            if r % 2:
                ours += _time_calls(runner, feeds, CHUNK)
            for _ in range(CHUNK):
                start = time.perf_counter()
                session.run(None, feeds)
                plain.append((time.perf_counter() - start) * 1000)
            if not r % 2:
                ours += _time_calls(runner, feeds, CHUNK)
    return statistics.median(ours), statistics.median(plain)


def main() -> None:
    torch.manual_seed(0)
    config = MeasureConfig(warmup_s=0.3, min_iterations=300, min_duration_s=2.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "dense"
        package_model(digits_resnet().eval(), INPUT_SHAPE, bundle, name="dense", spec="digits-resnet")
        for _ in range(REPEATS):
            record = run_bench(
                BenchRequest([bundle], None, (1,), config, options=BenchOptions(intra_op_threads=1, power=False))
            ).to_dict()
            stats = record["variants"][0]["latency"]["1"]
            ours, plain = agreement(bundle / "model.onnx")
            rows.append((stats["p50_ms"], stats["cov"], stats["iterations"], ours, plain))
    p50s = [r[0] for r in rows]
    lines = [
        f"## ORT benchmark repeatability ({today()})",
        "",
        f"Machine: {machine_line()}",
        "",
        "Command: `python benchmarks/repeatability.py` (dense digits-resnet, batch 1, 1 thread)",
        "",
        "| repeat | run_bench p50 ms | CoV | iterations | interleaved: our loop ms | plain loop ms | ours / plain |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (p50, cov, n, ours, plain) in enumerate(rows, 1):
        lines.append(f"| {i} | {p50:.4f} | {100 * cov:.1f}% | {n} | {ours:.4f} | {plain:.4f} | {ours / plain:.3f} |")
    spread = (max(p50s) - min(p50s)) / statistics.median(p50s)
    ratios = [r[3] / r[4] for r in rows]
    lines += [
        "",
        f"Spread of run_bench p50 over {REPEATS} repeats: {100 * spread:.1f}% of the median (the machine's "
        f"drift between runs). Our loop against the plain loop, interleaved ({ROUNDS} rounds of {CHUNK} calls): "
        f"median ratio {statistics.median(ratios):.3f}, worst {max(ratios, key=lambda x: abs(x - 1)):.3f} "
        "(goal: within 3%).",
    ]
    write_result("repeatability.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
