"""The device table: every figure sourced; headline figures as NVIDIA prints them; host calibration cached."""

from __future__ import annotations

import pytest

from edgeprune.analysis import devices
from edgeprune.analysis.devices import DEVICES, SOURCES, calibrate_host, get_device


def test_every_figure_has_a_source() -> None:
    for spec in DEVICES.values():
        figures = [*spec.peak_ops_per_s.values(), *spec.sparse_ops_per_s.values(), spec.memory_bytes_per_s]
        for figure in figures:
            assert figure.source in SOURCES, (spec.name, figure)
            assert figure.how
        assert set(spec.peak_ops_per_s) == {"fp32", "fp16", "int8"}
        assert spec.to_dict()["memory_bytes_per_s"]["source_text"]


@pytest.mark.parametrize(
    ("name", "precision", "sparse", "published"),
    [
        ("jetson-nano", "fp16", False, 472e9),  # "472 GFLOPS"
        ("jetson-tx2", "fp16", False, 1.33e12),  # "1.33 TFLOPS"
        ("jetson-agx-xavier", "fp16", False, 11e12),  # GPU "11 TFLOPS FP16"
        ("jetson-orin-nano", "int8", True, 40e12),  # "up to 40 (sparse) INT8 TOPs"
        ("jetson-orin-nano", "int8", False, 20e12),  # "and 20 (dense)"
        ("jetson-orin-nano-super", "int8", True, 67e12),  # "67 TOPS"
        ("jetson-orin-nx", "int8", True, 60e12),  # 100 TOPS module - 40 TOPS of DLAs
        ("jetson-agx-orin", "int8", True, 170e12),  # GPU "170 sparse TOPs INT8"
        ("jetson-agx-orin", "fp32", False, 5.3e12),
    ],
)
def test_headline_figures(name: str, precision: str, sparse: bool, published: float) -> None:
    assert get_device(name).peak(precision, sparse) == pytest.approx(published, rel=0.03)


def test_capabilities() -> None:
    assert get_device("jetson-nano").peak("int8") is None
    assert [n for n, s in DEVICES.items() if s.sparse_2_4_kernels] == [
        "jetson-orin-nano",
        "jetson-orin-nano-super",
        "jetson-orin-nx",
        "jetson-agx-orin",
    ]
    assert not any(s.unstructured_sparse_kernels for s in DEVICES.values())
    assert get_device("agx-orin").name == "jetson-agx-orin"


def test_host_calibration_is_measured_once_and_cached(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(devices, "measure_gemm_flop_per_s", lambda: calls.append("gemm") or 5e10)
    monkeypatch.setattr(devices, "measure_copy_bytes_per_s", lambda: calls.append("copy") or 1e10)
    first = calibrate_host()
    second = get_device("host-cpu")
    assert calls == ["gemm", "copy"]
    assert first.peak("fp32") == second.peak("fp32") == 5e10
    assert second.memory_bytes_per_s.value == 1e10
    assert second.peak("fp16") is None
    assert (tmp_path / "host-cpu-calibration.json").is_file()
    calibrate_host(refresh=True)
    assert len(calls) == 4


def test_real_calibration_is_plausible() -> None:
    flops = devices.measure_gemm_flop_per_s(size=256, repeats=2)
    copy = devices.measure_copy_bytes_per_s(mib=16, repeats=2)
    assert 1e8 < flops < 1e14
    assert 1e8 < copy < 1e13
