"""Fashion-MNIST, the built-in task that is not saturated: baseline, criteria, and the whole CLI path.

1. Train ``fashion-resnet`` from scratch with the demo's recipe (``edgeprune.demo.TASKS``) on the
   60k training images; time it and measure the 10k test images. Goal: at least 92% in at most
   10 minutes on 2 CPU cores.
2. Channel pruning to 50% and 25% of the MACs (round_to 8) with every criterion (l1, l2,
   bn-scale, fpgm, taylor, random) and LASSO channel selection with least-squares refit, each
   fine-tuned with the same budget (``FINETUNE_EPOCHS`` of :func:`edgeprune.train.finetune`).
3. The same model through the command line a user types: prune → package fp32, fp16 and int8
   (calibrated from ``--data``) → bench against the dense bundle, with each bundle's own accuracy.

Needs the data: ``apt-get install dataset-fashion-mnist``. Run: ``python benchmarks/fashion_mnist.py``
(``--skip-criteria`` for parts 1 and 3 only). Writes benchmarks/results/fashion_mnist.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import machine_line, today, write_result

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "fashion-bench"
FINETUNE_EPOCHS = 1
CRITERIA = ("l1", "l2", "bn-scale", "fpgm", "taylor", "random")
# Uniform channel fractions whose MACs land near 50% and 25% of the dense model's (measured below).
LASSO_SPARSITY = {0.5: 0.3, 0.25: 0.5}


def baseline() -> tuple[Any, Any, dict[str, Any]]:
    import torch
    from safetensors.torch import save_file

    from edgeprune.data import resolve_data
    from edgeprune.demo import TASKS, _config_key
    from edgeprune.models.spec import build_source, load_weights
    from edgeprune.train import evaluate, train

    demo = TASKS["fashion-mnist"]
    task = resolve_data(demo.data)
    model, _ = build_source(demo.model)
    weights = RUNS / "baseline" / "weights.safetensors"
    info_file = RUNS / "baseline" / "train.json"
    key = _config_key(demo.train)
    if weights.is_file() and info_file.is_file() and json.loads(info_file.read_text())["key"] == key:
        load_weights(model, weights)
        info = json.loads(info_file.read_text())
    else:
        torch.manual_seed(demo.train.seed)
        start = time.perf_counter()
        train(model, task, demo.train, on_step=_every(200))
        seconds = time.perf_counter() - start
        weights.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        info = {"key": key, "train_seconds": seconds, "config": demo.train.__dict__, "threads": torch.get_num_threads()}
        info["accuracy"] = evaluate(model, task)
        info_file.write_text(json.dumps(info, indent=1) + "\n")
    return model.eval(), task, info


def _every(n: int) -> Any:
    def show(step: int, total: int, note: str) -> None:
        if step % n == 0 or step == total:
            print(f"  step {step}/{total} {note}", file=sys.stderr, flush=True)

    return show


def criteria_rows(model: Any, task: Any) -> list[dict[str, Any]]:
    from edgeprune.analysis.cost import model_cost
    from edgeprune.models.fashion import INPUT_SHAPE
    from edgeprune.prune.api import PruneRequest, prune_model
    from edgeprune.train import evaluate, finetune

    dense_macs = model_cost(model, INPUT_SHAPE).macs
    rows = []
    for keep in (0.5, 0.25):
        requests = {c: PruneRequest("channel", target_macs=keep, criterion=c, round_to=8) for c in CRITERIA}
        requests["lasso + least squares"] = PruneRequest(
            "channel", sparsity=LASSO_SPARSITY[keep], selector="lasso", calib_samples=512
        )
        for name, request in requests.items():
            start = time.perf_counter()
            pruned, _, _ = prune_model(copy.deepcopy(model), INPUT_SHAPE, request, task)
            before = evaluate(pruned, task)
            finetune(pruned, task, FINETUNE_EPOCHS)
            rows.append(
                {
                    "target": keep,
                    "method": name,
                    "macs_kept": model_cost(pruned, INPUT_SHAPE).macs / dense_macs,
                    "before_finetune": before,
                    "accuracy": evaluate(pruned, task),
                    "seconds": time.perf_counter() - start,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "edgeprune.cli.main", *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"edgeprune {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def pipeline() -> dict[str, Any]:
    weights = str(RUNS / "baseline" / "weights.safetensors")
    pruned, bundles = RUNS / "ch50", RUNS / "bundles"
    start = time.perf_counter()
    cli("prune", "fashion-resnet", "--weights", weights, "--pattern", "channel", "--target-macs", "0.5",
        "--round-to", "8", "--finetune-epochs", str(FINETUNE_EPOCHS), "--out", str(pruned))  # fmt: skip
    prune_s = time.perf_counter() - start
    meta = json.loads((pruned / "model.json").read_text())
    cli("package", "fashion-resnet", "--weights", weights, "--out", str(bundles / "dense"))
    made: dict[str, Any] = {}
    for precision in ("fp32", "fp16", "int8"):
        cli("package", str(pruned), "--out", str(bundles / precision), "--precision", precision)
        made[precision] = json.loads((bundles / precision / "manifest.json").read_text())["model"]
    record_path = RUNS / "bench.json"
    cli("bench", *(str(bundles / p) for p in ("fp32", "fp16", "int8")), "--baseline", str(bundles / "dense"),
        "--batch-sizes", "1,32", "--threads", "1", "--no-power", "--json", str(record_path))  # fmt: skip
    record = json.loads(record_path.read_text())
    speed = {}
    for variant in record["variants"]:
        if variant["is_baseline"]:
            continue
        per_batch = (variant.get("comparison") or {}).get("per_batch", {})
        speed[Path(variant["bundle"]).name] = {b: v.get("measured_speedup") for b, v in per_batch.items()}
    dense = json.loads((bundles / "dense" / "manifest.json").read_text())["model"]
    return {"meta": meta, "bundles": made, "dense": dense, "speedup": speed, "prune_seconds": prune_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-criteria", action="store_true")
    args = parser.parse_args()
    model, task, info = baseline()
    rows = [] if args.skip_criteria else criteria_rows(model, task)
    flow = pipeline()
    cfg = info["config"]
    lines = [
        "# Fashion-MNIST (fashion-resnet)",
        "",
        f"`python benchmarks/fashion_mnist.py`, {machine_line()}, {today()}.",
        "",
        f"Baseline: fashion-resnet ({cfg['epochs']} epochs, batch {cfg['batch_size']}, one-cycle to lr {cfg['lr']}, "
        f"{info.get('threads')} torch threads) trained in **{info['train_seconds']:.0f} s** to "
        f"**{info['accuracy']:.2%}** top-1 on the 10k test images.",
        "",
    ]
    if rows:
        lines += [
            f"Channel pruning, each fine-tuned {FINETUNE_EPOCHS} epoch with `finetune` (BatchNorm re-estimated,",
            "warm-up, cosine, batch 32, lr 0.01); test top-1 before and after the fine-tune:",
            "",
            "| target MACs | method | MACs kept | before fine-tune | after | seconds |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['target']:.0%} | {r['method']} | {r['macs_kept']:.1%} | {r['before_finetune']:.2%} | "
            f"**{r['accuracy']:.2%}** | {r['seconds']:.0f} |"
            for r in rows
        ]
        lines.append("")
    meta = flow["meta"]
    lines += [
        "The command line (`prune --target-macs 0.5 --round-to 8 --finetune-epochs "
        f"{FINETUNE_EPOCHS}` → `package` → `bench --threads 1`), {flow['prune_seconds']:.0f} s for the prune",
        f"and fine-tune; pruned model {meta['accuracy']:.2%} in PyTorch (unpruned {meta['accuracy_unpruned']:.2%}):",
        "",
        "| bundle | accuracy (its own ONNX on ONNX Runtime) | measured b1 | measured b32 |",
        "|---|---|---|---|",
        f"| dense fp32 | {flow['dense']['accuracy']:.2%} | 1.00 | 1.00 |",
    ]
    for precision, model_record in flow["bundles"].items():
        speed = flow["speedup"].get(precision, {})
        lines.append(
            f"| ch50 {precision} | {model_record['accuracy']:.2%} | {_fmt(speed.get('1'))} | {_fmt(speed.get('32'))} |"
        )
    lines += ["", "```", json.dumps({"baseline": info, "criteria": rows, "cli": flow["bundles"]}, indent=1), "```", ""]
    write_result("fashion_mnist.md", "\n".join(lines))


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
