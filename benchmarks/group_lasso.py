"""Structured sparsity learning (Wen et al. NIPS'16) on the digits baseline, against no regularizer.

Also network slimming (L1 on BatchNorm scales) and the unstructured penalties L1 and L1/2.

From the trained baseline, every run trains the same number of epochs with the same loop, seed and
learning-rate schedule; the regularized runs add a proximal step after each update (group soft
threshold for group lasso, soft threshold on BatchNorm scales for slimming). Afterwards the
structural engine removes every channel that is provably dead (never read, or produced as exact
zeros), so the removal itself changes no output; the table says how many and what it saves.

Run: ``python benchmarks/group_lasso.py`` (about 9 minutes; one torch thread).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from patterns_table import header, load_baseline, update_section

EPOCHS = 4
FINETUNE_EPOCHS = 2
LR = 0.01
RUNS: list[tuple[str, str | None, float, tuple[str, ...]]] = [
    ("no regularizer", None, 0.0, ()),
    ("group lasso, filter + channel, λ=6", "group-lasso", 6.0, ("filter", "channel")),
    ("group lasso, filter + channel, λ=9", "group-lasso", 9.0, ("filter", "channel")),
    ("group lasso, shape (GEMM columns), λ=6", "group-lasso", 6.0, ("shape",)),
    ("BN-scale L1 (slimming), λ=30", "bn-l1", 30.0, ()),
    ("L1 (lasso, unstructured), λ=0.05", "l1", 0.05, ()),
    ("L1/2 (non-convex), λ=0.05", "l1/2", 0.05, ()),
]


def main() -> None:
    from edgeprune.analysis.cost import model_cost
    from edgeprune.prune.api import default_ignore
    from edgeprune.prune.regularize import (
        Regularizer,
        RegularizerConfig,
        remove_zero_channels,
        structure_report,
        train_regularized,
        zero_masks,
    )
    from edgeprune.prune.structural import ChannelConfig, prune_channels
    from edgeprune.train import TrainConfig, evaluate, train

    torch.set_num_threads(1)
    base, data = load_baseline()
    shape = (1, 32, 32)
    ignore = default_ignore(base)
    base_acc = evaluate(base, (data.x_test, data.y_test))
    base_macs = model_cost(base, shape).macs
    config = TrainConfig(epochs=EPOCHS, lr=LR, seed=2)

    def finetuned(model: torch.nn.Module, masks: dict[str, torch.Tensor] | None = None) -> float:
        train(model, (data.x_train, data.y_train), TrainConfig(epochs=FINETUNE_EPOCHS, lr=LR, seed=1), masks=masks)
        return evaluate(model, (data.x_test, data.y_test))

    rows: list[dict[str, Any]] = []
    per_layer: dict[str, list[dict[str, Any]]] = {}
    plain: torch.nn.Module | None = None
    for label, kind, strength, groupings in RUNS:
        t0 = time.time()
        model = copy.deepcopy(base)
        if kind is None:
            train(model, (data.x_train, data.y_train), config)
            plain = copy.deepcopy(model)
        else:
            regularizer = Regularizer(model, RegularizerConfig(kind, strength, groupings or ("filter",), ignore), shape)
            train_regularized(model, data.x_train, data.y_train, config, regularizer)
        row: dict[str, Any] = {"label": label, "kind": kind, "accuracy": evaluate(model, (data.x_test, data.y_test))}
        structure = per_layer[label] = structure_report(model, ignore)
        pruned, _, removal = remove_zero_channels(model, shape, ignore=ignore)
        row.update(
            weights=sum(r["weight_sparsity"] for r in structure) / len(structure),
            rows=sum(r["row_sparsity"] for r in structure) / len(structure),
            columns=sum(r["column_sparsity"] for r in structure) / len(structure),
            removed=removal["channels_removed"],
            diff=removal["max_output_diff"],
            macs=model_cost(pruned, shape).macs / base_macs,
        )
        row["finetuned"] = finetuned(pruned, zero_masks(pruned, default_ignore(pruned)) or None)
        if kind == "group-lasso" and row["macs"] < 0.99 and plain is not None:
            # The unregularized model pruned by L1 to the same MACs, same fine-tuning.
            l1 = prune_channels(plain, shape, ChannelConfig(target_macs=row["macs"], criterion="l1"))
            row["l1_same_macs"] = finetuned(l1.model)
        if kind == "bn-l1" or kind is None:
            gammas = torch.cat(
                [m.weight.detach().abs().flatten() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            )
            row["zero_gamma"] = float((gammas == 0).float().mean())
            slim = prune_channels(model, shape, ChannelConfig(sparsity=0.5, criterion="bn-scale")).model
            row["slim"] = evaluate(slim, (data.x_test, data.y_test))
            row["slim_finetuned"] = finetuned(slim)
        row["seconds"] = time.time() - t0
        rows.append(row)
        print(row, flush=True)

    total_channels = sum(
        m.out_channels for p, m in base.named_modules() if isinstance(m, torch.nn.Conv2d) and p not in ignore
    )
    lines = [
        header("Group lasso (SSL) and slimming against no regularizer", "python benchmarks/group_lasso.py"),
        f"From the trained baseline (test accuracy {100 * base_acc:.1f}%, {base_macs / 1e6:.2f} M MACs), "
        f"{EPOCHS} epochs each, SGD + Nesterov, one-cycle schedule peaking at lr {LR}, weight decay 5e-4, "
        "same seed; the proximal threshold per step is lr × λ (group lasso: × sqrt(group size), in units "
        "of each layer's RMS weight, the default 'relative' form; see edgeprune/prune/regularize.py). "
        "Sparsity columns average the penalized layers (stem conv and classifier excluded): rows = filters "
        "(GEMM rows), columns = GEMM columns (input channel × kernel position). 'Removed' counts channels "
        f"the engine removed because they were provably dead (of {total_channels} conv output channels); "
        f"the removal changes no output (largest change shown). Then {FINETUNE_EPOCHS} epochs of "
        "fine-tuning, zeros kept. Last column: the unregularized run pruned by the L1 criterion to the same "
        "MACs, same fine-tuning.\n",
        "| run | accuracy after training | weights zero | rows zero | columns zero | channels removed | "
        "output change | MACs after removal | accuracy after removal + fine-tuning | L1 pruning to same "
        "MACs + fine-tuning |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        same = f"{100 * r['l1_same_macs']:.1f}%" if "l1_same_macs" in r else "–"
        lines.append(
            f"| {r['label']} | {100 * r['accuracy']:.1f}% | {100 * r['weights']:.1f}% | "
            f"{100 * r['rows']:.1f}% | {100 * r['columns']:.1f}% | {r['removed']} | {r['diff']:.1e} | "
            f"{100 * r['macs']:.1f}% | {100 * r['finetuned']:.1f}% | {same} |"
        )
    lines += [
        "",
        "Network slimming's recipe (prune the channels with the smallest BatchNorm scales, here half of "
        "each coupled group) after training with and without the L1 penalty on the scales:\n",
        "| run | scales exactly zero | accuracy after training | pruned 50%, no fine-tuning | "
        f"pruned 50% + {FINETUNE_EPOCHS} epochs |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "slim" in r:
            lines.append(
                f"| {r['label']} | {100 * r['zero_gamma']:.1f}% | {100 * r['accuracy']:.1f}% | "
                f"{100 * r['slim']:.1f}% | {100 * r['slim_finetuned']:.1f}% |"
            )
    shown = [label for label, kind, *_ in RUNS if kind == "group-lasso"]
    lines += [
        "",
        "Per layer, as in Wen et al.'s Table 4 (row / column sparsity, %):\n",
        "| layer | " + " | ".join(shown) + " |",
        "|---|" + "---:|" * len(shown),
    ]
    for i, layer in enumerate(per_layer[shown[0]]):
        cells = [
            f"{100 * per_layer[label][i]['row_sparsity']:.0f} / {100 * per_layer[label][i]['column_sparsity']:.0f}"
            for label in shown
        ]
        lines.append(f"| {layer['module']} | " + " | ".join(cells) + " |")
    lines.append(f"\nRun time {sum(r['seconds'] for r in rows):.0f} s.")
    update_section("group_lasso", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
