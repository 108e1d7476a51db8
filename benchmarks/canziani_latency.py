"""Canziani et al.'s fourth conclusion on this CPU: operation count predicts inference time.

Canziani, Paszke and Culurciello (2016) found, on a Jetson TX1, that time per image is close to
linear in the operation count across ImageNet classifiers. This script repeats the experiment on
ONNX Runtime (CPU) with the same torchvision models: AlexNet, VGG-16/19, GoogLeNet,
ResNet-18/34/50/101/152 and Inception-v3 (random weights: speed does not depend on their values).

Every model is exported to ONNX once, then timed in rounds: each round runs every model once, in
turn, so a slow moment of this shared machine falls on all models alike. The headline figure per
model and batch is the *minimum* over rounds of (batch latency / batch size), in ms per image: on
a machine shared with other jobs, interference only ever adds time, so the best round is the
closest to the model's own cost. The median over rounds is fitted too and reported beside it,
with the load average before and after. Operations are Canziani's G-Ops, 2 x the cost model's
MACs. Writes ``canziani_latency.md``, ``canziani_latency.json`` (every sample) and
``canziani_latency.png`` under benchmarks/results/.

    python benchmarks/canziani_latency.py [--rounds-b1 10] [--rounds-b16 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, machine_line, today, write_result

from edgeprune.analysis.cost import model_cost
from edgeprune.export.onnx_export import export_onnx
from edgeprune.models.spec import build_source

MODELS = [
    "alexnet",
    "vgg16",
    "vgg19",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "inception_v3",
]
LABELS = {
    "alexnet": "AlexNet",
    "vgg16": "VGG-16",
    "vgg19": "VGG-19",
    "googlenet": "GoogLeNet",
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "resnet101": "ResNet-101",
    "resnet152": "ResNet-152",
    "inception_v3": "Inception-v3",
}


def fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares line y = slope x + intercept and Pearson's r."""
    x, y = np.asarray(xs), np.asarray(ys)
    slope, intercept = np.polyfit(x, y, 1)
    r = float(np.corrcoef(x, y)[0, 1])
    return {"slope_ms_per_gop": float(slope), "intercept_ms": float(intercept), "r": r}


def plot(points: dict[int, list[tuple[str, float, float]]], fits: dict[int, dict[str, float]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colors = {1: "#4c72b0", 16: "#dd8452"}
    for batch, rows in points.items():
        xs = [gops for _, gops, _ in rows]
        ys = [ms for _, _, ms in rows]
        f = fits[batch]
        ax.scatter(
            xs,
            ys,
            color=colors.get(batch, "grey"),
            edgecolors="black",
            linewidths=0.5,
            zorder=3,
            label=f"batch {batch}: {f['slope_ms_per_gop']:.2f} ms/G-op x + {f['intercept_ms']:.2f} ms, "
            f"r = {f['r']:.3f}",
        )
        line = np.linspace(0, max(xs) * 1.05, 50)
        ax.plot(
            line,
            f["slope_ms_per_gop"] * line + f["intercept_ms"],
            color=colors.get(batch, "grey"),
            linestyle="--",
            linewidth=1,
        )
        if batch == min(points):
            for name, gops, ms in rows:
                ax.annotate(LABELS[name], (gops, ms), fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.set_xlabel("operations per image, G-ops (2 x MACs, counted)")
    ax.set_ylabel("time per image (ms), best of the rounds, measured")
    ax.set_title("Time per image against operations, ONNX Runtime CPU (Canziani et al. conclusion 4)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds-b1", type=int, default=15)
    parser.add_argument("--rounds-b16", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: one per core)")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    import onnxruntime as ort

    names = [m for m in args.models.split(",") if m]
    gops: dict[str, float] = {}
    sessions = {}
    shapes = {}
    started = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            model, shape = build_source(f"torchvision:{name}")
            model.eval()
            gops[name] = 2 * model_cost(model, shape).macs / 1e9
            path = export_onnx(model, shape, Path(tmp) / f"{name}.onnx")
            del model
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.log_severity_level = 3
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            shapes[name] = shape
            print(f"exported {name}: {gops[name]:.2f} G-ops", flush=True)
        samples: dict[int, dict[str, list[float]]] = {}
        for batch, rounds in ((1, args.rounds_b1), (16, args.rounds_b16)):
            feeds = {
                n: {"input": np.random.default_rng(0).standard_normal((batch, *shapes[n])).astype(np.float32)}
                for n in names
            }
            for n in names:  # warm-up: allocation, first-touch of weights
                sessions[n].run(None, feeds[n])
            samples[batch] = {n: [] for n in names}
            for r in range(rounds):
                for n in names:
                    t0 = time.perf_counter_ns()
                    sessions[n].run(None, feeds[n])
                    samples[batch][n].append((time.perf_counter_ns() - t0) / 1e6 / batch)
                print(f"batch {batch} round {r + 1}/{rounds} done", flush=True)
    load_after = os.getloadavg()
    stats = {"min": min, "median": statistics.median}
    points = {
        kind: {b: [(n, gops[n], fn(samples[b][n])) for n in names] for b in samples} for kind, fn in stats.items()
    }
    fits = {
        kind: {b: fit([g for _, g, _ in rows], [ms for _, _, ms in rows]) for b, rows in by_batch.items()}
        for kind, by_batch in points.items()
    }
    plot(points["min"], fits["min"], RESULTS / "canziani_latency.png")
    (RESULTS / "canziani_latency.json").write_text(
        json.dumps(
            {
                "date": today(),
                "machine": machine_line(),
                "ort_version": ort.__version__,
                "intra_op_num_threads": args.threads,
                "load_average_before": load_before,
                "load_average_after": load_after,
                "gops": gops,
                "ms_per_image_samples": samples,
                "fits": fits,
                "seconds": time.time() - started,
            },
            indent=1,
        )
        + "\n"
    )
    lines = [
        f"## Operations against time per image, ONNX Runtime CPU ({today()})",
        "",
        f"Machine: {machine_line()}; ONNX Runtime {ort.__version__}, intra-op threads "
        f"{args.threads or 'default (one per core)'}, graph optimizations all, fp32. Shared machine: 1-minute "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        f"Command: `python benchmarks/canziani_latency.py`; {args.rounds_b1} rounds at batch 1 and "
        f"{args.rounds_b16} at batch 16, every model once per round in turn; ms/image = batch latency / batch, "
        "best round (min) and median round. G-ops = 2 x counted MACs. Plot (min): `canziani_latency.png`.",
        "",
        "| model | G-ops | ms/image b1, min | b1, median | ms/image b16, min | b16, median |",
        "|---|---|---|---|---|---|",
    ]
    for n in sorted(names, key=lambda m: gops[m]):
        cells = [f"{fn(samples[b][n]):.1f}" for b in (1, 16) for fn in (min, statistics.median)]
        lines.append(f"| {LABELS[n]} | {gops[n]:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| batch | statistic | slope (ms per G-op) | intercept (ms) | Pearson r |",
        "|---|---|---|---|---|",
    ]
    for kind, by_batch in fits.items():
        for b, f in by_batch.items():
            lines.append(f"| {b} | {kind} | {f['slope_ms_per_gop']:.2f} | {f['intercept_ms']:.2f} | {f['r']:.3f} |")
    write_result("canziani_latency.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
