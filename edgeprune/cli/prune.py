"""``edgeprune prune``: prune a model into a pruned-model folder."""

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune.cli._common import (
    DATA_OPTION_HELP,
    MODEL_HELP,
    NORM_HELP,
    SHAPE_HELP,
    console,
    fail,
    progress_steps,
    resolve_task,
    user_errors,
)
from edgeprune.vocab import Criterion, Regularizer, Selector


def prune(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    out: Annotated[Path, typer.Option(help="Folder for the pruned model (model.json, plan.json, weights).")],
    pattern: Annotated[
        str,
        typer.Option(
            help="channel, unstructured, nm, vector (kernel row), kernel (k x k), block (b x b of the GEMM view) "
            "or bank (bank-balanced)."
        ),
    ] = "channel",
    sparsity: Annotated[float | None, typer.Option(help="Fraction removed, between 0 and 1.")] = None,
    target_macs: Annotated[float | None, typer.Option(help="channel only: fraction of MACs to keep.")] = None,
    target_params: Annotated[
        float | None, typer.Option(help="channel only: fraction of parameters to keep (instead of --sparsity).")
    ] = None,
    criterion: Annotated[
        str,
        typer.Option(
            help=f"channel only: {Criterion.listing()} (taylor: gradients on --calib-samples "
            "training samples of --data)."
        ),
    ] = "l1",
    global_ranking: Annotated[
        bool,
        typer.Option(
            "--global",
            help="channel only: rank channels across all groups instead of cutting "
            "each group alike (capped by --max-sparsity).",
        ),
    ] = False,
    max_sparsity: Annotated[float, typer.Option(help="channel only: most of one group ever removed.")] = 0.9,
    layer_sparsity: Annotated[
        str,
        typer.Option(
            help="channel only: comma-separated PATH=FRACTION overrides, e.g. "
            "'layer1=0.25,layer3.conv1=0.6' (a path covers what is under it)."
        ),
    ] = "",
    round_to: Annotated[int, typer.Option(help="channel only: keep counts multiples of this.")] = 1,
    weights: Annotated[Path | None, typer.Option(help="A .safetensors or .pt state dict.")] = None,
    data: Annotated[str | None, typer.Option(help=DATA_OPTION_HELP)] = None,
    finetune_epochs: Annotated[
        int, typer.Option(help="Fine-tune epochs after pruning on --data (BatchNorm re-estimated first).")
    ] = 0,
    finetune_lr: Annotated[float, typer.Option(help="Peak learning rate of the fine-tune (warm-up, cosine).")] = 0.01,
    batch_size: Annotated[int, typer.Option(help="Fine-tune batch size.")] = 32,
    mean: Annotated[str | None, typer.Option(help=NORM_HELP)] = None,
    std: Annotated[str | None, typer.Option(help=NORM_HELP)] = None,
    input_shape: Annotated[str | None, typer.Option(help=SHAPE_HELP)] = None,
    nm: Annotated[str, typer.Option(help="nm only: the N:M pattern, along input channels.")] = "2:4",
    permute: Annotated[
        bool, typer.Option(help="nm only: permute channels first so the mask keeps more magnitude (outputs unchanged).")
    ] = False,
    block_size: Annotated[int, typer.Option(help="block only: tile side b, in weights of the GEMM view.")] = 4,
    banks: Annotated[int | None, typer.Option(help="bank only: banks per GEMM row (default 4).")] = None,
    bank_size: Annotated[int | None, typer.Option(help="bank only: weights per bank (instead of --banks).")] = None,
    ignore: Annotated[
        str, typer.Option(help="Comma-separated module paths left alone (masks default: stem conv and classifier).")
    ] = "",
    selector: Annotated[
        str | None,
        typer.Option(
            help=f"channel only: choose channels from --data ({Selector.listing()}) and refit "
            "the next layer by least squares (He et al. 2017)."
        ),
    ] = None,
    refit: Annotated[bool, typer.Option(help="With --selector: refit weights by least squares.")] = True,
    calib_samples: Annotated[int, typer.Option(help="With --selector: calibration images.")] = 256,
    regularize: Annotated[
        str | None,
        typer.Option(
            help=f"Train first on --data with {Regularizer.listing()} (proximal steps), then "
            "remove what it zeroed (channel) or mask it."
        ),
    ] = None,
    reg_strength: Annotated[
        float | None, typer.Option(help="With --regularize: lambda (default per penalty, tuned on digits-resnet).")
    ] = None,
    reg_groups: Annotated[
        str, typer.Option(help="With --regularize group-lasso: comma-separated filter, channel, shape, depth.")
    ] = "filter,channel",
    reg_epochs: Annotated[int, typer.Option(help="With --regularize: training epochs.")] = 4,
    reg_lr: Annotated[float, typer.Option(help="With --regularize: peak learning rate.")] = 0.01,
    schedule: Annotated[
        str,
        typer.Option(
            help="oneshot, or gradual (cubic schedule, fine-tuning on --data between steps; channel and "
            "mask patterns, channels removed physically at every step)."
        ),
    ] = "oneshot",
    steps: Annotated[int, typer.Option(help="gradual only: pruning steps.")] = 4,
    step_epochs: Annotated[int, typer.Option(help="gradual only: fine-tune epochs after each step.")] = 1,
    tolerance: Annotated[
        float | None,
        typer.Option(
            help="gradual only: withdraw the last step and stop if accuracy drops more than this (e.g. 0.01)."
        ),
    ] = None,
    sparse_exec: Annotated[
        bool, typer.Option(help="Time every sparse layer dense and as CSR on this CPU and report where CSR wins.")
    ] = False,
    sensitivity: Annotated[
        Path | None,
        typer.Option(
            help="Scan per-layer sensitivity on --data (accuracy vs sparsity, each layer alone) for this "
            "pattern; writes this image and a .md table beside it."
        ),
    ] = None,
) -> None:
    """Prune a model and write a pruned-model folder.

    Example: edgeprune prune digits-resnet --weights runs/demo/baseline/weights.safetensors
    --pattern channel --sparsity 0.3 --out runs/pruned

    More: --pattern bank --sparsity 0.75 --schedule gradual --tolerance 0.01;
    --pattern nm --permute; --pattern channel --sparsity 0.5 --selector lasso;
    --pattern channel --regularize group-lasso --reg-strength 6;
    --pattern channel --target-params 0.5 --global --criterion taylor;
    --pattern channel --layer-sparsity 'layer1=0.25,layer3=0.5';
    mypkg.nets:small_cnn --input-shape 3,64,64 --data npz:my.npz --finetune-epochs 3.
    """
    with user_errors():
        from edgeprune.prune.api import PruneRequest

        n, m = _parse_nm(nm)
        request = PruneRequest(
            pattern,
            sparsity=sparsity,
            target_macs=target_macs,
            target_params=target_params,
            global_ranking=global_ranking,
            max_sparsity=max_sparsity,
            layer_sparsity=_parse_layer_sparsity(layer_sparsity),
            criterion=criterion,
            round_to=round_to,
            n=n,
            m=m,
            ignore=frozenset(p for p in ignore.split(",") if p.strip()),
            block=block_size,
            banks=banks,
            bank_size=bank_size,
            permute=permute,
            selector=selector,
            refit=refit,
            calib_samples=calib_samples,
            regularizer=regularize,
            reg_strength=reg_strength,
            reg_groups=tuple(g.strip() for g in reg_groups.split(",") if g.strip()),
            reg_epochs=reg_epochs,
            reg_lr=reg_lr,
            schedule=schedule,
            steps=steps,
            step_epochs=step_epochs,
            tolerance=tolerance,
        )
        if out.exists() and any(out.iterdir()) and not (out / "model.json").is_file():
            raise fail(f"{out} exists and is not a pruned-model folder: choose another --out")
        from edgeprune.analysis.cost import model_cost
        from edgeprune.models.spec import load_model
        from edgeprune.prune.api import prune_model
        from edgeprune.prune.plan import save_pruned

        if finetune_epochs < 0 or batch_size < 1 or not finetune_lr > 0:
            raise fail("--finetune-epochs must be 0 or more, --batch-size and --finetune-lr positive")
        from edgeprune.models.spec import parse_shape
        from edgeprune.train import evaluate, finetune

        loaded = load_model(model, weights, parse_shape(input_shape) if input_shape else None)
        wanting = {
            "this method": request.needs_data,
            "--sensitivity": sensitivity is not None,
            "--finetune-epochs": finetune_epochs > 0,
        }
        needs = next((what for what, wants in wanting.items() if wants), None)
        task: Any = resolve_task(loaded, data, mean, std, required=needs)
        if task is not None:
            console.print(f"data: {task.name} ({_describe(task.preprocessing)})", highlight=False)
        if sensitivity is not None:
            _sensitivity(loaded, request, task, sensitivity)
        with progress_steps() as step:
            pruned, plan, summary = prune_model(loaded.model, loaded.input_shape, request, task, step)
            plan = _on_top_of(model, plan)
            if finetune_epochs > 0:
                finetune(
                    pruned,
                    task,
                    finetune_epochs,
                    masks=plan.masks or None,
                    on_step=lambda s, t, note: step("fine-tune", s, t, note),
                    lr=finetune_lr,
                    batch_size=batch_size,
                )
        record = _accuracy_record(loaded, pruned, task, evaluate)
        record["finetuned"] = finetune_epochs > 0 or "schedule" in summary
        if finetune_epochs > 0:
            record["finetune"] = {"epochs": finetune_epochs, "lr": finetune_lr, "batch_size": batch_size}
        elif "schedule" in summary:
            record["finetune"] = {"epochs_per_step": request.step_epochs, "schedule": "gradual"}
        before, after = model_cost(loaded.model, loaded.input_shape), model_cost(pruned, loaded.input_shape)
        if sparse_exec:
            summary["sparse_exec"] = _sparse_exec(pruned, loaded.input_shape)
        meta = {
            "source": loaded.meta.get("source", loaded.spec),
            "input_shape": list(loaded.input_shape),
            "method": pattern,
            **record,
            "summary": summary,
        }
        save_pruned(out, pruned, plan, meta)
        _print_summary(summary)
        _print_accuracy(record)
        console.print(
            f"{pattern}: MACs {before.macs:,} → effective {after.effective_macs:,.0f} "
            f"({before.macs / max(after.effective_macs, 1):.2f}× theoretical, MAC ratio); "
            f"params {before.params:,} → {after.nonzero_params:,} non-zero; wrote {out}"
        )


