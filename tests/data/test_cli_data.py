"""The whole loop for a user's own model and data from the command line: prune, fine-tune, package, bench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file
from typer.testing import CliRunner

from edgeprune.cli.main import app
from edgeprune.train import TrainConfig, train
from tests.data.own import blobs, small_cnn, write_blobs

runner = CliRunner()
MODEL = "tests.data.own:small_cnn"
SHAPE = "1,8,8"


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained SmallCNN's weights and its npz data."""
    import torch

    root = tmp_path_factory.mktemp("own")
    data = write_blobs(root / "blobs.npz")
    x, y = blobs(256, 1)
    model = small_cnn()
    train(model, (torch.from_numpy(x), torch.from_numpy(y)), TrainConfig(epochs=15, batch_size=32, lr=0.05))
    weights = root / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {"root": root, "data": data, "weights": weights}


def _prune(own: dict[str, Path], out: Path, *extra: str) -> object:
    args = ["prune", MODEL, "--input-shape", SHAPE, "--weights", str(own["weights"]), "--out", str(out)]
    return runner.invoke(app, [*args, "--pattern", "channel", "--sparsity", "0.5", *extra])


@pytest.mark.trains
def test_own_model_with_npz_data_prunes_finetunes_packages_and_benches(own: dict[str, Path]) -> None:
    out = own["root"] / "pruned"
    result = _prune(own, out, "--data", f"npz:{own['data']}", "--finetune-epochs", "3", "--criterion", "taylor")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["data"] == f"npz:{own['data']}" and meta["input_shape"] == [1, 8, 8]
    assert meta["finetune"] == {"epochs": 3, "lr": 0.01, "batch_size": 32}
    # A separable task: the trained model is near perfect, and fine-tuning keeps most of it.
    assert meta["accuracy_unpruned"] >= 0.9 and meta["accuracy"] >= 0.6, meta
    assert "not fine-tuned" not in result.output and f"top-1 on npz:{own['data']}" in result.output

    bundles = {}
    for precision in ("fp32", "fp16", "int8"):
        bundle = own["root"] / f"b-{precision}"
        # --data defaults to what the folder was made with: calibration and accuracy come from it.
        result = runner.invoke(app, ["package", str(out), "--out", str(bundle), "--precision", precision])
        assert result.exit_code == 0, result.output
        manifest = json.loads((bundle / "manifest.json").read_text())
        model = manifest["model"]
        assert "this bundle's model.onnx on ONNX Runtime CPU, 128 held-out samples" in model["accuracy_source"]
        assert model["accuracy_pytorch"] == pytest.approx(meta["accuracy"])
        assert abs(model["accuracy"] - meta["accuracy"]) <= 0.1  # its own figure, near FP32's
        bundles[precision] = bundle
    calib = json.loads((bundles["int8"] / "manifest.json").read_text())["calibration"]
    assert calib["source"] == f"npz:{own['data']}" and calib["samples"] == 256
    dense = own["root"] / "b-dense"
    args = ["package", MODEL, "--input-shape", SHAPE, "--weights", str(own["weights"]), "--out", str(dense)]
    assert runner.invoke(app, [*args, "--data", f"npz:{own['data']}"]).exit_code == 0
    record = own["root"] / "bench.json"
    args = ["bench", str(bundles["fp32"]), "--baseline", str(dense), "--batch-sizes", "1", "--json", str(record)]
    result = runner.invoke(app, [*args, "--min-duration-s", "0.05", "--min-iterations", "5", "--no-power"])
    assert result.exit_code == 0, result.output
    assert json.loads(record.read_text())["kind"] == "edgeprune.result"


