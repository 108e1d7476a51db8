"""Calibration sets: .npz and image-folder loading, their errors, the committed digits set, the scripts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from edgeprune.errors import UsageError
from edgeprune.export import calibration as cal

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (1, 8, 8)


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "calibration" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 10), (255, 255, 255)).save(folder / "white.png")
    Image.new("L", (8, 8), 0).save(folder / "sub" / "black.jpg")
    for i in range(3):
        Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(folder / f"grey{i}.bmp")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_npz_single_array_any_name(tmp_path: Path) -> None:
    data = np.random.default_rng(0).standard_normal((20, *SHAPE)).astype(np.float32)
    np.savez(tmp_path / "c.npz", whatever=data)
    loaded = cal.load_calibration(tmp_path / "c.npz", "input", SHAPE, samples=None)
    assert loaded.kind == "npz" and loaded.samples == 20 and np.array_equal(loaded.data, data)
    sub = cal.load_npz(tmp_path / "c.npz", "input", SHAPE, samples=5, seed=3)
    again = cal.load_npz(tmp_path / "c.npz", "input", SHAPE, samples=5, seed=3)
    assert sub.samples == 5 and sub.available == 20 and np.array_equal(sub.data, again.data)
    assert sub.sha256() == again.sha256() and sub.record()["samples"] == 5


def test_npz_prefers_the_input_name(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", input=np.zeros((4, *SHAPE), np.float32), labels=np.arange(4))
    assert cal.load_npz(tmp_path / "c.npz", "input", SHAPE).samples == 4


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"a": np.zeros((4, *SHAPE), np.float32), "b": np.zeros(3)}, "holds arrays"),
        ({"input": np.zeros((4, 3, 8, 8), np.float32)}, r"shape \(4, 3, 8, 8\); the model needs \[N, 1, 8, 8\]"),
        ({"input": np.zeros((4, *SHAPE), np.uint8)}, "must be preprocessed floats"),
        ({"input": np.full((4, *SHAPE), np.nan, np.float32)}, "NaN or infinite"),
        ({"input": np.zeros((0, *SHAPE), np.float32)}, "holds no samples"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(UsageError, match=match):
        cal.load_npz(tmp_path / "c.npz", "input", SHAPE)


def test_unreadable_or_missing_npz(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="cannot read calibration file"):
        cal.load_calibration(tmp_path / "bad.npz", "input", SHAPE)
    with pytest.raises(UsageError, match="does not exist"):
        cal.load_calibration(tmp_path / "nothing", "input", SHAPE)


def test_image_folder(images: Path) -> None:
    loaded = cal.load_image_folder(images, SHAPE, samples=None)
    assert loaded.data.shape == (5, *SHAPE) and loaded.data.dtype == np.float32
    assert loaded.available == 6 and loaded.skipped == {"count": 1, "first": ["broken.png"]}
    # Grey scale, [0, 1], then (x - 0.5) / 0.5: white is +1 and black is -1 everywhere.
    assert np.isclose(loaded.data.max(), 1.0) and np.isclose(loaded.data.min(), -1.0)
    assert loaded.preprocessing["color"] == "L" and loaded.record()["skipped"]["count"] == 1
    rgb = cal.load_image_folder(images, (3, 4, 6), samples=2, seed=1)
    assert rgb.data.shape == (2, 3, 4, 6) and rgb.preprocessing["mean"] == list(cal.IMAGENET_MEAN)


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(UsageError, match="holds no images"):
        cal.load_calibration(tmp_path / "empty", "input", SHAPE)


def test_folder_of_unreadable_images(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"nope")
    with pytest.raises(UsageError, match="none of the 1 image files"):
        cal.load_image_folder(tmp_path / "bad", SHAPE)


def test_folder_needs_an_image_model(images: Path) -> None:
    with pytest.raises(UsageError, match="image models"):
        cal.load_image_folder(images, (16,))


def test_committed_digits_set_is_small_and_reproducible() -> None:
    path = ROOT / "calibration" / "digits.npz"
    assert path.stat().st_size < 1.5e6
    with np.load(path, allow_pickle=False) as npz:
        x, y = npz["input"], npz["labels"]
    assert x.shape == (256, 1, 32, 32) and x.dtype == np.float32 and y.shape == (256,)
    rebuilt_x, rebuilt_y = cal.make_digits_calibration()
    np.testing.assert_array_equal(rebuilt_y, y)
    np.testing.assert_allclose(rebuilt_x, x, atol=1e-6)
    builtin = cal.digits_calibration((1, 32, 32), samples=64)
    assert builtin.kind == "digits" and builtin.samples == 64 and builtin.available == 256


def test_prepare_images_script(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "c.npz"
    assert script("prepare_images").main([str(images), "--out", str(out), "--size", "8", "--channels", "1"]) == 0
    assert cal.load_npz(out, "input", SHAPE).samples == 5
    assert "skipped 1 unreadable" in capsys.readouterr().out
    (tmp_path / "none").mkdir()
    assert script("prepare_images").main([str(tmp_path / "none"), "--out", str(tmp_path / "n.npz")]) == 2
    assert "holds no images" in capsys.readouterr().err and not (tmp_path / "n.npz").exists()


def test_prepare_digits_script(tmp_path: Path) -> None:
    out = tmp_path / "d.npz"
    assert script("prepare_digits").main(["--out", str(out), "--samples", "16"]) == 0
    with np.load(out) as npz:
        assert npz["input"].shape == (16, 1, 32, 32) and npz["labels"].shape == (16,)
