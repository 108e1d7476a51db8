"""The PyTorch runner: same outputs as the exported bundle; 2:4 conversion only where it can run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.device.measure.timing import MeasureConfig, measure
from edgeprune.device.runners.pyt import PytRunner
from edgeprune.errors import RunnerError
from edgeprune.models.digits import INPUT_SHAPE, digits_resnet
from edgeprune.models.spec import module_and_shape
from edgeprune.prune.api import PruneRequest, prune_model
from edgeprune.prune.plan import save_pruned


def test_cpu_runner_on_a_pruned_folder(tmp_path) -> None:
    torch.manual_seed(0)
    pruned, plan, _ = prune_model(digits_resnet().eval(), INPUT_SHAPE, PruneRequest("channel", sparsity=0.25))
    folder = save_pruned(tmp_path / "m", pruned, plan, {"source": "digits-resnet", "input_shape": list(INPUT_SHAPE)})
    x = np.random.default_rng(0).standard_normal((3, *INPUT_SHAPE)).astype(np.float32)
    with PytRunner(folder, loader=module_and_shape) as runner:
        got = runner.infer({"input": x})["logits"]
        stats = measure(runner, {"input": x}, 3, MeasureConfig(warmup_s=0.01, min_iterations=5, min_duration_s=0.01))
    np.testing.assert_allclose(got, pruned(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    assert stats.iterations >= 5 and stats.p50_ms > 0


def test_semi_structured_needs_a_gpu() -> None:
    runner = PytRunner(nn.Linear(64, 32), semi_structured=True, dtype="float16", input_shape=(64,))
    with pytest.raises(RunnerError, match="Ampere-or-newer CUDA GPU"):
        runner.activate()


def test_cuda_graphs_need_cuda() -> None:
    runner = PytRunner(nn.Linear(8, 4), cuda_graphs=True, input_shape=(8,))
    with pytest.raises(RunnerError, match="cuda_graphs needs device='cuda'"):
        runner.activate()


def test_gpu_timing_needs_cuda() -> None:
    with PytRunner(nn.Linear(8, 4), input_shape=(8,)) as runner, pytest.raises(RunnerError, match="device='cuda'"):
        runner.time_gpu_ms({"input": np.zeros((1, 8), np.float32)})


@pytest.mark.gpu
def test_cuda_graph_replay_matches_eager() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.manual_seed(0)
    model = digits_resnet().eval()
    x = np.random.default_rng(0).standard_normal((8, *INPUT_SHAPE)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((8, *INPUT_SHAPE)).astype(np.float32)
    with (
        PytRunner(model, "cuda", input_shape=INPUT_SHAPE) as eager,
        PytRunner(model, "cuda", input_shape=INPUT_SHAPE, cuda_graphs=True) as graphed,
    ):
        for feeds in ({"input": x}, {"input": y}):  # the second input replays the same graph
            np.testing.assert_allclose(graphed.infer(feeds)["logits"], eager.infer(feeds)["logits"], atol=1e-4)
        assert len(graphed.time_gpu_ms({"input": x}, iterations=3, pipelined=4)) == 3


@pytest.mark.gpu
def test_semi_structured_on_gpu() -> None:
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("needs an Ampere-or-newer CUDA GPU")
    from edgeprune.prune.patterns import nm_mask

    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 128)).eval()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.mul_(nm_mask(layer.weight))
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    with PytRunner(model, "cuda", "float16", input_shape=(256,)) as dense:
        want = dense.infer({"input": x})["logits"]
    with PytRunner(model, "cuda", "float16", semi_structured=True, input_shape=(256,)) as sparse:
        got = sparse.infer({"input": x})["logits"]
        assert sparse.converted == ["0", "2"]
    np.testing.assert_allclose(got, want, atol=5e-2, rtol=5e-2)
