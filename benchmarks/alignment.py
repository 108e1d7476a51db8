"""Channel alignment: the same network at aligned and unaligned widths on ONNX Runtime (CPU).

The channel-pruned demo model at widths 11/23/46 (what a 50%-MAC target gives without rounding)
measured slower than the dense 16/32/64 model; this script shows why: CPU convolution kernels
work in blocks of channels, so widths that are not multiples of 8 waste the blocks. All widths
are timed interleaved in one run, one ORT thread and two, batch 1 and 32.

    python benchmarks/alignment.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from _common import machine_line, today, write_result

from edgeprune.analysis.cost import model_cost
from edgeprune.device.measure.timing import MeasureConfig, measure_interleaved
from edgeprune.device.runners.ort import OrtRunner
from edgeprune.export.onnx_export import export_onnx
from edgeprune.models.digits import DigitsResNet

WIDTHS = [(16, 32, 64), (11, 23, 46), (8, 24, 48), (8, 16, 32), (12, 24, 48)]


def main() -> None:
    config = MeasureConfig(warmup_s=0.3, min_iterations=100, min_duration_s=2.0)
    macs = {w: model_cost(DigitsResNet(w), (1, 32, 32)).macs for w in WIDTHS}
    lines = [
        f"## Channel alignment on ONNX Runtime CPU ({today()})",
        "",
        f"Machine: {machine_line()}",
        "",
        "Command: `python benchmarks/alignment.py`; all widths interleaved in one run; p50 in ms.",
        "",
        "| widths | MACs | MAC ratio | threads | batch | p50 ms | measured speedup vs 16/32/64 |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            w: export_onnx(DigitsResNet(w).eval(), (1, 32, 32), Path(tmp) / f"{'_'.join(map(str, w))}.onnx")
            for w in WIDTHS
        }
        for threads in (1, 2):
            for batch in (1, 32):
                runners = {w: OrtRunner(p, intra_op_threads=threads) for w, p in paths.items()}
                for runner in runners.values():
                    runner.activate()
                x = np.random.default_rng(0).standard_normal((batch, 1, 32, 32)).astype(np.float32)
                samples = measure_interleaved(runners, {w: {"input": x} for w in runners}, config)
                base = float(np.median(samples[WIDTHS[0]]))
                for w in WIDTHS:
                    p50 = float(np.median(samples[w]))
                    lines.append(
                        f"| {'/'.join(map(str, w))} | {macs[w] / 1e6:.2f} M | "
                        f"{macs[WIDTHS[0]] / macs[w]:.2f} | {threads} | {batch} | {p50:.3f} | "
                        f"{base / p50:.2f} |"
                    )
                for runner in runners.values():
                    runner.deactivate()
    write_result("alignment.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
