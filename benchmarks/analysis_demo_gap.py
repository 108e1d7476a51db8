"""The demo's variants: three theoretical speedups beside the measured one, and the per-layer gap.

The demo's three variants (unstructured 50%, 2:4, channel-pruned to about half the MACs, widths
rounded to multiples of 8) are made from ``digits-resnet`` with the demo's own prune requests.
Speed does not depend on weight values, so the baseline uses the demo run's cached trained weights
when ``runs/demo`` has them and random weights otherwise, and there is no fine-tuning (it changes
neither shapes nor masks). For each variant:

* theoretical speedup three ways (MAC ratio, kernel-aware, roofline) for the host CPU, where it
  was measured, and for two Jetsons for comparison (estimates, labelled);
* measured speedup: ``run_bench`` with the baseline interleaved, one ONNX Runtime thread, batch 1
  and 32 (the demo's settings), repeated three times on this shared machine: median and range;
* the per-layer explanation: ``explain_gap`` (ONNX Runtime profiler, both models interleaved).

    python benchmarks/analysis_demo_gap.py
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import torch
from _common import RESULTS, machine_line, today, write_result

from edgeprune.analysis.cost import model_cost
from edgeprune.analysis.profile import explain_gap, profile_bundle
from edgeprune.analysis.speedup import theoretical_figures
from edgeprune.demo import VARIANTS
from edgeprune.device.measure.bench import BenchRequest, run_bench
from edgeprune.device.measure.settings import BenchOptions, MeasureConfig
from edgeprune.export.package import package_model
from edgeprune.models.digits import INPUT_SHAPE
from edgeprune.models.spec import build_source, load_weights
from edgeprune.prune.api import prune_model

BATCHES = (1, 32)
REPEATS = 3
DEVICES = ("host-cpu", "jetson-orin-nano", "jetson-agx-orin")


def _spread(values: list[float]) -> str:
    """Median of the repeats and their range."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def slug(name: str) -> str:
    """A variant name as a folder name (``nm-2:4`` -> ``nm-2-4``)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


CACHED = Path(__file__).resolve().parents[1] / "runs" / "demo" / "baseline" / "weights.safetensors"


def main() -> None:
    torch.manual_seed(0)
    base, _ = build_source("digits-resnet")
    weights = "random (speed does not depend on weight values)"
    if CACHED.is_file():
        load_weights(base, CACHED)
        weights = "the demo run's trained baseline"
    base.eval()
    base_cost = model_cost(base, INPUT_SHAPE)
    record: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        package_model(
            base,
            INPUT_SHAPE,
            root / "dense",
            name="dense",
            spec="digits-resnet",
            baseline_cost=base_cost,
            batch_sizes=BATCHES,
        )
        bundles = {}
        for name, request in VARIANTS.items():
            pruned, _, _ = prune_model(base, INPUT_SHAPE, request)
            cost = model_cost(pruned, INPUT_SHAPE)
            bundles[name] = root / slug(name)
            package_model(
                pruned,
                INPUT_SHAPE,
                bundles[name],
                name=name,
                spec="digits-resnet",
                pattern=request.pattern,
                baseline_cost=base_cost,
                batch_sizes=BATCHES,
            )
            record[name] = {
                "pattern": request.pattern,
                "theoretical": {
                    d: {
                        k: v
                        for k, v in theoretical_figures(base_cost, cost, request.pattern, d).items()
                        if k != "layers"
                    }
                    for d in DEVICES
                },
                "cost": cost,
            }
        # This machine is shared: repeat the interleaved bench and keep every repeat's figure.
        for _ in range(REPEATS):
            result = run_bench(
                BenchRequest(
                    bundles=list(bundles.values()),
                    baseline=root / "dense",
                    batch_sizes=BATCHES,
                    config=MeasureConfig(warmup_s=0.3, min_iterations=200, min_duration_s=4.0, chunk=1),
                    options=BenchOptions(intra_op_threads=1, power=False),
                )
            ).to_dict()
            for variant in result["variants"]:
                if variant["is_baseline"]:
                    continue
                per_batch = variant["comparison"]["per_batch"]
                measured = record[variant["name"]].setdefault("measured", {})
                for b in per_batch:
                    measured.setdefault(b, []).append(per_batch[b]["measured_speedup"])
        for name, bundle in bundles.items():
            record[name]["layers"] = {}
            for batch in BATCHES:
                rows = explain_gap(root / "dense", bundle, batch_size=batch, runs=100)
                record[name]["layers"][str(batch)] = rows
            shares = profile_bundle(root / "dense", batch_size=1, runs=100).time_shares()
            aware = theoretical_figures(
                base_cost, record[name].pop("cost"), record[name]["pattern"], "host-cpu", time_shares=shares
            )
            record[name]["kernel_aware_measured_shares"] = aware["kernel_aware"]

    lines = [
        f"## The demo's variants: theoretical beside measured speedup ({today()})",
        "",
        f"Machine: {machine_line()}. Command: `python benchmarks/analysis_demo_gap.py`. Baseline weights: "
        f"{weights}; no fine-tuning. Measured: `run_bench`, baseline interleaved, ONNX Runtime CPU, one "
        f"thread, p50 ratio, the two models alternating every iteration; median (range) of {REPEATS} "
        "repeats. Theoretical figures are estimates; kernel-aware combines layers by the roofline model's "
        "time shares, and, in the last column, by the baseline's measured profile shares.",
        "",
        "| variant | device | MAC ratio | kernel-aware | roofline | measured b1 | measured b32 "
        "| kernel-aware (measured shares) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, data in record.items():
        for device in DEVICES:
            t = data["theoretical"][device]
            measured = ("–", "–")
            if device == "host-cpu":
                measured = (_spread(data["measured"]["1"]), _spread(data["measured"]["32"]))
            extra = f"{data['kernel_aware_measured_shares']:.2f}" if device == "host-cpu" else "–"
            lines.append(
                f"| {name} | {t['device_label']} ({t['precision']}) | {t['mac_ratio']:.2f} | "
                f"{t['kernel_aware']:.2f} | {t['roofline']:.2f} | {measured[0]} | {measured[1]} | {extra} |"
            )
    for name, data in record.items():
        for batch in BATCHES:
            rows = data["layers"][str(batch)]
            lines += [
                "",
                f"### {name}, batch {batch}: per-layer gap (ONNX Runtime profiler, 100 runs each, interleaved)",
                "",
                "| layer | time share | theoretical (MAC ratio) | kernel-aware | measured | reached | why |",
                "|---|---|---|---|---|---|---|",
            ]
            for row in rows:

                def f(v: float | None) -> str:
                    return "–" if v is None else f"{v:.2f}"

                lines.append(
                    f"| {row['name']} | {100 * row['time_share']:.1f}% | {f(row['theoretical_speedup'])} | "
                    f"{f(row['kernel_aware_speedup'])} | {f(row['measured_speedup'])} | "
                    f"{'yes' if row['reached'] else 'no'} | {row['reason']} |"
                )
    (RESULTS / "analysis_demo_gap.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    write_result("analysis_demo_gap.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
