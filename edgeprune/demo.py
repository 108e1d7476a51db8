"""The whole pipeline on a built-in task, in a few minutes on a laptop CPU.

``digits`` (the default: ``digits-resnet`` on scikit-learn's digits) is fast and saturated;
``fashion-mnist`` (``fashion-resnet`` on Fashion-MNIST) takes longer and leaves room between
variants. Both run the same steps:

1. Train the built-in model on its data (or reuse the cached weights in the run folder).
2. Make three variants, each briefly fine-tuned: unstructured 50%, 2:4, and channel-pruned to
   about half the MACs.
3. Package each, and the dense baseline, into bundles (ONNX + parity + manifest).
4. Benchmark every variant interleaved with the baseline on ONNX Runtime, at batch 1 and 32,
   and profile each against the baseline to explain the gap layer by layer.
5. Print the table; write ``results.json``, a theoretical-vs-measured plot and ``report.html``.

On a CPU the result is the product's point in miniature: unstructured and 2:4 models are as
cheap as half the dense model on paper, and measure about 1.0x, because the runtime executes the
zeros; the channel-pruned model is physically smaller and measures a real speedup.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from edgeprune.analysis.cost import model_cost
from edgeprune.analysis.profile import explain_gap
from edgeprune.data import Task, resolve_data
from edgeprune.device.measure.bench import BenchRequest, run_bench
from edgeprune.device.measure.settings import BenchOptions, MeasureConfig
from edgeprune.errors import UsageError
from edgeprune.export.package import package_model
from edgeprune.models.spec import BUILTINS, build_source, load_weights
from edgeprune.prune.api import PruneRequest, prune_model
from edgeprune.prune.plan import save_pruned
from edgeprune.train import TrainConfig, evaluate, finetune, train

Step = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoTask:
    """A built-in model, its data and how it is trained from scratch."""

    model: str
    data: str
    train: TrainConfig
    finetune_epochs: int = 3


TASKS: dict[str, DemoTask] = {
    "digits": DemoTask("digits-resnet", "digits", TrainConfig()),
    # Measured in benchmarks/fashion_mnist.py: over 92% on the 10k test images, minutes on 2 cores.
    # One fine-tune epoch is 1,875 steps here (digits: 45), enough to recover (benchmarks/fashion_mnist.py).
    "fashion-mnist": DemoTask("fashion-resnet", "fashion-mnist", TrainConfig(epochs=6, batch_size=128, lr=0.1), 1),
}
SPEC = TASKS["digits"].model


@dataclass(frozen=True)
class DemoConfig:
    """Knobs of the demo; the defaults are what ``make demo`` runs."""

    task: str = "digits"
    train: TrainConfig | None = None
    finetune_epochs: int | None = None
    """Fine-tune epochs per variant; None: the task's own (digits 3, fashion-mnist 1)."""
    batch_sizes: tuple[int, ...] = (1, 32)
    measure: MeasureConfig = MeasureConfig(warmup_s=0.3, min_iterations=60, min_duration_s=1.5)
    threads: int = 0
    # One ONNX Runtime thread: on a small shared CPU, inter-thread handoff dominates these tiny
    # layers and makes timings noisy; the setting is recorded in the result either way.
    ort_threads: int = 1


VARIANTS: dict[str, PruneRequest] = {
    "unstructured-50": PruneRequest("unstructured", sparsity=0.5),
    "nm-2:4": PruneRequest("nm"),
    # Channel counts rounded to multiples of 8: ONNX Runtime's CPU convolutions (and tensor cores)
    # work in blocks of 8, and unaligned widths such as 11/23/46 measure *slower* than the dense
    # model here (see BENCHMARKS.md, channel alignment).
    "channel-50mac": PruneRequest("channel", target_macs=0.5, criterion="l1", round_to=8),
}


