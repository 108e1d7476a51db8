"""``edgeprune prune``: prune a model into a pruned-model folder."""

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune.cli._common import MODEL_HELP, console, fail, progress_steps, user_errors


def prune(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    out: Annotated[Path, typer.Option(help="Folder for the pruned model (model.json, plan.json, weights).")],
    pattern: Annotated[str, typer.Option(help="channel, unstructured or nm.")] = "channel",
    sparsity: Annotated[float | None, typer.Option(help="Fraction removed, between 0 and 1.")] = None,
    target_macs: Annotated[float | None, typer.Option(help="channel only: fraction of MACs to keep.")] = None,
    criterion: Annotated[str, typer.Option(help="channel only: l1, l2, bn-scale, random.")] = "l1",
    round_to: Annotated[int, typer.Option(help="channel only: keep counts multiples of this.")] = 1,
    weights: Annotated[Path | None, typer.Option(help="A .safetensors or .pt state dict.")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="digits-resnet only: fine-tune epochs after pruning.")] = 0,
) -> None:
    """Prune a model and write a pruned-model folder.

    Example: edgeprune prune digits-resnet --weights runs/demo/baseline/weights.safetensors
    --pattern channel --sparsity 0.3 --out runs/pruned
    """
    with user_errors():
        from edgeprune.prune.api import PruneRequest

        request = PruneRequest(pattern, sparsity=sparsity, target_macs=target_macs, criterion=criterion,
                               round_to=round_to)
        if out.exists() and any(out.iterdir()) and not (out / "model.json").is_file():
            raise fail(f"{out} exists and is not a pruned-model folder: choose another --out")
        from edgeprune.analysis.cost import model_cost
        from edgeprune.models.spec import load_model
        from edgeprune.prune.api import prune_model
        from edgeprune.prune.plan import save_pruned

        loaded = load_model(model, weights)
        pruned, plan, summary = prune_model(loaded.model, loaded.input_shape, request)
        accuracy = None
        if finetune_epochs > 0:
            accuracy = _finetune_digits(loaded.spec, pruned, plan.masks, finetune_epochs)
        before, after = model_cost(loaded.model, loaded.input_shape), model_cost(pruned, loaded.input_shape)
        meta = {"source": loaded.meta.get("source", loaded.spec), "input_shape": list(loaded.input_shape),
                "method": pattern, "accuracy": accuracy, "summary": summary}
        save_pruned(out, pruned, plan, meta)
        console.print(f"{pattern}: MACs {before.macs:,} → effective {after.effective_macs:,.0f} "
                      f"({before.macs / max(after.effective_macs, 1):.2f}× theoretical, MAC ratio); "
                      f"params {before.params:,} → {after.nonzero_params:,} non-zero; wrote {out}")


def _finetune_digits(spec: str, model: Any, masks: dict[str, Any], epochs: int) -> float:
    from edgeprune.models.digits import load_digits_data
    from edgeprune.models.train import TrainConfig, evaluate, train

    if spec != "digits-resnet":
        raise fail("--finetune-epochs needs a data set; only digits-resnet has one built in")
    data = load_digits_data()
    with progress_steps() as step:
        train(model, data.x_train, data.y_train, TrainConfig(epochs=epochs, lr=0.01, seed=1), masks=masks or None,
              on_step=lambda s, t: step("fine-tune", s, t))
    return evaluate(model, data.x_test, data.y_test)
