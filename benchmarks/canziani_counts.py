"""MAC and parameter counts of Canziani et al.'s torchvision models against published figures.

The cost model (``edgeprune.analysis.cost.model_cost``) counts Conv2d and Linear MACs with forward
hooks; here it runs on the ``meta`` device, so the ten models take seconds and no memory. Compared
with, in order of authority:

1. torchvision's model documentation ("GFLOPS" and "Params" of the IMAGENET1K_V1 weights,
   https://pytorch.org/vision/stable/models.html); its "GFLOPS" are Conv/Linear multiply-accumulates,
   the quantity counted here. This is the within-1% check (also ``tests/analysis/test_counts.py``).
2. Canziani et al. 2016, Fig. 2 (G-Ops, digitized from the figure, +/- 5-10%); G-Ops = 2 x MACs.
3. The architectures' own papers, where they state a figure (multiply-adds or parameters).

    python benchmarks/canziani_counts.py
"""

from __future__ import annotations

import torch
from _common import today, write_result

from edgeprune.analysis.cost import model_cost

# name: (label, side, torchvision GMACs, torchvision params)
TORCHVISION = {
    "alexnet": ("AlexNet", 224, 0.714, 61_100_840),
    "vgg16": ("VGG-16", 224, 15.47, 138_357_544),
    "vgg19": ("VGG-19", 224, 19.632, 143_667_240),
    "googlenet": ("GoogLeNet", 224, 1.498, 6_624_904),
    "resnet18": ("ResNet-18", 224, 1.814, 11_689_512),
    "resnet34": ("ResNet-34", 224, 3.664, 21_797_672),
    "resnet50": ("ResNet-50", 224, 4.089, 25_557_032),
    "resnet101": ("ResNet-101", 224, 7.801, 44_549_160),
    "resnet152": ("ResNet-152", 224, 11.514, 60_192_808),
    "inception_v3": ("Inception-v3", 299, 5.713, 27_161_264),
}
# Canziani et al. 2016, Fig. 2, G-Ops as digitized (approximate).
CANZIANI_GOPS = {
    "alexnet": 2.2,
    "vgg16": 31.0,
    "vgg19": 39.3,
    "googlenet": 3.0,
    "resnet18": 3.6,
    "resnet34": 7.4,
    "resnet50": 8.2,
    "resnet101": 15.7,
    "resnet152": 23.0,
    "inception_v3": 11.4,
}
# The original papers' own figures and why they may differ from torchvision's implementation.
PAPERS = {
    "alexnet": "Krizhevsky et al. 2012: 60 M params (a two-tower net; torchvision implements the one-tower "
    "variant of Krizhevsky 2014; Canziani's 2.2 G-Ops come from their own Torch7 implementation)",
    "vgg16": "Simonyan & Zisserman 2015, Table 2: 138 M params",
    "vgg19": "Simonyan & Zisserman 2015, Table 2: 144 M params",
    "googlenet": "Szegedy et al. 2015: 1.5 G multiply-adds; Table 1: 6.8 M params",
    "resnet18": "He et al. 2016, Table 1: 1.8 G FLOPs (multiply-adds)",
    "resnet34": "He et al. 2016, Table 1: 3.6 G",
    "resnet50": "He et al. 2016, Table 1: 3.8 G (torchvision's v1.5 strides in the 3x3 conv: 4.1 G)",
    "resnet101": "He et al. 2016, Table 1: 7.6 G (v1.5: 7.8 G)",
    "resnet152": "He et al. 2016, Table 1: 11.3 G (v1.5: 11.5 G)",
    "inception_v3": "Szegedy et al. 2016: 5 G multiply-adds, < 25 M params (torchvision counts the "
    "auxiliary head's params: 27.2 M)",
}


def count(name: str, side: int) -> tuple[int, int]:
    import torchvision

    kwargs: dict[str, object] = {"weights": None}
    if name == "googlenet":  # the published weights drop the auxiliary heads
        kwargs.update(aux_logits=False, init_weights=False)
    if name == "inception_v3":  # eval mode skips the auxiliary head; its params are counted
        kwargs.update(init_weights=False)
    with torch.device("meta"):
        model = torchvision.models.get_model(name, **kwargs)
    cost = model_cost(model, (3, side, side))
    return cost.macs, cost.params


def main() -> None:
    lines = [
        f"## MAC and parameter counts against published figures ({today()})",
        "",
        "Command: `python benchmarks/canziani_counts.py` (counts on the meta device; the same check is "
        "`tests/analysis/test_counts.py`). Inputs 224 x 224, Inception-v3 299 x 299.",
        "",
        "| model | GMACs (counted) | GMACs (torchvision) | diff | params (counted) | params (torchvision) "
        "| diff | G-Ops = 2 x MACs | Canziani Fig. 2 G-Ops (digitized) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for name, (label, side, gmacs, params) in TORCHVISION.items():
        macs, counted_params = count(name, side)
        d_macs = 100 * (macs / 1e9 - gmacs) / gmacs
        d_params = 100 * (counted_params - params) / params
        worst = max(worst, abs(d_macs), abs(d_params))
        lines.append(
            f"| {label} | {macs / 1e9:.3f} | {gmacs:.3f} | {d_macs:+.2f}% | {counted_params / 1e6:.2f} M "
            f"| {params / 1e6:.2f} M | {d_params:+.2f}% | {2 * macs / 1e9:.2f} | {CANZIANI_GOPS[name]:.1f} |"
        )
    lines += [
        "",
        f"Largest difference from torchvision's published figures: {worst:.2f}% (criterion: 1%).",
        "",
        "Sources compared with:",
        "",
        "- torchvision model documentation, classification table (GFLOPS, Params) of the IMAGENET1K_V1 "
        "weights; the same numbers are the weights enums' `_ops` and `num_params` metadata, which the "
        "test also checks against the installed torchvision.",
        "- Canziani, Paszke, Culurciello 2016, 'An Analysis of Deep Neural Network Models for Practical "
        "Applications', Fig. 2 (G-Ops digitized, +/- 5-10%). Every model agrees within the digitizing "
        "error except AlexNet (2.2 vs 1.43): their Torch7 AlexNet is not torchvision's one-tower variant.",
        "- The architectures' papers:",
    ]
    lines += [f"  - {label}: {PAPERS[name]}" for name, (label, *_rest) in TORCHVISION.items()]
    write_result("canziani_counts.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
