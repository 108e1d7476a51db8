"""Every pattern at 50% and 75% sparsity on the digits baseline, with one fine-tuning budget.

For each pattern: accuracy after the same fine-tuning, weight storage in the best format per layer
(computed), the MAC-ratio theoretical speedup, and the speedup measured on ONNX Runtime CPU
(interleaved with the dense bundle in the same run, one intra-op thread).

Run: ``python benchmarks/patterns_table.py`` (about 5 minutes on 2 cores); with ``--sensitivity``, the
per-layer sensitivity scan instead (about a minute). The trained baseline is
cached under ``runs/methods/`` and reused by the other method benchmarks. The section it writes in
``benchmarks/results/methods.md`` is replaced on every run; the other sections are kept.
"""

from __future__ import annotations

import copy
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "methods"
RESULTS_FILE = REPO / "benchmarks" / "results" / "methods.md"
BASELINE = RUNS / "digits_resnet.safetensors"
FINETUNE_EPOCHS = 2
FINETUNE_LR = 0.01

sys.path.insert(0, str(REPO))


def load_baseline() -> tuple[torch.nn.Module, Any]:
    """The trained digits-resnet (trained once with the default TrainConfig, then cached) and the data."""
    from safetensors.torch import save_file

    from edgeprune.models.digits import digits_resnet, load_digits_data
    from edgeprune.models.spec import load_weights
    from edgeprune.train import TrainConfig, train

    data = load_digits_data()
    model = digits_resnet()
    if BASELINE.is_file():
        load_weights(model, BASELINE)
    else:
        RUNS.mkdir(parents=True, exist_ok=True)
        train(model, (data.x_train, data.y_train), TrainConfig())
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(BASELINE))
    return model.eval(), data


def update_section(name: str, text: str) -> Path:
    """Replace (or append) the section ``name`` of the methods results file; echo it."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    current = (
        RESULTS_FILE.read_text()
        if RESULTS_FILE.is_file()
        else (
            "# Pruning methods on the digits baseline\n\nMeasured results of the scripts in `benchmarks/` "
            "(one section per script; each run replaces its own section).\n"
        )
    )
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in current:
        current = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, current, flags=re.S)
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    RESULTS_FILE.write_text(current)
    print(text)
    return RESULTS_FILE


def header(title: str, command: str) -> str:
    from _common import machine_line, today

    return f"## {title} ({today()})\n\nMachine: {machine_line()}\n\nCommand: `{command}`\n"


VARIANTS: list[tuple[str, float, dict[str, Any]]] = [
    ("unstructured", 0.5, {"pattern": "unstructured"}),
    ("vector (kernel row)", 0.5, {"pattern": "vector"}),
    ("kernel (3x3)", 0.5, {"pattern": "kernel"}),
    ("block 4x4", 0.5, {"pattern": "block", "block": 4}),
    ("bank-balanced, 4 banks", 0.5, {"pattern": "bank", "banks": 4}),
    ("2:4", 0.5, {"pattern": "nm"}),
    ("2:4 + permutation", 0.5, {"pattern": "nm", "permute": True}),
    ("channel (50% of MACs kept)", 0.5, {"pattern": "channel", "target_macs": 0.5, "round_to": 8}),
    ("unstructured", 0.75, {"pattern": "unstructured"}),
    ("unstructured, gradual 2 steps", 0.75, {"pattern": "unstructured", "schedule": "gradual"}),
    ("vector (kernel row)", 0.75, {"pattern": "vector"}),
    ("kernel (3x3)", 0.75, {"pattern": "kernel"}),
    ("block 4x4", 0.75, {"pattern": "block", "block": 4}),
    ("bank-balanced, 4 banks", 0.75, {"pattern": "bank", "banks": 4}),
    ("channel (25% of MACs kept)", 0.75, {"pattern": "channel", "target_macs": 0.25, "round_to": 8}),
]


def slug(name: str, sparsity: float) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{name}-{int(sparsity * 100)}".lower()).strip("-")


def make_variant(
    base: torch.nn.Module, data: Any, sparsity: float, options: dict[str, Any]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Prune, then spend the same fine-tuning budget on every variant (gradual: split over its steps)."""
    from edgeprune.prune.api import PruneRequest, prune_model
    from edgeprune.train import TrainConfig, train

    options = dict(options)
    gradual = options.get("schedule") == "gradual"
    if options["pattern"] not in ("nm", "channel"):
        options["sparsity"] = sparsity
    if gradual:
        options.update(steps=FINETUNE_EPOCHS, step_epochs=1)
    request = PruneRequest(**options)
    prune_data = (data.x_train, data.y_train, data.x_test, data.y_test)
    pruned, plan, summary = prune_model(base, (1, 32, 32), request, prune_data if request.needs_data else None)
    if not gradual:
        train(
            pruned,
            data.x_train,
            data.y_train,
            TrainConfig(epochs=FINETUNE_EPOCHS, lr=FINETUNE_LR, seed=1),
            masks=plan.masks or None,
        )
    return pruned.eval(), summary


