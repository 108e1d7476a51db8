"""The one training loop: BatchNorm re-estimation after a cut, the schedules, masks kept, the task's loss and metric."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeprune.data import Task, tensor_task
from edgeprune.errors import UsageError
from edgeprune.train import TrainConfig, evaluate, finetune, finetune_config, recalibrate_batchnorm, train

pytestmark = pytest.mark.trains


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )


def test_batchnorm_statistics_are_re_estimated_from_the_batches_alone() -> None:
    net = _net().eval()
    bn = net[1]
    assert isinstance(bn, nn.BatchNorm2d)
    with torch.no_grad():  # stale statistics, as a cut leaves them
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(9.0)
    x = torch.randn(40, 1, 6, 6) * 2 + 1
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    used = recalibrate_batchnorm(net, [(x, torch.zeros(40))], 100)
    assert used == 1
    acts = net[0](x)
    torch.testing.assert_close(bn.running_mean, acts.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_var, acts.var(dim=(0, 2, 3), unbiased=True))
    assert bn.momentum == 0.1 and not net.training  # restored as they were
    for key, value in before.items():  # no weight moved
        torch.testing.assert_close(net.state_dict()[key], value)


def test_equal_weight_average_over_several_batches() -> None:
    net = _net()
    x = torch.randn(64, 1, 6, 6)
    batches = [(x[i : i + 16], torch.zeros(16)) for i in range(0, 64, 16)]
    assert recalibrate_batchnorm(net, batches + batches, 4) == 4  # stops at the count
    means = torch.stack([net[0](b).mean(dim=(0, 2, 3)) for b, _ in batches])
    torch.testing.assert_close(net[1].running_mean, means.mean(0))


def test_a_model_without_batchnorm_is_left_alone() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    assert recalibrate_batchnorm(net, [(torch.randn(8, 1, 6, 6), torch.zeros(8))], 2) == 0


def test_warmup_cosine_rises_then_decays_to_zero() -> None:
    net = _net()
    x, y = torch.randn(64, 1, 6, 6), torch.randint(0, 3, (64,))
    rates: list[float] = []
    config = TrainConfig(epochs=2, batch_size=8, lr=0.1, schedule="warmup-cosine", warmup_fraction=0.25)
    train(net, (x, y), config, after_update=rates.append)
    assert len(rates) == 16
    peak = rates.index(max(rates))
    assert peak == 3 and abs(rates[peak] - 0.1) < 1e-9  # 25% of 16 steps of linear warm-up
    assert all(a < b for a, b in zip(rates[:peak], rates[1 : peak + 1]))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :]))
    assert rates[-1] < 0.01


def test_finetune_keeps_masked_weights_at_zero_and_recalibrates_with_zero_epochs() -> None:
    net = _net()
    conv = net[0]
    assert isinstance(conv, nn.Conv2d)
    mask = torch.rand(conv.weight.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    with torch.no_grad():
        conv.weight.mul_(mask)
    x, y = torch.randn(64, 1, 6, 6), torch.randint(0, 3, (64,))
    finetune(net, (x, y), 1, masks={"0": mask})
    assert not conv.weight[~mask].any() and conv.weight[mask].all()
    weights = conv.weight.detach().clone()
    finetune(net, (x * 3, y), 0)  # BatchNorm only
    torch.testing.assert_close(conv.weight, weights)
    assert finetune_config(2).bn_batches > 0 and finetune_config(2).schedule == "warmup-cosine"


def test_the_task_loss_and_metric_drive_the_loop() -> None:
    net = _net()
    x, y = torch.randn(48, 1, 6, 6), torch.randint(0, 3, (48,))
    seen: list[int] = []

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(len(target))
        return torch.nn.functional.cross_entropy(output, target)

    def always_half(output: torch.Tensor, target: torch.Tensor) -> float:
        return 0.5

    task = tensor_task(x, y, x[:10], y[:10], loss=loss, metric=always_half, metric_name="half")
    notes: list[str] = []
    train(net, task, TrainConfig(epochs=1, batch_size=16), on_step=lambda s, t, note: notes.append(note))
    assert seen == [16, 16, 16] and len(notes) == 3 and "half 50.0%" in notes[-1]
    assert evaluate(net, task) == pytest.approx(0.5)


def test_top1_is_exact_over_uneven_batches() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]).reshape(3, 1, 2)
    y = torch.tensor([0, 0, 0])
    assert evaluate(net, Task("t", None, torch.utils.data.TensorDataset(x, y)), batch_size=2) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"schedule": "x"}, "schedule"),
    ],
)
def test_bad_hyperparameters_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        TrainConfig(**kwargs)