def _parse_layer_sparsity(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        path, sep, value = item.partition("=")
        try:
            if not sep or not path.strip():
                raise ValueError
            out[path.strip()] = float(value)
        except ValueError:
            raise fail(f"--layer-sparsity takes PATH=FRACTION items, got '{item}'") from None
    return out


def _parse_nm(text: str) -> tuple[int, int]:
    try:
        n_text, m_text = text.split(":")
        return int(n_text), int(m_text)
    except ValueError:
        raise fail(f"--nm must look like 2:4, got '{text}'") from None


def _on_top_of(model: str, plan: Any) -> Any:
    """A plan that replays from the original model: a pruned folder's own plan, then this one.

    The folder being written names the original model as its source, so its plan must hold every
    step since then: channels are composed, masks of both steps kept (and both kept during the
    fine-tune), so a weight pruned once stays pruned.
    """
    from edgeprune.prune.plan import PrunePlan, compose_structural, is_pruned_folder, read_plan

    if not is_pruned_folder(Path(model)):
        return plan
    prior = read_plan(Path(model))
    if prior.masks and plan.structural:
        raise fail(
            f"{model} is masked ({prior.pattern}); removing channels would invalidate its masks: prune channels "
            "first, then apply a mask pattern"
        )
    masks = dict(prior.masks)
    for path, mask in plan.masks.items():
        masks[path] = mask & masks[path] if path in masks else mask
    return PrunePlan(plan.pattern, compose_structural(prior.structural, plan.structural), masks)


def _describe(preprocessing: dict[str, Any]) -> str:
    """The normalization and split of a task in a few words, so no default is silent."""
    parts = []
    if "mean" in preprocessing:
        parts.append(f"mean {preprocessing['mean']}, std {preprocessing['std']} ({preprocessing.get('normalization')})")
    for key in ("note", "val"):
        if key in preprocessing:
            parts.append(str(preprocessing[key]))
    return "; ".join(parts) or "as given"


def _accuracy_record(loaded: Any, pruned: Any, task: Any, evaluate: Any) -> dict[str, Any]:
    """The pruned model's measured metric (and the unpruned model's), or why there is none."""
    if task is None:
        return {"data": None, "accuracy": None, "accuracy_reason": "no --data given, so accuracy was not measured"}
    if not task.has_val:
        return {"data": task.name, "accuracy": None, "accuracy_reason": f"data '{task.name}' has no validation split"}
    return {
        "data": task.name,
        "accuracy": float(evaluate(pruned, task)),
        "accuracy_unpruned": float(evaluate(loaded.model, task)),
        "metric": task.metric_name,
        "preprocessing": task.preprocessing,
    }


def _print_accuracy(record: dict[str, Any]) -> None:
    if record["accuracy"] is None:
        console.print(f"accuracy: not measured ({record['accuracy_reason']})", highlight=False)
        return
    line = (
        f"{record['metric']} on {record['data']}: {record['accuracy']:.1%} (unpruned {record['accuracy_unpruned']:.1%})"
    )
    if not record["finetuned"]:
        line += " — not fine-tuned: add --finetune-epochs N to recover accuracy"
    console.print(line, highlight=False)


def _sensitivity(loaded: Any, request: Any, data: Any, path: Path) -> None:
    from edgeprune.prune.sensitivity import layer_sensitivity, plot_sensitivity, sensitivity_markdown
    from edgeprune.train import evaluate

    options = (
        {}
        if request.pattern == "channel"
        else {
            "n": request.n,
            "m": request.m,
            "block": request.block,
            "banks": request.banks,
            "bank_size": request.bank_size,
        }
    )
    rows = layer_sensitivity(
        loaded.model,
        loaded.input_shape,
        lambda mdl: evaluate(mdl, data),
        pattern=request.pattern,
        ignore=request.ignore,
        **options,
    )
    plot_sensitivity(rows, path, title=f"Per-layer sensitivity, {request.pattern}")
    table = sensitivity_markdown(rows)
    path.with_suffix(".md").write_text(table)
    console.print(table)
    console.print(f"sensitivity plot: {path}; table: {path.with_suffix('.md')}")


def _sparse_exec(model: Any, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    from edgeprune.prune.sparse_exec import sparsify_model

    _, report = sparsify_model(model, input_shape)
    for row in report:
        if row["dense_ms"] is None:
            continue
        verdict = "CSR" if row["csr"] else "dense"
        console.print(
            f"  {row['module']}: sparsity {row['sparsity']:.0%}, dense {row['dense_ms']:.3f} ms, "
            f"CSR {row['csr_ms']:.3f} ms ({row['speedup']:.2f}×, theoretical {row['theoretical']:.1f}×) "
            f"→ {verdict}",
            highlight=False,
        )
    return report


def _print_summary(summary: dict[str, Any]) -> None:
    """The method-specific lines: skipped layers, 2:4 validity, storage, schedule, regularization."""
    for layer in summary.get("layers", []):
        if layer.get("skipped") and layer["skipped"] != "no zeros":
            console.print(f"  skipped {layer['module']}: {layer['skipped']}", highlight=False)
        if "relative_error" in layer:
            console.print(
                f"  {layer['consumer']}: kept {layer['kept']}/{layer['channels']} channels, "
                f"reconstruction error {layer['relative_error']:.4f}",
                highlight=False,
            )
    failing = [c for c in summary.get("nm_check", []) if not c["ok"]]
    if summary.get("nm_check") is not None:
        valid = len(summary["nm_check"]) - len(failing)
        console.print(f"  TensorRT N:M rule holds on {valid} of {len(summary['nm_check'])} layers", highlight=False)
        for check in failing:
            console.print(f"    {check['module']}: {check['reason'] or 'left dense'}", highlight=False)
    if "permutation" in summary:
        perm = summary["permutation"]
        console.print(
            f"  permutation: kept magnitude {perm['kept_before']:.1f} → {perm['kept_after']:.1f} "
            f"(+{100 * perm['gain']:.2f}%)",
            highlight=False,
        )
    if "storage" in summary:
        storage = summary["storage"]
        console.print(
            f"  storage (computed): dense {storage['dense_bytes']:,} B → {storage['best_bytes']:,} B in the "
            f"best format per layer ({storage['compression']:.2f}×)",
            highlight=False,
        )
    if "schedule" in summary:
        sched = summary["schedule"]
        for record in sched["history"]:
            acc = "–" if record["accuracy"] is None else f"{100 * record['accuracy']:.1f}%"
            console.print(
                f"  step {record['step']}: sparsity {record['sparsity']:.1%}, accuracy {acc}"
                f"{'' if record['accepted'] else ' (withdrawn)'}",
                highlight=False,
            )
        if sched["withdrawn"]:
            console.print(f"  {sched['withdrawn']}", highlight=False)
    if "regularization" in summary:
        reg = summary["regularization"]
        rows = reg["structure"]
        mean_rows = sum(r["row_sparsity"] for r in rows) / max(1, len(rows))
        mean_cols = sum(r["column_sparsity"] for r in rows) / max(1, len(rows))
        console.print(
            f"  {reg['kind']} (λ={reg['strength']:g}, {reg['epochs']} epochs): mean row sparsity "
            f"{mean_rows:.0%}, column sparsity {mean_cols:.0%}",
            highlight=False,
        )
    if "removed" in summary:
        removed = summary["removed"]
        console.print(
            f"  removed {removed['channels_removed']} all-zero channels "
            f"(output change {removed['max_output_diff']:.2g})",
            highlight=False,
        )
