"""Calibration sets for INT8: load them from a ``.npz`` or a folder of images, or use the digits set.

A calibration set is a float32 array ``[N, *input_shape]`` of inputs *already preprocessed exactly
as the model expects them* (resized, scaled, normalized): the quantizer measures the activation
ranges these inputs produce, so a set preprocessed differently from deployment gives wrong scales
and a silently worse INT8 model. That is why the loaders check shapes strictly and say what they
did in :attr:`CalibrationSet.preprocessing`, which the packager records in the manifest.

* ``.npz``: the array under the model's input name, under ``input``, or the only array in the file
  (``calibration/prepare_*.py`` write ``input``, plus ``labels`` where known). Loaded with
  ``allow_pickle=False``.
* a folder of images (searched recursively; .jpg .jpeg .png .bmp .webp .tif .tiff): each image
  is converted to the model's channel count, its shorter side resized to the target and the centre
  cropped, scaled to [0, 1] and normalized with a per-channel mean and std (ImageNet's for 3
  channels, 0.5/0.5 otherwise, unless given). Unreadable files are skipped and counted.
* ``digits``: ``calibration/digits.npz`` when this is a source checkout, else the same samples
  rebuilt from scikit-learn's digits (training split only, never a test image).

Subsampling is deterministic (a seeded permutation), so a bundle can be rebuilt bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import UsageError, missing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SAMPLES = 256
DIGITS_FILE = Path(__file__).resolve().parents[2] / "calibration" / "digits.npz"
DIGITS_SAMPLES = 256
DIGITS_SEED = 0


@dataclass
class CalibrationSet:
    """Preprocessed calibration inputs and where they came from.

    Attributes:
        data: float32 ``[N, *input_shape]``.
        source: the file or folder (or ``digits``).
        kind: ``npz``, ``images`` or ``digits``.
        available: how many samples the source held before subsampling.
        preprocessing: what was done to raw data (recorded in the manifest).
        skipped: image files that could not be read (first few names) and their count.
    """

    data: np.ndarray
    source: str
    kind: str
    available: int
    preprocessing: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        """Number of samples kept."""
        return int(self.data.shape[0])

    def sha256(self) -> str:
        """Digest of the exact array used, so a manifest pins its calibration data."""
        digest = hashlib.sha256()
        digest.update(str(self.data.shape).encode())
        digest.update(np.ascontiguousarray(self.data, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def record(self) -> dict[str, Any]:
        """The manifest's description of this set (no data)."""
        out: dict[str, Any] = {
            "source": self.source,
            "kind": self.kind,
            "samples": self.samples,
            "available": self.available,
            "sha256": self.sha256(),
            "preprocessing": self.preprocessing,
        }
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def subsample(data: np.ndarray, samples: int | None, seed: int = 0) -> np.ndarray:
    """The first ``samples`` rows of a seeded permutation (all rows, in order, if None or enough).

    Raises:
        UsageError: ``samples`` is not positive.
    """
    if samples is None or samples >= len(data):
        if samples is not None and samples < 1:
            raise UsageError(f"--calib-samples must be positive, got {samples}")
        return data
    if samples < 1:
        raise UsageError(f"--calib-samples must be positive, got {samples}")
    order = np.random.default_rng(seed).permutation(len(data))[:samples]
    return data[np.sort(order)]


def _check_array(data: np.ndarray, input_shape: Sequence[int], source: str) -> np.ndarray:
    shape = tuple(int(d) for d in input_shape)
    if data.ndim == len(shape):
        data = data[None]
    if data.ndim != len(shape) + 1 or tuple(data.shape[1:]) != shape:
        raise UsageError(
            f"calibration data in {source} has shape {tuple(data.shape)}; the model needs "
            f"[N, {', '.join(map(str, shape))}] (preprocess it as the model expects, see calibration/)"
        )
    if data.shape[0] == 0:
        raise UsageError(f"calibration data in {source} holds no samples")
    if not np.issubdtype(data.dtype, np.floating):
        raise UsageError(
            f"calibration data in {source} is {data.dtype}; it must be preprocessed floats "
            "(scaled and normalized as the model expects)"
        )
    data = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise UsageError(f"calibration data in {source} holds NaN or infinite values")
    return data


