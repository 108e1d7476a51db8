"""MAC and parameter counts of the Canziani et al. models against published figures, within 1%.

Published figures: torchvision's model documentation (the "GFLOPS" and "Params" columns of the
classification table, https://pytorch.org/vision/stable/models.html, generated from each weights
enum's ``_ops`` and ``num_params``). torchvision's "GFLOPS" count multiply-accumulates of Conv and
Linear layers, which is exactly what the cost model counts. Counting runs on the ``meta`` device
(shapes only), so all ten models take about three seconds.
"""

from __future__ import annotations

import pytest
import torch

from edgeprune.analysis.cost import model_cost
from edgeprune.models.digits import INPUT_SHAPE, digits_resnet

# name: (published GMACs, published parameters, input side), torchvision docs, IMAGENET1K_V1 weights.
PUBLISHED = {
    "alexnet": (0.714, 61_100_840, 224),
    "vgg16": (15.47, 138_357_544, 224),
    "vgg19": (19.632, 143_667_240, 224),
    "googlenet": (1.498, 6_624_904, 224),
    "resnet18": (1.814, 11_689_512, 224),
    "resnet34": (3.664, 21_797_672, 224),
    "resnet50": (4.089, 25_557_032, 224),
    "resnet101": (7.801, 44_549_160, 224),
    "resnet152": (11.514, 60_192_808, 224),
    "inception_v3": (5.713, 27_161_264, 299),
}


def meta_model(name: str) -> torch.nn.Module:
    import torchvision

    kwargs: dict[str, object] = {"weights": None}
    if name == "googlenet":  # the published weights drop the auxiliary heads; Inception-v3's keep them
        kwargs.update(aux_logits=False, init_weights=False)
    if name == "inception_v3":
        kwargs.update(init_weights=False)
    with torch.device("meta"):
        return torchvision.models.get_model(name, **kwargs)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_within_one_percent(name: str) -> None:
    gmacs, params, side = PUBLISHED[name]
    cost = model_cost(meta_model(name), (3, side, side))
    assert abs(cost.macs / 1e9 - gmacs) / gmacs < 0.01
    assert abs(cost.params - params) / params < 0.01


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_table_matches_torchvision_metadata(name: str) -> None:
    """The table above is the one torchvision ships (guards against a transcription slip)."""
    from torchvision.models import get_model_weights

    meta = next(iter(get_model_weights(name))).meta
    assert meta["num_params"] == PUBLISHED[name][1]
    assert meta["_ops"] == pytest.approx(PUBLISHED[name][0])


def test_meta_count_equals_real_count() -> None:
    real = model_cost(digits_resnet(), INPUT_SHAPE)
    with torch.device("meta"):
        shaped = digits_resnet()
    meta = model_cost(shaped, INPUT_SHAPE)
    assert (meta.macs, meta.params) == (real.macs, real.params)
    assert [layer.name for layer in meta.layers] == [layer.name for layer in real.layers]
    assert all(layer.density == 1.0 for layer in meta.layers)
