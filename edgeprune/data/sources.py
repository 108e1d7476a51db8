"""The data specs (``--data``) and what each resolves to.

* ``digits``: scikit-learn's digits, upsampled to 32x32 (built in; see :mod:`edgeprune.data.digits`);
* ``fashion-mnist[:DIR]``: the four gzipped IDX files of Fashion-MNIST (60k/10k, 28x28 grey, 10
  classes), read where they are; no download. Default DIR: where Debian's
  ``dataset-fashion-mnist`` package puts them;
* ``imagefolder:TRAIN_DIR[,VAL_DIR]``: one subfolder per class (torchvision's ``ImageFolder``),
  resized to the model's input and normalized;
* ``npz:FILE``: arrays ``x_train``, ``y_train`` and optionally ``x_val``, ``y_val``;
* ``package.module:factory``: a callable returning ``(train, val)`` datasets or loaders, or a
  dict with ``train``, ``val`` and optionally ``loss``, ``metric``, ``metric_name``, or a
  :class:`~edgeprune.data.task.Task`.

Where a source has no validation split, a seeded 10% of its training samples is held out and
the record says so. Normalization is never a silent default: what was used is in
``Task.preprocessing``, which the CLI prints and the manifest keeps.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from edgeprune.data.arrays import ArrayDataset, npz_member, read_idx
from edgeprune.data.task import Task, tensor_task
from edgeprune.errors import UsageError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_val": "t10k-images-idx3-ubyte.gz",
    "y_val": "t10k-labels-idx1-ubyte.gz",
}
# Mean and std of Fashion-MNIST's 60k training images after scaling to [0, 1].
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
HOLDOUT_FRACTION = 0.1
ESTIMATE_SAMPLES = 256
DATA_HELP = (
    "Data to fine-tune, calibrate and evaluate on: digits, fashion-mnist[:DIR], imagefolder:TRAIN[,VAL], "
    "npz:FILE or package.module:factory (default: the built-in model's own data)."
)


def resolve_data(
    spec: str,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Task:
    """Resolve a data spec to a :class:`Task`; ``input_shape`` (C, H, W) sizes image folders.

    Raises:
        UsageError: a bad spec, a missing file or folder, data of the wrong form; one line each.
    """
    kind, _, rest = spec.partition(":")
    if (mean is None) != (std is None):
        raise UsageError("give --mean and --std together")
    if spec == "digits":
        from edgeprune.data.digits import digits_task

        return digits_task()
    if kind == "fashion-mnist":
        return fashion_mnist(Path(rest) if rest else FASHION_DIR, mean, std)
    if kind == "imagefolder":
        if not rest:
            raise UsageError("imagefolder needs a folder: imagefolder:TRAIN_DIR[,VAL_DIR]")
        if input_shape is None:
            raise UsageError("imagefolder data needs the model's input shape")
        train_dir, _, val_dir = rest.partition(",")
        return image_folder(Path(train_dir), Path(val_dir) if val_dir else None, tuple(input_shape), mean, std)
    if kind == "npz":
        if not rest:
            raise UsageError("npz needs a file: npz:FILE")
        return npz_task(Path(rest), mean, std)
    if rest and all(part.isidentifier() for part in kind.split(".")):
        return factory_task(spec)
    raise UsageError(
        f"unknown data '{spec}': use digits, fashion-mnist[:DIR], imagefolder:TRAIN[,VAL], npz:FILE "
        "or package.module:factory"
    )


def _holdout(dataset: Dataset[Any], seed: int = 0) -> tuple[Dataset[Any], Dataset[Any]]:
    size = len(dataset)  # type: ignore[arg-type]
    if size < 2:
        raise UsageError("a data set needs at least two samples to hold one out for validation")
    order = np.random.default_rng(seed).permutation(size)
    cut = max(1, round(HOLDOUT_FRACTION * size))
    return Subset(dataset, sorted(order[cut:].tolist())), Subset(dataset, sorted(order[:cut].tolist()))


def _norm(mean: Sequence[float] | None, std: Sequence[float] | None, default: tuple[Any, Any]) -> tuple[Any, Any]:
    if mean is None or std is None:
        return default
    if any(s <= 0 for s in std):
        raise UsageError(f"--std must be positive, got {list(std)}")
    return list(mean), list(std)


def fashion_mnist(folder: Path, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Task:
    """Fashion-MNIST from its four gzipped IDX files in ``folder`` (memory-mapped, never downloaded)."""
    missing = [name for name in FASHION_FILES.values() if not (folder / name).is_file()]
    if missing:
        hint = (
            "install it with `apt-get install dataset-fashion-mnist`"
            if folder == FASHION_DIR
            else "give the folder that holds them"
        )
        raise UsageError(f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}): {hint}")
    arrays = {key: read_idx(folder / name) for key, name in FASHION_FILES.items()}
    for split in ("train", "val"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UsageError(f"{folder}: the {split} images and labels do not match ({x.shape}, {y.shape})")
    m, s = _norm(mean, std, (FASHION_MEAN, FASHION_STD))
    shape = (1, *arrays["x_train"].shape[1:])
    train = ArrayDataset(arrays["x_train"], arrays["y_train"], shape, m, s)
    val = ArrayDataset(arrays["x_val"], arrays["y_val"], shape, m, s)
    preprocessing = {
        "scale": "1/255",
        "mean": m,
        "std": s,
        "normalization": "given" if mean else "Fashion-MNIST training set",
    }
    name = "fashion-mnist" if folder == FASHION_DIR else f"fashion-mnist:{folder}"
    return Task(name, train, val, preprocessing=preprocessing)


def npz_task(path: Path, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Task:
    """Arrays ``x_train``, ``y_train`` (and ``x_val``, ``y_val``) of an ``.npz``, memory-mapped."""
    if not path.is_file():
        raise UsageError(f"npz file {path} does not exist")
    x, y = npz_member(path, "x_train"), npz_member(path, "y_train")
    if x is None or y is None:
        raise UsageError(f"{path} needs arrays x_train and y_train (optionally x_val and y_val)")
    xv, yv = npz_member(path, "x_val"), npz_member(path, "y_val")
    if (xv is None) != (yv is None):
        raise UsageError(f"{path}: give x_val and y_val together")
    for key, arr in (("y_train", y), ("y_val", yv)):
        if arr is not None and (arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer)):
            raise UsageError(f"{path}: {key} must be a 1-D array of integer labels, got {arr.dtype} {arr.shape}")
    m, s = _norm(mean, std, (0.0, 1.0))
    train: Dataset[Any] = ArrayDataset(x, y, None, m, s)
    preprocessing: dict[str, Any] = {"mean": m, "std": s, "normalization": "given" if mean else "none (used as stored)"}
    if xv is not None and yv is not None:
        val: Dataset[Any] = ArrayDataset(xv, yv, None, m, s)
    else:
        train, val = _holdout(train)
        preprocessing["val"] = f"{HOLDOUT_FRACTION:.0%} of x_train held out (seeded)"
    return Task(f"npz:{path}", train, val, preprocessing=preprocessing)


def image_folder(
    train_dir: Path,
    val_dir: Path | None,
    input_shape: tuple[int, ...],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Task:
    """torchvision's ``ImageFolder`` resized to the model's input; normalization given or estimated."""
    from torchvision import datasets, transforms

    for folder in (train_dir, val_dir):
        if folder is not None and not folder.is_dir():
            raise UsageError(f"image folder {folder} does not exist")
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise UsageError(f"image folders need a model input of (1 or 3, H, W), got {list(input_shape)}")
    channels, height, width = input_shape
    base = [transforms.Grayscale(1)] if channels == 1 else [transforms.Lambda(lambda im: im.convert("RGB"))]
    base += [transforms.Resize((height, width)), transforms.ToTensor()]

    def folder_set(path: Path, steps: list[Any]) -> Any:
        try:
            return datasets.ImageFolder(str(path), transform=transforms.Compose(steps))
        except (FileNotFoundError, RuntimeError) as err:  # no class folders, or no images in them
            raise UsageError(f"{path}: {str(err).splitlines()[0]} (one subfolder per class)") from err

    if mean is None or std is None:
        raw = folder_set(train_dir, base)
        count = min(len(raw), ESTIMATE_SAMPLES)
        picks = np.sort(np.random.default_rng(0).permutation(len(raw))[:count])
        stack = torch.stack([raw[int(i)][0] for i in picks])
        m = [round(float(v), 4) for v in stack.mean(dim=(0, 2, 3))]
        s = [round(max(float(v), 1e-3), 4) for v in stack.std(dim=(0, 2, 3))]
        how = f"estimated on {count} training images"
    else:
        m, s = _norm(mean, std, (None, None))
        how = "given"
        if len(m) not in (1, channels):
            raise UsageError(f"--mean/--std need 1 or {channels} values, got {len(m)}")
    steps = [*base, transforms.Normalize(m, s)]
    train = folder_set(train_dir, steps)
    preprocessing: dict[str, Any] = {
        "resize": f"{height}x{width}, bilinear",
        "color": "L" if channels == 1 else "RGB",
        "scale": "1/255",
        "mean": m,
        "std": s,
        "normalization": how,
        "classes": list(train.classes),
    }
    if val_dir is not None:
        val = folder_set(val_dir, steps)
        if val.classes != train.classes:
            raise UsageError(f"{val_dir} has classes {val.classes}, {train_dir} has {train.classes}: they must match")
        train_set: Dataset[Any] = train
        val_set: Dataset[Any] = val
    else:
        train_set, val_set = _holdout(train)
        preprocessing["val"] = f"{HOLDOUT_FRACTION:.0%} of {train_dir} held out (seeded)"
    spec = f"imagefolder:{train_dir}" + (f",{val_dir}" if val_dir else "")
    return Task(spec, train_set, val_set, preprocessing=preprocessing)


def import_factory(spec: str, what: str) -> Any:
    """The callable a ``package.module:factory`` spec names (models and data specs alike).

    Raises:
        UsageError: the module or the attribute cannot be imported; ``what`` names the kind.
    """
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UsageError(f"cannot import {what} '{spec}': {err}") from err


def factory_task(spec: str) -> Task:
    """Call the user's ``package.module:factory`` and wrap what it returns."""
    made = import_factory(spec, "data factory")()
    if isinstance(made, Task):
        return made
    if isinstance(made, tuple) and len(made) == 2:
        made = {"train": made[0], "val": made[1]}
    if not isinstance(made, dict) or "train" not in made:
        raise UsageError(
            f"data factory '{spec}' must return (train, val), a dict with 'train' and 'val' (and optionally "
            "'loss', 'metric', 'metric_name'), or a Task"
        )
    for key in ("train", "val"):
        value = made.get(key)
        if value is not None and not isinstance(value, (Dataset, DataLoader)):
            raise UsageError(f"data factory '{spec}': '{key}' must be a torch Dataset or DataLoader")
    unknown = set(made) - {"train", "val", "loss", "metric", "metric_name"}
    if unknown:
        raise UsageError(f"data factory '{spec}' returned unknown keys: {', '.join(sorted(unknown))}")
    options = {k: made[k] for k in ("loss", "metric", "metric_name") if k in made}
    return Task(spec, made["train"], made.get("val"), preprocessing={"note": f"as made by {spec}"}, **options)


__all__ = ["DATA_HELP", "resolve_data", "tensor_task"]