def load_npz(
    path: Path, input_name: str, input_shape: Sequence[int], samples: int | None = DEFAULT_SAMPLES, seed: int = 0
) -> CalibrationSet:
    """Load a calibration ``.npz`` (see the module docstring for which array is used).

    Raises:
        UsageError: missing or unreadable file, no suitable array, wrong shape or dtype, NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"calibration file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            key = next((k for k in (input_name, "input") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise UsageError(
                    f"calibration file {path} holds arrays {keys}; name the inputs "
                    f"'{input_name}' or 'input', or keep only one array"
                )
            raw = npz[key]
    except UsageError:
        raise
    except Exception as err:  # zipfile, pickle refusal, truncated data
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"cannot read calibration file {path} as .npz: {first}") from err
    data = _check_array(raw, input_shape, str(path))
    return CalibrationSet(
        subsample(data, samples, seed),
        str(path),
        "npz",
        int(data.shape[0]),
        {"note": f"array '{key}' used as is (preprocessed before it was saved)"},
    )


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by path for a stable order."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: Path, channels: int, height: int, width: int) -> np.ndarray:
    """One image as float32 ``[C, H, W]`` in [0, 1]: shorter side resized, centre crop.

    Raises:
        UsageError: Pillow is missing. Pillow's own errors pass through (callers skip the file).
    """
    try:
        from PIL import Image
    except ImportError as err:
        raise missing("PIL", "host") from err
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        scale = max(height / img.height, width / img.width)
        size = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        img = img.crop((left, top, left + width, top + height))
        array = np.asarray(img, dtype=np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if array.shape[0] != channels:
        raise UsageError(f"got {array.shape[0]} channels, need {channels}")
    return array


def load_image_folder(
    folder: Path,
    input_shape: Sequence[int],
    samples: int | None = DEFAULT_SAMPLES,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> CalibrationSet:
    """Load, resize and normalize up to ``samples`` images from ``folder``.

    Args:
        folder: searched recursively for image files.
        input_shape: ``(C, H, W)`` with C 1 or 3.
        samples: how many images (a seeded random choice when the folder has more).
        mean, std: per-channel normalization after scaling to [0, 1]; defaults ImageNet's for 3
            channels (torchvision models), 0.5 and 0.5 otherwise.
        seed: for the choice of images.

    Raises:
        UsageError: not a folder, no images in it, none readable, or an unsupported input shape.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"calibration folder {folder} does not exist")
    if len(input_shape) != 3 or int(input_shape[0]) not in (1, 3):
        raise UsageError(
            f"a folder of images calibrates only image models with input (1 or 3, H, W); this model "
            f"takes {tuple(input_shape)}: prepare a .npz instead"
        )
    channels, height, width = (int(d) for d in input_shape)
    files = image_files(folder)
    if not files:
        raise UsageError(
            f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
            "point --calibration at a folder of images or a .npz"
        )
    mean = tuple(mean) if mean is not None else (IMAGENET_MEAN if channels == 3 else (0.5,))
    std = tuple(std) if std is not None else (IMAGENET_STD if channels == 3 else (0.5,))
    if len(mean) not in (1, channels) or len(std) not in (1, channels) or min(std) <= 0:
        raise UsageError(f"mean/std need 1 or {channels} values and std > 0, got {mean} / {std}")
    wanted = len(files) if samples is None else samples
    if wanted < 1:
        raise UsageError(f"--calib-samples must be positive, got {samples}")
    order = np.random.default_rng(seed).permutation(len(files))
    arrays: list[np.ndarray] = []
    bad: list[str] = []
    for index in order:
        if len(arrays) >= wanted:
            break
        try:
            arrays.append(load_image(files[index], channels, height, width))
        except Exception:  # Pillow raises many types for corrupt or unsupported files
            bad.append(str(files[index].relative_to(folder)))
    if not arrays:
        raise UsageError(f"none of the {len(files)} image files in {folder} could be read (e.g. {bad[0]})")
    data = np.stack(arrays)
    m = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, np.float32).reshape(-1, 1, 1)
    data = ((data - m) / s).astype(np.float32)
    preprocessing = {
        "resize": f"shorter side to fit {height}x{width}, bilinear, centre crop",
        "color": "L" if channels == 1 else "RGB",
        "scale": "1/255",
        "mean": list(mean),
        "std": list(std),
    }
    skipped = {"count": len(bad), "first": bad[:5]} if bad else {}
    return CalibrationSet(data, str(folder), "images", len(files), preprocessing, skipped)


