"""The coupled-channel graph finds the right groups and refuses what it cannot map."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeprune.errors import GraphError
from edgeprune.models.digits import digits_resnet
from edgeprune.prune.graph import HANDLERS, build_groups, register_handler


def group_of(groups, module: str, kind: str):
    return next(g for g in groups if any(m.module == module and m.kind == kind for m in g.members))


def test_residual_coupling_in_digits_resnet() -> None:
    groups = build_groups(digits_resnet(), torch.zeros(2, 1, 32, 32))
    stream = group_of(groups, "stem.0", "out")
    names = {(m.module, m.kind) for m in stream.members}
    # The stem's channels flow through layer1's identity shortcut into its add.
    assert ("layer1.conv2", "out") in names and ("layer1.bn2", "norm") in names
    assert ("layer2.conv1", "in") in names and ("layer2.shortcut.0", "in") in names
    # The downsampling shortcut couples with layer2's main path.
    assert group_of(groups, "layer2.shortcut.0", "out") is group_of(groups, "layer2.conv2", "out")
    # The classifier's outputs are the model's output: fixed.
    assert group_of(groups, "fc", "out").fixed == "model output"
    # The last stage feeds the classifier.
    assert ("fc", "in") in {(m.module, m.kind) for m in group_of(groups, "layer3.conv2", "out").members}


class Weird(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.conv(x), dim=1)


def test_unknown_op_names_op_and_fix() -> None:
    with pytest.raises(GraphError, match=r"cumsum.*register a handler"):
        build_groups(Weird(), torch.zeros(1, 3, 8, 8))


def test_registered_handler_teaches_the_graph() -> None:
    def passthrough(builder, node):  # type: ignore[no-untyped-def]
        return builder.layout_of(node.args[0])

    register_handler(torch.cumsum, passthrough)
    try:
        groups = build_groups(Weird(), torch.zeros(1, 3, 8, 8))
        assert group_of(groups, "conv", "out").fixed == "model output"
    finally:
        HANDLERS.pop(torch.cumsum)


def test_graph_leaves_the_model_untouched() -> None:
    model = digits_resnet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_groups(model, torch.zeros(2, 1, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
