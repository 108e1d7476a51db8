"""Packaging: every bundle matches PyTorch under ONNX Runtime and carries a complete manifest."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeprune import bundle
from edgeprune.analysis.cost import model_cost
from edgeprune.device.measure.bench import BenchRequest, run_bench
from edgeprune.device.measure.settings import BenchOptions, MeasureConfig
from edgeprune.errors import ExportError
from edgeprune.export.package import package_model
from edgeprune.models.digits import INPUT_SHAPE, digits_resnet
from edgeprune.prune.api import PruneRequest, prune_model
from edgeprune.record import ResultRecord

QUICK = MeasureConfig(warmup_s=0.01, min_iterations=5, min_duration_s=0.01)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    torch.manual_seed(0)
    base = digits_resnet().eval()
    base_cost = model_cost(base, INPUT_SHAPE)
    root = tmp_path_factory.mktemp("bundles")
    made = {
        "dense": package_model(
            base, INPUT_SHAPE, root / "dense", name="dense", spec="digits-resnet", baseline_cost=base_cost
        )
    }
    for name, request in {
        "unstructured": PruneRequest("unstructured", sparsity=0.5),
        "nm": PruneRequest("nm"),
        "channel": PruneRequest("channel", target_macs=0.5, round_to=8),
    }.items():
        pruned, _, _ = prune_model(base, INPUT_SHAPE, request)
        made[name] = package_model(
            pruned,
            INPUT_SHAPE,
            root / name,
            name=name,
            spec="digits-resnet",
            pattern=request.pattern,
            baseline_cost=base_cost,
        )
    return root, made


def test_every_bundle_has_parity_and_checksums(bundles) -> None:
    root, made = bundles
    for name, manifest in made.items():
        assert manifest.parity["passed"], name
        assert manifest.parity["max_abs_diff"] < 1e-4
        bundle.read_manifest(root / name)  # verifies every checksum
        model = onnx.load(str(root / name / "model.onnx"))
        batch = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert batch.dim_param == "batch"


def test_theoretical_speedups(bundles) -> None:
    _, made = bundles
    assert made["dense"].cost["theoretical_speedup"] == pytest.approx(1.0)
    assert made["unstructured"].cost["theoretical_speedup"] == pytest.approx(2.0, rel=0.05)
    assert made["nm"].cost["theoretical_speedup"] == pytest.approx(2.0, rel=0.05)
    assert made["channel"].cost["theoretical_speedup"] >= 2.0 * 0.98


def test_nm_manifest_records_per_layer_eligibility(bundles) -> None:
    _, made = bundles
    layers = {layer["name"]: layer for layer in made["nm"].sparsity["layers"]}
    assert layers["layer1.conv1"]["nm_2_4"] is True
    assert layers["stem.0"]["nm_2_4"] is False
    assert "not a multiple of 4" in layers["stem.0"]["nm_reason"]
    assert made["nm"].sparsity["sparse_weights"] is True


def test_bench_checks_reference_and_compares(bundles) -> None:
    root, _ = bundles
    record = run_bench(BenchRequest([root / "channel"], root / "dense", (1, 4), QUICK))
    channel = record.variant("channel")
    assert channel.reference_check is not None and channel.reference_check["passed"]
    assert set(channel.latency) == {"1", "4"}
    assert channel.comparison is not None and channel.comparison["per_batch"]["4"]["measured_speedup"] > 0
    assert record.baseline is not None and record.baseline.comparison is None
    assert record.power is not None and record.power["energy_mj_per_inference"] is None and record.power["reason"]
    # The JSON form reads back as the same record (the report's and the agent's path).
    assert ResultRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


class NotDeterministic(nn.Module):
    """Exports fine but computes something else in PyTorch than in the graph (dropout in train)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + (torch.rand(1) if not torch.jit.is_tracing() else 0.0)


def test_parity_failure_writes_nothing(tmp_path) -> None:
    with pytest.raises(ExportError, match="differs from PyTorch"):
        package_model(
            NotDeterministic(), (4,), tmp_path / "b", name="x", spec="x", reference_inputs=np.ones((2, 4), np.float32)
        )
    assert not (tmp_path / "b").exists()


class ConstantSource:
    """A real power source that always reads 2 W on one rail (stands in for a board sensor)."""

    name, scope, rate_hz = "constant", "test rail", 100.0

    def rails(self) -> list[str]:
        return ["VDD_IN"]

    def total_rails(self) -> list[str]:
        return ["VDD_IN"]

    def read_mw(self) -> dict[str, float]:
        return {"VDD_IN": 2000.0, "total": 2000.0}

    def close(self) -> None:
        pass


def test_energy_per_inference_with_a_sensor(bundles) -> None:
    root, _ = bundles
    request = BenchRequest(
        [root / "channel"], None, (1,), QUICK, BenchOptions(idle_s=0.6, energy_s=0.6), ConstantSource()
    )  # several 10 Hz samples inside each window, even under load
    record = run_bench(request)
    assert record.variants[0].energy is not None and record.power is not None
    energy = record.variants[0].energy["1"]
    assert record.power["source"] == "constant"
    # Constant 2 W: gross energy per inference is 2000 mW * window / inferences; net is ~0.
    assert energy["energy_mj_per_inference"] > 0
    assert abs(energy["energy_mj_per_inference_net"]) < 0.05 * energy["energy_mj_per_inference"]
    assert energy["counter_energy_mj_per_inference"] is None  # this source has no energy counter


class CountingSource(ConstantSource):
    """2 W, plus a cumulative energy counter in mJ (as NVML keeps on Volta and newer GPUs)."""

    name = "counting"

    def read_energy_mj(self) -> float:
        return 2000.0 * time.monotonic()


def test_energy_counter_is_kept_beside_the_sampled_figure(bundles) -> None:
    root, _ = bundles
    request = BenchRequest(
        [root / "channel"], None, (1,), QUICK, BenchOptions(idle_s=0.6, energy_s=0.6), CountingSource()
    )
    energy = (run_bench(request).variants[0].energy or {})["1"]
    # Same 2 W seen two ways: the counter's difference and the integral of the samples agree.
    assert energy["counter_energy_mj_per_inference"] == pytest.approx(energy["energy_mj_per_inference"], rel=0.05)
