"""Matrix approximation against matrix regression (He et al. ICCV'17) at 50% of channels, no fine-tuning.

Every coupled-channel group with a single Conv2d/Linear consumer (the inner channels of the three
residual blocks, and the features before the classifier) loses half of its channels. Selectors:
L1 magnitude (the engine's criterion), LASSO on the per-channel contributions (our coordinate
descent; scikit-learn's Lasso checked to pick the same channels), greedy L0 (orthogonal matching
pursuit) and the non-convex L1/2 penalty; each with the consumer's weights kept as they are
(approximation) or refit by least squares on sampled inputs (regression). Layers are pruned in
forward order with inputs from the pruned network and targets from the original.

Reconstruction error: ||Y - Y'||^2 / ||Y||^2 of each consumer's outputs at sampled positions of
held-out calibration images (not used for the fit). Accuracy: digits test set, before any
fine-tuning.

Run: ``python benchmarks/reconstruction.py`` (about 2 minutes; one torch thread).
"""

from __future__ import annotations

import time

import torch
from patterns_table import header, load_baseline, update_section

CALIBRATION_IMAGES = 256
METHODS = [
    ("L1 magnitude (approximation)", "magnitude", False),
    ("L1 magnitude + least squares", "magnitude", True),
    ("LASSO, weights kept", "lasso", False),
    ("LASSO + least squares (He et al.)", "lasso", True),
    ("OMP (greedy L0) + least squares", "omp", True),
    ("L1/2 + least squares", "l1/2", True),
]


def main() -> None:
    from edgeprune.analysis.cost import model_cost
    from edgeprune.prune.reconstruct import ReconstructConfig, reconstruct_channels
    from edgeprune.train import evaluate

    torch.set_num_threads(1)
    base, data = load_baseline()
    shape = (1, 32, 32)
    base_acc = evaluate(base, (data.x_test, data.y_test))
    base_macs = model_cost(base, shape).macs
    calibration = data.x_train[:CALIBRATION_IMAGES]
    results = []
    for label, selector, refit in METHODS:
        t0 = time.time()
        result = reconstruct_channels(
            base, shape, calibration, ReconstructConfig(sparsity=0.5, selector=selector, refit=refit)
        )
        seconds = time.time() - t0
        accuracy = evaluate(result.model, data.x_test, data.y_test)
        results.append((label, result, accuracy, model_cost(result.model, shape).macs, seconds))
        print(label, f"{accuracy:.4f}", [round(layer["relative_error"], 4) for layer in result.layers], flush=True)
    sk = reconstruct_channels(
        base, shape, calibration, ReconstructConfig(sparsity=0.5, selector="lasso", solver="sklearn")
    )
    ours = next(r for label, r, *_ in results if label.startswith("LASSO +"))
    same = all(a["selected"] == b["selected"] for a, b in zip(ours.layers, sk.layers))

    layers = results[0][1].layers
    lines = [
        header(
            "LASSO + least squares against L1 magnitude, 50% of channels, no fine-tuning",
            "python benchmarks/reconstruction.py",
        ),
        f"Baseline test accuracy {100 * base_acc:.1f}%, {base_macs / 1e6:.2f} M MACs. Calibration: the first "
        f"{CALIBRATION_IMAGES} training images, 10 sampled output positions each (as He et al.); the last 25% "
        "of them are held out and give the errors below. LASSO penalty searched by bisection until exactly "
        "half the channels are non-zero. scikit-learn's Lasso as the solver picks "
        f"{'the same' if same else 'different'} channels in every layer.\n",
        "Relative reconstruction error of each pruned group's consumer (lower is better):\n",
        "| consumer (channels kept) | " + " | ".join(label for label, *_ in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for i, layer in enumerate(layers):
        cells = [f"{r.layers[i]['relative_error']:.4f}" for _, r, *_ in results]
        lines.append(f"| {layer['consumer']} ({layer['kept']}/{layer['channels']}) | " + " | ".join(cells) + " |")
    lines += ["", "| method | test accuracy, no fine-tuning | MACs kept | run time s |", "|---|---:|---:|---:|"]
    for label, _, accuracy, macs, seconds in results:
        lines.append(f"| {label} | {100 * accuracy:.1f}% | {100 * macs / base_macs:.1f}% | {seconds:.1f} |")
    update_section("reconstruction", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
