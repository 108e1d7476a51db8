"""Per-layer sensitivity: accuracy against sparsity, pruning each layer alone, no fine-tuning.

Layers differ in how much pruning they tolerate (Han et al. 2015 and Li et al. 2017 both start
from this scan): the first conv and the classifier usually break early, wide middle layers hardly
notice. The scan says where a uniform sparsity is wasteful and which layers to leave out.

For a mask pattern each Conv2d/Linear layer is masked alone; for ``channel`` each coupled-channel
group of the structural engine is pruned alone (by the L1 criterion), named by its producers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.errors import UsageError
from edgeprune.prune.criteria import get_criterion
from edgeprune.prune.graph import build_groups
from edgeprune.prune.patterns import MASK_PATTERNS, bank_eligible, layer_mask, nm_eligible, prunable_layers
from edgeprune.prune.surgery import apply_structural, plan_from_groups

DEFAULT_SPARSITIES = (0.25, 0.5, 0.75, 0.9)


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    input_shape: tuple[int, ...],
    evaluate: Callable[[nn.Module], float],
    *,
    pattern: str = "unstructured",
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    ignore: frozenset[str] = frozenset(),
    **mask_options: Any,
) -> list[dict[str, Any]]:
    """Accuracy with one layer (or channel group) pruned at each sparsity; the model is restored after.

    Args:
        model: the trained model.
        input_shape: one sample's shape (for the channel groups).
        evaluate: model -> accuracy in [0, 1].
        pattern: ``channel`` or a mask pattern.
        sparsities: fractions to try (N:M has one, its own).
        ignore: layers to skip.
        mask_options: passed to :func:`~edgeprune.prune.patterns.layer_mask` (n, m, block, banks, bank_size).

    Returns:
        One row per (layer, sparsity): ``layer``, ``sparsity``, ``accuracy``, ``baseline``, ``drop``.

    Raises:
        UsageError: unknown pattern.
    """
    baseline = evaluate(model)
    rows: list[dict[str, Any]] = []
    if pattern == "channel":
        groups = build_groups(model, torch.zeros(2, *input_shape))
        modules = dict(model.named_modules())
        criterion = get_criterion("l1")
        for group in groups:
            if group.fixed is not None or any(m.module in ignore for m in group.producers) or group.size < 2:
                continue
            order = torch.argsort(criterion(modules, group, {}), descending=True, stable=True)
            name = "+".join(m.module for m in group.producers)
            for sparsity in sparsities:
                keep = max(1, int(round(group.size * (1 - sparsity))))
                pruned = apply_structural(
                    copy.deepcopy(model), plan_from_groups(model, groups, {group.id: sorted(order[:keep].tolist())})
                )
                accuracy = evaluate(pruned)
                rows.append(
                    {
                        "layer": name,
                        "sparsity": sparsity,
                        "accuracy": accuracy,
                        "baseline": baseline,
                        "drop": baseline - accuracy,
                    }
                )
        return rows
    if pattern not in MASK_PATTERNS:
        raise UsageError(f"unknown pattern '{pattern}': channel or one of {', '.join(MASK_PATTERNS)}")
    m = int(mask_options.get("m", 4))
    levels = [1 - int(mask_options.get("n", 2)) / m] if pattern == "nm" else list(sparsities)
    for path, layer in prunable_layers(model, ignore).items():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        if pattern == "nm" and nm_eligible(weight, m):
            continue
        if pattern == "bank" and bank_eligible(weight, mask_options.get("banks"), mask_options.get("bank_size")):
            continue
        saved = weight.detach().clone()
        for sparsity in levels:
            weight.mul_(layer_mask(weight, pattern, sparsity, **mask_options).to(weight.dtype))
            accuracy = evaluate(model)
            weight.copy_(saved)
            rows.append(
                {
                    "layer": path,
                    "sparsity": sparsity,
                    "accuracy": accuracy,
                    "baseline": baseline,
                    "drop": baseline - accuracy,
                }
            )
    return rows


def sensitivity_markdown(rows: list[dict[str, Any]]) -> str:
    """The scan as a Markdown table: one row per layer, one accuracy column per sparsity."""
    levels = sorted({r["sparsity"] for r in rows})
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    acc = {(r["layer"], r["sparsity"]): r["accuracy"] for r in rows}
    baseline = rows[0]["baseline"] if rows else None
    lines = ["| layer | " + " | ".join(f"{s:.0%}" for s in levels) + " |", "|---|" + "---:|" * len(levels)]
    for layer in layers:
        cells = [f"{100 * acc[(layer, s)]:.1f}" if (layer, s) in acc else "–" for s in levels]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    if baseline is not None:
        lines.append(f"\nAccuracy (%) with only that layer pruned, no fine-tuning; unpruned: {100 * baseline:.1f}%.")
    return "\n".join(lines) + "\n"


def plot_sensitivity(rows: list[dict[str, Any]], path: Path, title: str = "Per-layer sensitivity") -> Path:
    """Accuracy against sparsity, one line per layer, written as an image (PNG/SVG by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for layer in dict.fromkeys(r["layer"] for r in rows):
        points = sorted((r["sparsity"], r["accuracy"]) for r in rows if r["layer"] == layer)
        ax.plot([100 * s for s, _ in points], [100 * a for _, a in points], marker="o", label=layer)
    if rows:
        ax.axhline(100 * rows[0]["baseline"], color="grey", linestyle="--", linewidth=1, label="unpruned")
    ax.set_xlabel("sparsity of that layer alone (%)")
    ax.set_ylabel("accuracy, no fine-tuning (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