def make_digits_calibration(samples: int = DIGITS_SAMPLES, seed: int = DIGITS_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Digits calibration inputs and labels from the *training* split, as ``digits-resnet`` sees them.

    Uses :func:`edgeprune.data.digits.load_digits_data`, so upsampling and normalization are
    exactly the model's; the test split is never touched, so accuracy measured on it stays honest.
    """
    from edgeprune.data.digits import load_digits_data

    data = load_digits_data()
    x, y = data.x_train.numpy(), data.y_train.numpy()
    order = np.sort(np.random.default_rng(seed).permutation(len(x))[:samples])
    return np.ascontiguousarray(x[order], dtype=np.float32), y[order].astype(np.int64)


def digits_calibration(
    input_shape: Sequence[int], samples: int | None = DEFAULT_SAMPLES, seed: int = 0
) -> CalibrationSet:
    """The built-in calibration set of ``digits-resnet``.

    Reads the committed ``calibration/digits.npz`` when present (a source checkout), otherwise
    rebuilds the same samples from scikit-learn's bundled digits, so an installed package works too.
    """
    if DIGITS_FILE.is_file():
        loaded = load_npz(DIGITS_FILE, "input", input_shape, samples, seed)
        loaded.kind, loaded.source = "digits", "calibration/digits.npz"
        loaded.preprocessing = {"note": "digits training split, upsampled to 32x32 and normalized as digits-resnet"}
        return loaded
    x, _ = make_digits_calibration()
    data = _check_array(x, input_shape, "the digits set")
    return CalibrationSet(
        subsample(data, samples, seed),
        "digits (rebuilt from scikit-learn)",
        "digits",
        len(data),
        {"note": "digits training split, upsampled to 32x32 and normalized as digits-resnet"},
    )


def load_calibration(
    source: Path, input_name: str, input_shape: Sequence[int], samples: int | None = DEFAULT_SAMPLES, seed: int = 0
) -> CalibrationSet:
    """Load a calibration set from a ``.npz`` file or a folder of images.

    Raises:
        UsageError: the path is neither, or the loader rejects its contents.
    """
    source = Path(source)
    if source.is_dir():
        return load_image_folder(source, input_shape, samples, seed=seed)
    if source.suffix.lower() == ".npz" or source.is_file():
        return load_npz(source, input_name, input_shape, samples, seed)
    raise UsageError(f"calibration source {source} does not exist: give a folder of images or a .npz file")


def task_calibration(task: Any, samples: int | None = DEFAULT_SAMPLES, seed: int = 0) -> CalibrationSet:
    """Calibration inputs drawn from a task's *training* split (seeded), preprocessed as the task does.

    The validation split is never used, so accuracy measured on it stays honest.
    """
    if samples is not None and samples < 1:
        raise UsageError(f"--calib-samples must be positive, got {samples}")
    train = task.train.dataset if hasattr(task.train, "dataset") else task.train
    available = len(train)
    x, _ = task.sample(samples or available, "train", seed)
    return CalibrationSet(
        np.ascontiguousarray(x.numpy(), dtype=np.float32),
        task.name,
        "data",
        available,
        {"note": f"training split of {task.name}, preprocessed as for training", **task.preprocessing},
    )
