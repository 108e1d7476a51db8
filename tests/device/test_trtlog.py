"""The TensorRT log parsers against real recorded output (tests/fixtures/trt, sources in SOURCES.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeprune.device.engine.logs import (
    SPARSE_TACTIC_HEURISTIC,
    SparsityReport,
    decode_version_tag,
    looks_sparse,
    parse_engine_info,
    parse_layer_info,
    parse_layer_profile,
    parse_sparsity,
    parse_trtexec,
    strip_log_prefix,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trt"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# -- prefixes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "level", "content"),
    [
        ("[09/16/2022-09:55:37] [I] [TRT] (Sparsity) x", "I", "(Sparsity) x"),
        ("[TensorRT] INFO: (Sparsity) x", "I", "(Sparsity) x"),
        ("[01/01/2022-16:13:59] [W]   If not already in use", "W", "If not already in use"),
        ("[05/13/2025-10:36:46] [TRT] [E] boom", "E", "boom"),
        ("Throughput: 1.55139 qps", None, "Throughput: 1.55139 qps"),
        ("Mul_139, MatMul_149", None, "Mul_139, MatMul_149"),
    ],
)
def test_strip_log_prefix(line: str, level: str | None, content: str) -> None:
    got_level, got_content, _ = strip_log_prefix(line)
    assert (got_level, got_content) == (level, content)


# -- sparsity report -------------------------------------------------------------------------------


def test_sparsity_1_both_lists_empty_but_reported() -> None:
    report = parse_sparsity(fixture("sparsity-1.log"))
    assert report.reported is True
    assert len(report.eligible) == 0
    assert len(report.picked) == 0
    assert report.not_picked == []


def test_sparsity_2_joins_the_terminal_wrapped_list() -> None:
    report = parse_sparsity(fixture("sparsity-2.log"))
    assert report.reported
    assert len(report.eligible) == 50
    assert report.eligible[0] == "Conv_22"
    assert report.eligible[-1] == "Gemm_725"
    # The terminal wrapped "Mat" / "Mul_139" (and three more) mid-name: joined, not split in two.
    for name in ("MatMul_139", "MatMul_317", "MatMul_499", "MatMul_685"):
        assert name in report.eligible
    assert not {"Mat", "Mul_139"} & set(report.eligible)
    assert all(name.startswith(("MatMul_", "Conv_", "Gemm_")) for name in report.eligible)
    assert report.picked == []
    assert report.not_picked == report.eligible


def test_sparsity_3_python_logger_format() -> None:
    report = parse_sparsity(fixture("sparsity-3.log"))
    assert report.eligible == ["Conv_0"]
    assert report.picked == []
    assert report.not_picked == ["Conv_0"]


def test_sparsity_4_the_documented_non_empty_picked_list() -> None:
    report = parse_sparsity(fixture("sparsity-4.log"))
    assert report.eligible == ["conv1", "conv2", "conv3"]
    assert report.picked == ["conv2", "conv3"]
    assert report.not_picked == ["conv1"]


def test_sparsity_absent_is_not_the_same_as_empty() -> None:
    report = parse_sparsity(fixture("trtexec-summary-2.log"))
    assert report == SparsityReport()
    assert report.reported is False


def test_sparsity_last_report_wins_and_round_trips() -> None:
    text = fixture("sparsity-3.log") + fixture("sparsity-4.log")
    report = parse_sparsity(text)
    assert report.picked == ["conv2", "conv3"]
    assert SparsityReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


# -- trtexec summary -------------------------------------------------------------------------------


def test_trtexec_summary_1_orin_verbose() -> None:
    summary = parse_trtexec(fixture("trtexec-summary-1.log"))
    assert summary.throughput_qps == 52765.3
    assert summary.gpu_compute is not None and summary.latency is not None
    assert summary.gpu_compute.median_ms == 0.0179443
    assert summary.gpu_compute.min_ms == 0.0175781
    assert summary.gpu_compute.max_ms == 0.0403442
    assert summary.gpu_compute.mean_ms == 0.0179435
    assert summary.gpu_compute.percentiles_ms == {"p90": 0.0181274, "p95": 0.0181885, "p99": 0.0183105}
    assert summary.latency.p99_ms == 0.0183105
    assert summary.enqueue is not None and summary.enqueue.median_ms == 0.00363159
    # --noDataTransfers: the copies are zero, not missing.
    assert summary.h2d is not None and summary.h2d.mean_ms == 0.0
    assert summary.d2h is not None and summary.d2h.p95_ms == 0.0
    assert summary.total_host_walltime_s == 3.00004
    assert summary.total_gpu_compute_time_s == 2.84043
    assert [w.kind for w in summary.warnings] == ["unstable"]
    assert summary.cov_percent == 1.45766
    assert "locking GPU clock frequency" in summary.warnings[0].text
    assert summary.unstable is True
    # No "&&&&" line and no version header in this excerpt: unknown, not guessed.
    assert summary.trt_version is None and summary.command is None and summary.status is None


def test_trtexec_summary_2_transfer_bound_warnings_and_version() -> None:
    summary = parse_trtexec(fixture("trtexec-summary-2.log"))
    assert summary.throughput_qps == 74.8273
    assert summary.h2d is not None and summary.h2d.median_ms == 6.22552
    assert summary.d2h is not None and summary.d2h.median_ms == 6.21509
    assert summary.gpu_compute is not None and summary.gpu_compute.median_ms == 0.453613
    assert summary.total_gpu_compute_time_s == 0.103204
    assert [w.kind for w in summary.warnings] == ["h2d_bound", "d2h_bound", "unstable"]
    assert summary.cov_percent == 3.08398
    assert summary.trt_version == "8.5.10"
    assert summary.status == "PASSED"
    assert summary.command == "trtexec --onnx=./identity.onnx --plugins=./libplugin_custom.so --verbose"


def test_trtexec_summary_3_jetson_xavier_p99_only() -> None:
    summary = parse_trtexec(fixture("trtexec-summary-3.log"))
    assert summary.throughput_qps == 41087.7
    assert summary.latency is not None
    assert summary.latency.percentiles_ms == {"p99": 0.420288}
    assert summary.latency.p90_ms is None
    assert summary.gpu_compute is not None and summary.gpu_compute.median_ms == 0.388443
    assert summary.warnings == [] and summary.unstable is False
    assert summary.trt_version == "8.4.0"
    assert summary.command == "trtexec --loadEngine=mnist16.trt --batch=16"


def test_trtexec_summary_4_cut_after_totals() -> None:
    summary = parse_trtexec(fixture("trtexec-summary-4.log"))
    assert summary.throughput_qps == 130.298
    assert summary.latency is not None and summary.latency.p95_ms == 10.8698
    assert summary.gpu_compute is not None and summary.gpu_compute.median_ms == 7.14139
    assert summary.total_host_walltime_s == 3.00082
    assert summary.total_gpu_compute_time_s == 2.96536
    assert summary.trt_version is None


def test_trtexec_summary_5_jetpack6_trt_10_3() -> None:
    summary = parse_trtexec(fixture("trtexec-summary-5.log"))
    assert summary.throughput_qps == 318.007
    assert summary.gpu_compute is not None and summary.gpu_compute.median_ms == 3.14062
    assert summary.trt_version == "10.3.0"
    assert summary.command is not None and summary.command.endswith("--fp16 --noDataTransfers --iterations=2")


def test_trtexec_summary_6_prefixes_stripped_by_the_user() -> None:
    summary = parse_trtexec(fixture("trtexec-summary-6.log"))
    assert summary.throughput_qps == 1.55139
    assert summary.latency is not None and summary.latency.median_ms == 640.024
    assert summary.latency.p99_ms == 684.747
    assert summary.gpu_compute is None and summary.enqueue is None
    assert summary.total_host_walltime_s is None


def test_trtexec_summary_7_trt8_throughput_and_latency_only() -> None:
    summary = parse_trtexec(fixture("trtexec-summary-7.log"))
    assert summary.throughput_qps == 501.618
    assert summary.latency is not None and summary.latency.median_ms == 2.02905
    assert summary.latency.percentiles_ms == {"p99": 2.29761}
    assert summary.h2d is None and summary.total_gpu_compute_time_s is None


def test_trtexec_summary_is_json_ready() -> None:
    data = json.loads(json.dumps(parse_trtexec(fixture("trtexec-summary-2.log")).to_dict()))
    assert data["gpu_compute"]["percentiles_ms"]["p95"] == 0.474121
    assert data["unstable"] is True


def test_empty_text_gives_all_none() -> None:
    summary = parse_trtexec("")
    assert summary.throughput_qps is None and summary.latency is None and summary.unstable is None


@pytest.mark.parametrize(
    ("tag", "version"),
    [("8510", "8.5.10"), ("8400", "8.4.0"), ("8402", "8.4.2"), ("100300", "10.3.0"), ("101303", "10.13.3")],
)
def test_decode_version_tag(tag: str, version: str) -> None:
    assert decode_version_tag(tag) == version


def test_units_other_than_ms_are_converted() -> None:
    summary = parse_trtexec("[I] GPU Compute Time: min = 500 us, max = 0.002 s, mean = 1 ms, median = 1 ms\n")
    assert summary.gpu_compute is not None
    assert summary.gpu_compute.min_ms == pytest.approx(0.5)
    assert summary.gpu_compute.max_ms == pytest.approx(2.0)


# -- engine inspector JSON -------------------------------------------------------------------------
# No engine-inspector output was recorded in the fixture set, so these samples are constructed from
# the documented schema (TensorRT 10 "Bindings" vs TensorRT 11 "I/O Tensors" objects).

_LAYERS = [
    {
        "Name": "/conv1/Conv + /relu/Relu",
        "LayerType": "CaskConvolution",
        "TacticName": "sm80_xmma_fprop_sparse_conv_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32",
        "TacticValue": "0x1234",
    },
    {
        "Name": "/fc/Gemm",
        "LayerType": "CaskGemmMatrixMultiply",
        "TacticName": "sm80_xmma_gemm_f16f16",
        "TacticValue": 7,
    },
    {"Name": "reformat", "LayerType": "Reformat", "TacticName": ""},
]


def test_engine_info_trt10_bindings() -> None:
    info = parse_engine_info(json.dumps({"Layers": _LAYERS, "Bindings": ["input", "logits"]}))
    assert info.io_tensors == ["input", "logits"]
    assert [layer.name for layer in info.layers] == ["/conv1/Conv + /relu/Relu", "/fc/Gemm", "reformat"]
    assert [layer.looks_sparse_heuristic for layer in info.layers] == [True, False, False]
    assert info.layers[1].tactic_value == "7"
    assert info.layers[2].tactic_name is None


def test_engine_info_trt11_io_tensor_objects() -> None:
    io = [
        {"Name": "input", "IOMode": "Input", "DataType": "Float", "Dimensions": [1, 1, 32, 32]},
        {"Name": "logits", "IOMode": "Output", "DataType": "Float", "Dimensions": [1, 10]},
    ]
    info = parse_engine_info(json.dumps({"Layers": _LAYERS, "I/O Tensors": io}))
    assert info.io_tensors == ["input", "logits"]
    assert len(info.layers) == 3


def test_layer_info_names_only_list_and_single_layer() -> None:
    names_only = parse_layer_info(json.dumps({"Layers": ["a", "b"], "Bindings": []}))
    assert [(layer.name, layer.tactic_name) for layer in names_only] == [("a", None), ("b", None)]
    single = parse_layer_info(json.dumps(_LAYERS[0]))
    assert single[0].layer_type == "CaskConvolution" and single[0].looks_sparse_heuristic
    assert len(parse_layer_info(json.dumps(_LAYERS))) == 3


def test_layer_info_rejects_non_json() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_layer_info("Layers: nope")


def test_sparse_heuristic_is_labelled() -> None:
    assert looks_sparse("sm86_xmma_fprop_conv_sptensor_f16")
    assert not looks_sparse(None)
    assert "heuristic" in SPARSE_TACTIC_HEURISTIC


def test_layer_profile() -> None:
    text = json.dumps(
        [
            {"count": 120},
            {"name": "/conv1/Conv", "timeMs": 12.0, "averageMs": 0.1, "medianMs": 0.1, "percentage": 60.0},
            {"name": "/fc/Gemm", "timeMs": 8.0, "averageMs": 0.0667, "medianMs": 0.066, "percentage": 40.0},
        ]
    )
    times = parse_layer_profile(text)
    assert [t.name for t in times] == ["/conv1/Conv", "/fc/Gemm"]
    assert times[0].percentage == 60.0