def _slug(name: str) -> str:
    """A variant name as a portable folder name (``nm-2:4`` -> ``nm-2-4``)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def _labelled(say: Step, label: str) -> Callable[[int, int, str], None]:
    """The training loop's (step, total, note) progress as one labelled bar of the demo's display."""
    return lambda done, total, note: say(label, done, total)


def _config_key(config: TrainConfig) -> str:
    return hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:16]


def baseline_model(out: Path, spec: str, config: TrainConfig, data: Task, step: Step) -> tuple[torch.nn.Module, bool]:
    """Train the baseline, or reuse weights cached in ``out`` by a run with the same config."""
    from safetensors.torch import save_file

    model, _ = build_source(spec)
    weights = out / "baseline" / "weights.safetensors"
    key_file = out / "baseline" / "train.json"
    key = _config_key(config)
    if weights.is_file() and key_file.is_file() and json.loads(key_file.read_text()).get("key") == key:
        load_weights(model, weights)
        return model.eval(), True
    train(model, data, config, on_step=lambda s, t, note: step("train baseline", s, t))
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    key_file.write_text(json.dumps({"key": key, "config": asdict(config)}) + "\n")
    return model.eval(), False


def run_demo(out: Path, config: DemoConfig = DemoConfig(), step: Step | None = None) -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns the result record written to results.json."""
    say: Step = step or (lambda label, done, total: None)
    if config.task not in TASKS:
        raise UsageError(f"unknown demo task '{config.task}': choose one of {', '.join(TASKS)}")
    demo = TASKS[config.task]
    train_config = config.train or demo.train
    epochs = demo.finetune_epochs if config.finetune_epochs is None else config.finetune_epochs
    spec = demo.model
    out = Path(out)
    data = resolve_data(demo.data)  # before anything is written: a missing data set stops here
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(train_config.seed)
    base, reused = baseline_model(out, spec, train_config, data, say)
    input_shape = BUILTINS[spec][1]
    base_acc = evaluate(base, data)
    base_cost = model_cost(base, input_shape)
    reference = data.sample(8, "val")[0].numpy()

    bundles: dict[str, Path] = {}
    accuracy = {"dense": base_acc}
    say("package dense", 0, 1)
    package_model(
        base,
        input_shape,
        out / "bundles" / "dense",
        name="dense",
        spec=spec,
        pattern="dense",
        baseline_cost=base_cost,
        reference_inputs=reference,
        accuracy=base_acc,
        eval_data=data,
        batch_sizes=config.batch_sizes,
    )
    say("package dense", 1, 1)
    for name, request in VARIANTS.items():
        pruned, plan, summary = prune_model(base, input_shape, request)
        summary["accuracy_before_finetune"] = evaluate(pruned, data)
        finetune(
            pruned,
            data,
            epochs,
            masks=plan.masks or None,
            on_step=_labelled(say, f"fine-tune {name}"),
            seed=train_config.seed + 1,
        )
        acc = evaluate(pruned, data)
        summary["finetune"] = {"epochs": epochs, "recipe": "BatchNorm re-estimated, warm-up, cosine"}
        accuracy[name] = acc
        save_pruned(
            out / "models" / _slug(name),
            pruned,
            plan,
            {
                "source": spec,
                "input_shape": list(input_shape),
                "method": request.pattern,
                "data": data.name,
                "accuracy": acc,
                "accuracy_unpruned": base_acc,
                "finetune": summary["finetune"],
                "finetuned": epochs > 0,
                "summary": summary,
            },
        )
        say(f"package {name}", 0, 1)
        package_model(
            pruned,
            input_shape,
            out / "bundles" / _slug(name),
            name=name,
            spec=spec,
            pattern=request.pattern,
            baseline_cost=base_cost,
            reference_inputs=reference,
            accuracy=acc,
            eval_data=data,
            summary={k: v for k, v in summary.items() if k != "groups"},
            batch_sizes=config.batch_sizes,
        )
        say(f"package {name}", 1, 1)
        bundles[name] = out / "bundles" / _slug(name)

    bench = BenchRequest(
        bundles=list(bundles.values()),
        baseline=out / "bundles" / "dense",
        batch_sizes=config.batch_sizes,
        config=config.measure,
        options=BenchOptions(intra_op_threads=config.ort_threads, idle_s=5.0, energy_s=2.0),
    )
    record = run_bench(bench, on_progress=lambda label, frac: say(f"bench {label}", int(frac * 100), 100))
    say("explain the gap per layer", 0, len(bundles))
    for index, variant in enumerate(v for v in record.variants if not v.is_baseline):
        variant.layers = explain_gap(out / "bundles" / "dense", Path(str(variant.bundle)), batch_size=1, runs=100)
        say("explain the gap per layer", index + 1, len(bundles))
    record.extra["demo"] = {
        "task": config.task,
        "model": spec,
        "data": data.name,
        "baseline_reused": reused,
        "train": asdict(train_config),
        "finetune_epochs": epochs,
        "accuracy": accuracy,
    }
    written = record.to_dict()
    (out / "results.json").write_text(json.dumps(written, indent=1) + "\n")
    return written


def table_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant and batch size: the demo's table, also used by tests."""
    rows = []
    for variant in record["variants"]:
        for batch, stats in variant["latency"].items():
            comp = (variant.get("comparison") or {}).get("per_batch", {}).get(batch, {})
            theory = variant["cost"].get("theoretical") or {}
            rows.append(
                {
                    "variant": variant["name"],
                    "batch": int(batch),
                    "params": variant["cost"]["nonzero_params"],
                    "macs": variant["cost"]["effective_macs"],
                    "accuracy": variant["accuracy"],
                    "p50_ms": stats["p50_ms"],
                    "theoretical": variant["cost"]["theoretical_speedup"],
                    "kernel_aware": theory.get("kernel_aware"),
                    "roofline": theory.get("roofline"),
                    "measured": comp.get("measured_speedup", 1.0 if variant["is_baseline"] else None),
                    "ratio": comp.get("measured_over_theoretical"),
                }
            )
    return rows