def main() -> None:
    from _common import machine_line

    from edgeprune.analysis.cost import model_cost
    from edgeprune.device.measure.bench import BenchRequest, run_bench
    from edgeprune.device.measure.settings import BenchOptions, MeasureConfig
    from edgeprune.export.package import package_model
    from edgeprune.prune.storage import storage_table, storage_totals
    from edgeprune.train import evaluate

    torch.set_num_threads(1)
    base, data = load_baseline()
    shape = (1, 32, 32)
    base_cost = model_cost(base, shape)
    base_acc = evaluate(base, (data.x_test, data.y_test))
    base_bytes = storage_totals(storage_table(base))["dense_bytes"]
    bundles_dir = RUNS / "bundles"
    reference = data.x_test[:8].numpy()
    package_model(
        base,
        shape,
        bundles_dir / "dense",
        name="dense",
        spec="digits-resnet",
        pattern="dense",
        baseline_cost=base_cost,
        reference_inputs=reference,
        accuracy=base_acc,
        batch_sizes=(1, 32),
    )
    rows: list[dict[str, Any]] = []
    started = time.time()
    for name, sparsity, options in VARIANTS:
        t0 = time.time()
        pruned, summary = make_variant(copy.deepcopy(base), data, sparsity, options)
        accuracy = evaluate(pruned, (data.x_test, data.y_test))
        cost = model_cost(pruned, shape)
        storage = storage_totals(storage_table(pruned))
        formats = sorted({r["best_format"] for r in storage_table(pruned) if r["best_format"] != "dense"})
        label = slug(name, sparsity)
        package_model(
            pruned,
            shape,
            bundles_dir / label,
            name=label,
            spec="digits-resnet",
            pattern=options["pattern"],
            baseline_cost=base_cost,
            reference_inputs=reference,
            accuracy=accuracy,
            batch_sizes=(1, 32),
        )
        rows.append(
            {
                "name": name,
                "sparsity": sparsity,
                "label": label,
                "accuracy": accuracy,
                "weight_sparsity": 1 - cost.nonzero_params / base_cost.params,
                "bytes": storage["best_bytes"],
                "formats": formats,
                "mac_ratio": base_cost.macs / cost.effective_macs,
                "permutation_gain": (summary.get("permutation") or {}).get("gain"),
            }
        )
        print(f"{label}: accuracy {accuracy:.4f}, {storage['best_bytes']} B, {time.time() - t0:.0f} s", flush=True)

    record = run_bench(
        BenchRequest(
            bundles=[bundles_dir / r["label"] for r in rows],
            baseline=bundles_dir / "dense",
            batch_sizes=(1, 32),
            config=MeasureConfig(warmup_s=0.2, min_iterations=100, min_duration_s=1.0),
            options=BenchOptions(intra_op_threads=1, power=False),
        )
    ).to_dict()
    measured = {v["name"]: v["comparison"]["per_batch"] for v in record["variants"] if v.get("comparison")}
    lines = [
        header("Patterns at 50% and 75% sparsity, equal fine-tuning", "python benchmarks/patterns_table.py"),
        f"Baseline: digits-resnet, test accuracy {100 * base_acc:.1f}%, {base_bytes:,} B of conv/linear "
        f"weights (fp32), {base_cost.macs / 1e6:.2f} M MACs. Each variant: one-shot magnitude pruning "
        f"(stem conv and classifier left dense for mask patterns), then {FINETUNE_EPOCHS} epochs of "
        f"fine-tuning at lr {FINETUNE_LR} with the mask fixed; the gradual row spends the same 2 epochs as "
        "1 epoch after each of 2 cubic-schedule steps. Channel rows prune coupled channel groups (L1, "
        "rounded to multiples of 8) to the MAC fraction shown.\n",
        "Storage: computed bytes of conv/linear weights, each layer in its smallest format "
        "(formats used listed); theoretical: MAC ratio (dense MACs / effective MACs), an estimate; "
        "measured: ONNX Runtime CPU, 1 intra-op thread, p50 of the dense bundle / p50 of the variant, "
        "timed interleaved in one run.\n",
        "| pattern | sparsity | weights zero | accuracy | storage B | formats | theoretical × | "
        "measured × b1 | measured × b32 |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        per_batch = measured.get(r["label"], {})
        b1 = per_batch.get("1", {}).get("measured_speedup")
        b32 = per_batch.get("32", {}).get("measured_speedup")
        name = r["name"] + (f" (kept magnitude +{100 * r['permutation_gain']:.2f}%)" if r["permutation_gain"] else "")
        lines.append(
            f"| {name} | {r['sparsity']:.0%} | {100 * r['weight_sparsity']:.1f}% | "
            f"{100 * r['accuracy']:.1f}% | {r['bytes']:,} | {', '.join(r['formats']) or 'dense'} | "
            f"{r['mac_ratio']:.2f} | {b1:.2f} | {b32:.2f} |"
        )
    lines.append(f"\nTotal run time {time.time() - started:.0f} s on {machine_line()}.")
    update_section("patterns_table", "\n".join(lines) + "\n")


def sensitivity_section() -> None:
    """Per-layer sensitivity (each layer alone, no fine-tuning): a table here, plots under runs/methods/."""
    from edgeprune.prune.sensitivity import layer_sensitivity, plot_sensitivity, sensitivity_markdown
    from edgeprune.train import evaluate

    torch.set_num_threads(1)
    base, data = load_baseline()
    lines = [
        header("Per-layer sensitivity", "python benchmarks/patterns_table.py --sensitivity"),
        "Accuracy on the digits test set with only that layer (or coupled channel group, named by its "
        "producers) pruned by magnitude, no fine-tuning. Plots: runs/methods/sensitivity_*.png.\n",
    ]
    for pattern, levels in (("unstructured", (0.5, 0.75, 0.9, 0.95)), ("channel", (0.25, 0.5, 0.75))):
        rows = layer_sensitivity(
            base, (1, 32, 32), lambda m: evaluate(m, (data.x_test, data.y_test)), pattern=pattern, sparsities=levels
        )
        plot_sensitivity(rows, RUNS / f"sensitivity_{pattern}.png", title=f"digits-resnet, {pattern}")
        lines += [f"### {pattern}\n", sensitivity_markdown(rows)]
    update_section("sensitivity", "\n".join(lines))


if __name__ == "__main__":
    if "--sensitivity" in sys.argv:
        sensitivity_section()
    else:
        main()
