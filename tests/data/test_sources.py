"""Data specs: every form resolves to batches of the right shape, read on demand; bad specs are one line."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from edgeprune.data import Task, resolve_data
from edgeprune.data.arrays import read_idx
from edgeprune.errors import UsageError


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (MNIST's format), gzipped when the name ends in .gz."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def tiny_fashion(folder: Path, train: int = 12, test: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (train, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, train),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), gz=st.booleans())
def test_idx_round_trips_any_shape(tmp_path_factory: pytest.TempPathFactory, shape: list[int], gz: bool) -> None:
    folder = tmp_path_factory.mktemp("idx")
    array = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    path = folder / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    loaded = read_idx(path)
    assert isinstance(loaded, np.memmap)  # mapped from disk, not read into memory
    np.testing.assert_array_equal(loaded, array)


def test_fashion_mnist_reads_the_four_gzipped_files(tmp_path: Path) -> None:
    arrays = tiny_fashion(tmp_path / "fm")
    task = resolve_data(f"fashion-mnist:{tmp_path / 'fm'}")
    assert task.name == f"fashion-mnist:{tmp_path / 'fm'}" and len(task.train) == 12 and len(task.val) == 6
    x, y = task.train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    expected = (arrays["train-images-idx3-ubyte.gz"][3] / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(x[0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert int(y) == arrays["train-labels-idx1-ubyte.gz"][3]
    assert task.preprocessing["mean"] == 0.2860 and task.preprocessing["normalization"]
    xb, yb = next(iter(task.batches("val", batch_size=4)))
    assert xb.shape == (4, 1, 28, 28) and yb.shape == (4,)
    given_norm = resolve_data(f"fashion-mnist:{tmp_path / 'fm'}", mean=[0.5], std=[0.5])
    assert given_norm.preprocessing["normalization"] == "given"


def test_missing_fashion_mnist_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeprune.data import sources

    monkeypatch.setattr(sources, "FASHION_DIR", tmp_path / "not-installed")
    with pytest.raises(UsageError, match="install it with `apt-get install dataset-fashion-mnist`"):
        resolve_data("fashion-mnist")
    with pytest.raises(UsageError, match=r"not found in .*nothing \(missing train-images"):
        resolve_data(f"fashion-mnist:{tmp_path / 'nothing'}")


def test_npz_with_and_without_a_validation_split(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((20, 2, 4, 4)).astype(np.float32)
    y = np.arange(20) % 3
    np.savez_compressed(tmp_path / "d.npz", x_train=x, y_train=y, x_val=x[:5], y_val=y[:5])
    task = resolve_data(f"npz:{tmp_path / 'd.npz'}")
    assert len(task.train) == 20 and len(task.val) == 5
    torch.testing.assert_close(task.train[7][0], torch.from_numpy(x[7]))
    np.savez(tmp_path / "e.npz", x_train=x, y_train=y)
    held = resolve_data(f"npz:{tmp_path / 'e.npz'}")
    assert len(held.train) == 18 and len(held.val) == 2 and "held out" in held.preprocessing["val"]
    train_idx = set(held.train.indices)
    assert not train_idx & set(held.val.indices)  # disjoint


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((2, 1))}, "needs arrays x_train and y_train"),
        ({"x_train": np.zeros((2, 1)), "y_train": np.zeros(2)}, "integer labels"),
        ({"x_train": np.zeros((2, 1)), "y_train": np.zeros(2, int), "x_val": np.zeros((1, 1))}, "together"),
    ],
)
def test_bad_npz_is_one_line(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UsageError, match=message):
        resolve_data(f"npz:{tmp_path / 'bad.npz'}")


def test_image_folder_resizes_and_says_which_normalization(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for label, color in (("cat", 40), ("dog", 200)):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20 + i, 17), (color, color // 2, 255 - color)).save(folder / f"{i}.png")
    task = resolve_data(f"imagefolder:{tmp_path / 'train'},{tmp_path / 'val'}", (3, 8, 8))
    x, y = task.train[0]
    assert x.shape == (3, 8, 8) and int(y) == 0 and len(task.val) == 6
    assert "estimated on 6 training images" in task.preprocessing["normalization"]
    assert task.preprocessing["classes"] == ["cat", "dog"]
    grey = resolve_data(f"imagefolder:{tmp_path / 'train'}", (1, 5, 5), mean=[0.5], std=[0.25])
    assert grey.train[0][0].shape == (1, 5, 5) and grey.preprocessing["normalization"] == "given"
    with pytest.raises(UsageError, match="does not exist"):
        resolve_data(f"imagefolder:{tmp_path / 'nope'}", (3, 8, 8))


def make_task() -> tuple[TensorDataset, TensorDataset]:
    """A data factory for the tests: ``tests.data.test_sources:make_task``."""
    x = torch.randn(8, 1, 4, 4)
    y = torch.arange(8) % 2
    return TensorDataset(x, y), TensorDataset(x[:4], y[:4])


def make_dict() -> dict[str, object]:
    train, val = make_task()
    return {"train": train, "val": val, "metric_name": "hits"}


def make_wrong() -> int:
    return 3


def test_a_factory_returns_datasets_a_dict_or_a_task() -> None:
    task = resolve_data("tests.data.test_sources:make_task")
    assert isinstance(task, Task) and len(task.train) == 8 and task.metric_name == "top-1"
    assert resolve_data("tests.data.test_sources:make_dict").metric_name == "hits"
    with pytest.raises(UsageError, match="must return"):
        resolve_data("tests.data.test_sources:make_wrong")
    with pytest.raises(UsageError, match="cannot import data factory"):
        resolve_data("tests.data.nothing_here:make")


@pytest.mark.parametrize("spec", ["nonsense", "npz:", "imagefolder:", "mnist"])
def test_unknown_specs_say_what_is_accepted(spec: str) -> None:
    with pytest.raises(UsageError):
        resolve_data(spec, (1, 4, 4))


def test_shape_mismatch_is_caught_before_any_work() -> None:
    task = resolve_data("tests.data.test_sources:make_task")
    task.check_shape((1, 4, 4))
    with pytest.raises(UsageError, match=r"shape \[1, 4, 4\], the model takes \[3, 4, 4\]"):
        task.check_shape((3, 4, 4))


def test_sample_is_seeded_and_in_file_order() -> None:
    task = resolve_data("tests.data.test_sources:make_task")
    a, _ = task.sample(3, seed=1)
    b, _ = task.sample(3, seed=1)
    torch.testing.assert_close(a, b)
    assert task.sample(100)[0].shape[0] == 8