def test_without_finetuning_the_summary_says_so_with_the_measured_accuracy(own: dict[str, Path]) -> None:
    out = own["root"] / "raw"
    result = _prune(own, out, "--data", f"npz:{own['data']}")
    assert result.exit_code == 0, result.output
    assert "not fine-tuned" in result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["accuracy"] is not None and meta["finetuned"] is False and "finetune" not in meta
    bundle = own["root"] / "raw-bundle"
    result = runner.invoke(app, ["package", str(out), "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    assert json.loads((bundle / "manifest.json").read_text())["model"]["summary"]["finetuned"] is False
    record = own["root"] / "raw.json"
    args = ["bench", str(bundle), "--batch-sizes", "1", "--min-duration-s", "0.05", "--min-iterations", "5"]
    assert runner.invoke(app, [*args, "--no-power", "--json", str(record)]).exit_code == 0
    result = runner.invoke(app, ["report", str(record), "--out", str(own["root"] / "raw-report")])
    assert result.exit_code == 0, result.output
    assert "(not fine-tuned)" in result.output  # the report's table says so beside the accuracy
    assert "not fine-tuned" in (own["root"] / "raw-report" / "report.html").read_text()


def test_without_data_accuracy_is_null_with_the_reason(own: dict[str, Path]) -> None:
    out = own["root"] / "nodata"
    result = _prune(own, out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["accuracy"] is None and "no --data" in meta["accuracy_reason"]
    assert "accuracy: not measured" in result.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--finetune-epochs", "1"], "--finetune-epochs needs data: give --data"),
        (["--data", "npz:/no/such.npz"], "does not exist"),
        (["--data", "digits"], "shape [1, 32, 32], the model takes [1, 8, 8]"),
        (["--data", "bogus-spec"], "unknown data 'bogus-spec'"),
        (["--data", "npz:x.npz", "--mean", "0.5"], "give --mean and --std together"),
    ],
)
def test_bad_data_is_one_line_and_writes_nothing(own: dict[str, Path], extra: list[str], message: str) -> None:
    out = own["root"] / "never"
    result = _prune(own, out, *extra)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()


def test_a_factory_model_without_input_shape_asks_for_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["prune", MODEL, "--sparsity", "0.5", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "give --input-shape C,H,W" in result.output


@pytest.mark.trains
@pytest.mark.parametrize(
    "extra, check",
    [
        (["--selector", "omp", "--calib-samples", "64"], lambda s: s["selector"] == "omp"),
        (["--regularize", "group-lasso", "--reg-epochs", "1"], lambda s: s["regularization"]["kind"] == "group-lasso"),
        (["--schedule", "gradual", "--steps", "2", "--step-epochs", "1"], lambda s: len(s["schedule"]["history"]) == 2),
    ],
)
def test_every_data_aware_method_works_for_an_own_model(own: dict[str, Path], extra: list[str], check: object) -> None:
    out = own["root"] / f"m-{extra[1]}"
    result = _prune(own, out, "--data", f"npz:{own['data']}", *extra)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert check(meta["summary"]) and meta["accuracy"] is not None  # type: ignore[operator]


def test_sensitivity_and_a_pruned_folder_reuse_the_data_it_was_made_with(own: dict[str, Path]) -> None:
    first = own["root"] / "first"
    plot = own["root"] / "sens.png"
    result = _prune(own, first, "--data", f"npz:{own['data']}", "--sensitivity", str(plot))
    assert result.exit_code == 0, result.output
    assert plot.is_file() and "| conv+dw |" in plot.with_suffix(".md").read_text()  # the depthwise conv is coupled
    second = own["root"] / "second"
    # A pruned folder as MODEL: no --data, no --input-shape; the folder says both.
    args = ["prune", str(first), "--pattern", "unstructured", "--sparsity", "0.5", "--finetune-epochs", "1"]
    result = runner.invoke(app, [*args, "--out", str(second)])
    assert result.exit_code == 0, result.output
    meta = json.loads((second / "model.json").read_text())
    assert meta["data"] == f"npz:{own['data']}" and meta["finetuned"] is True and meta["input_shape"] == [1, 8, 8]
    from edgeprune.models.spec import load_model

    # The folder replays both steps (channels, then masks) from the original model.
    again = load_model(str(second)).model
    assert again.pw.out_channels == load_model(str(first)).model.pw.out_channels < 32


def test_channels_on_top_of_masks_is_refused_in_one_line(own: dict[str, Path]) -> None:
    masked = own["root"] / "masked"
    args = ["prune", MODEL, "--input-shape", SHAPE, "--weights", str(own["weights"]), "--out", str(masked)]
    assert runner.invoke(app, [*args, "--pattern", "unstructured", "--sparsity", "0.5"]).exit_code == 0
    out = own["root"] / "never-channels"
    result = runner.invoke(app, ["prune", str(masked), "--sparsity", "0.5", "--out", str(out)])
    assert result.exit_code == 2 and "prune channels first, then apply a mask pattern" in result.output
    assert not out.exists()
