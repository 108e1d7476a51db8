"""The measured side: ORT profiler attribution, TensorRT profile attribution, per-layer gap rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.analysis.profile import (
    OTHER,
    LayerProfile,
    Profile,
    attribute_trt_profile,
    explain_gap,
    gap_rows,
    index_graph,
    module_path,
    profile_models,
)
from edgeprune.device.engine.logs import parse_layer_profile
from edgeprune.models.digits import INPUT_SHAPE, DigitsResNet

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    ("node", "path"),
    [
        ("/layer1/conv1/Conv", "layer1.conv1"),
        ("/stem/stem.0/Conv", "stem.0"),
        ("/layer2/shortcut/shortcut.0/Conv", "layer2.shortcut.0"),
        ("/layer1/layer1.0/downsample/downsample.0/Conv", "layer1.0.downsample.0"),
        ("/model.2/m.0/cv1/conv/Conv", "model.2.m.0.cv1.conv"),
        ("/fc/Gemm", "fc"),
        ("Conv_0", None),
    ],
)
def test_module_path(node: str, path: str | None) -> None:
    assert module_path(node) == path


def test_trt_profile_scoped_names() -> None:
    profile = attribute_trt_profile(parse_layer_profile((FIXTURES / "trt-profile-yolo.json").read_text()))
    layers = profile.by_name()
    assert set(layers) == {
        "model.0.conv",
        "model.1.conv",
        "model.2.cv1.conv",
        "model.2.m.0.cv1.conv",
        "model.2.m.0.cv2.conv",
        OTHER,
    }
    assert layers["model.1.conv"].time_ms == pytest.approx(0.057344)
    # Reformatting copies, the standalone PWN activation, Slice and copies are not a layer's.
    assert layers[OTHER].time_ms == pytest.approx(0.029696 + 0.044032 + 0.014336 + 0.025664 + 0.023488)
    assert sum(profile.time_shares().values()) == pytest.approx(1.0)


def test_trt_profile_median_and_fusions() -> None:
    cbr = attribute_trt_profile(parse_layer_profile((FIXTURES / "trt-profile-cbr.json").read_text()))
    assert [(lp.name, lp.time_ms) for lp in cbr.layers] == [("conv1", 0.027872)]  # medianMs preferred
    legacy = attribute_trt_profile(parse_layer_profile((FIXTURES / "trt-profile-legacy.json").read_text()))
    layers = legacy.by_name()
    assert layers["Conv_26"].time_ms == pytest.approx(0.0684441)  # unscoped names keep the node name
    merged = [f"Conv_{i}" for i in (171, 178, 181, 184, 187, 190, 193, 196)]
    assert all(layers[name].time_ms == pytest.approx(1.61478 / 8) for name in merged)
    assert layers[OTHER].time_ms == pytest.approx(0.058695 + 0.00943995 + 0.00951829 + 0.00770104)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from edgeprune.analysis.cost import model_cost
    from edgeprune.export.package import package_model
    from edgeprune.prune.patterns import make_masks

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("bundles")
    dense = DigitsResNet().eval()
    base_cost = model_cost(dense, INPUT_SHAPE)
    sparse = DigitsResNet().eval()
    sparse.load_state_dict(dense.state_dict())
    masks, _ = make_masks(sparse, "unstructured", 0.5)
    with torch.no_grad():
        for name, module in sparse.named_modules():
            if name in masks:
                module.weight.mul_(masks[name])
    models = {
        "dense": (dense, "dense"),
        "unstructured": (sparse, "unstructured"),
        "channel": (DigitsResNet((8, 16, 32)).eval(), "channel"),
    }
    out = {}
    for name, (model, pattern) in models.items():
        package_model(
            model,
            INPUT_SHAPE,
            root / name,
            name=name,
            spec="digits-resnet",
            pattern=pattern,
            baseline_cost=base_cost,
            batch_sizes=(1,),
        )
        out[name] = root / name
    return out


def test_ort_attribution_covers_every_layer(bundles) -> None:
    import onnx

    path = bundles["dense"] / "model.onnx"
    index = index_graph(onnx.load(str(path)))
    assert sum(index.macs_per_sample.values()) == 12_206_720  # the cost model's count
    profile = profile_models(
        {"d": path}, {"d": {"input": np.zeros((2, *INPUT_SHAPE), np.float32)}}, runs=10, warmup_runs=2
    )["d"]
    names = {lp.name for lp in profile.layers}
    expected = {
        "stem.0",
        "layer1.conv1",
        "layer1.conv2",
        "layer2.conv1",
        "layer2.conv2",
        "layer2.shortcut.0",
        "layer3.conv1",
        "layer3.conv2",
        "layer3.shortcut.0",
        "fc",
    }
    assert names == expected | {OTHER}
    assert profile.runs == 10 and profile.batch_size == 2
    assert sum(profile.time_shares().values()) == pytest.approx(1.0)


def test_unstructured_does_not_reach_its_theory_on_cpu(bundles) -> None:
    rows = explain_gap(bundles["dense"], bundles["unstructured"], batch_size=1, runs=30)
    by_name = {row["name"]: row for row in rows}
    assert rows[-1]["name"] == OTHER
    for name in ("layer1.conv1", "layer1.conv2", "layer2.conv2", "layer3.conv2"):
        row = by_name[name]
        assert row["theoretical_speedup"] == pytest.approx(2.0, rel=0.02)
        assert row["kernel_aware_speedup"] == pytest.approx(1.0)
        assert row["reached"] is False
        assert "zeros are still multiplied" in row["reason"]
    assert sum(row["time_share"] for row in rows) == pytest.approx(1.0)
    assert {"name", "time_share", "theoretical_speedup", "measured_speedup", "reached"} <= set(rows[0])


def test_channel_pruned_rows(bundles) -> None:
    rows = explain_gap(bundles["dense"], bundles["channel"], batch_size=1, runs=30)
    by_name = {row["name"]: row for row in rows}
    assert by_name["layer1.conv1"]["theoretical_speedup"] == pytest.approx(4.0)
    assert by_name["layer1.conv1"]["kernel_aware_speedup"] == pytest.approx(4.0)
    assert all(row["measured_speedup"] > 0 for row in rows)


def _profile(times: dict[str, float]) -> Profile:
    return Profile([LayerProfile(name, ms) for name, ms in times.items()], runs=10, batch_size=1, source="test")


def test_gap_rows_reasons() -> None:
    base = _profile({"a": 1.0, "b": 1.0, "c": 0.05, OTHER: 0.5})
    variant = _profile({"a": 0.5, "b": 0.9, "c": 0.015, OTHER: 0.5})
    rows = gap_rows(
        base,
        variant,
        {"a": 100, "b": 100, "c": 10},
        {"a": 50, "b": 25, "c": 2},
        variant_channels={"a": (8, 8), "b": (12, 20), "c": (8, 8)},
    )
    by_name = {row["name"]: row for row in rows}
    assert by_name["a"]["reached"] and by_name["a"]["reason"] == "reached"
    assert not by_name["b"]["reached"] and "not multiples of 8" in by_name["b"]["reason"]
    assert not by_name["c"]["reached"] and "overhead" in by_name["c"]["reason"]
    assert by_name[OTHER]["reached"] and by_name[OTHER]["theoretical_speedup"] == 1.0
    assert by_name["a"]["time_share"] == pytest.approx(1.0 / 2.55)


def test_only_widths_changed_by_pruning_are_called_misaligned() -> None:
    base = _profile({"head": 1.0, "stem": 1.0})
    variant = _profile({"head": 1.0, "stem": 1.0})
    rows = gap_rows(
        base,
        variant,
        {"head": 640, "stem": 100},
        {"head": 480, "stem": 50},
        variant_channels={"head": (48, 10), "stem": (3, 12)},
        baseline_channels={"head": (64, 10), "stem": (3, 24)},
        input_channels=3,
    )
    by_name = {row["name"]: row for row in rows}
    assert "not multiples of 8" not in by_name["head"]["reason"]  # 48 is aligned, 10 is the task's
    assert "channels 3->12" in by_name["stem"]["reason"]  # 12 came from pruning; 3 is the image's
