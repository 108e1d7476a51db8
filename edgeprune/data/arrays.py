"""Arrays read from disk on demand: IDX files (gzipped or not) and ``.npz`` members, memory-mapped.

A gzipped file cannot be read at an offset, and an ``.npz`` member cannot be mapped in place, so
each is streamed once into an uncompressed file under the cache folder (``EDGEPRUNE_CACHE``, or
``~/.cache/edgeprune``), keyed by the source's path, size and modification time, and mapped from
there. Nothing holds a whole data set in memory; the copy is written to a temporary name and
renamed, so an interrupted run never leaves a half-written cache entry.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeprune.errors import UsageError

IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
}


def cache_dir() -> Path:
    """Where uncompressed copies live (``EDGEPRUNE_CACHE`` overrides)."""
    root = os.environ.get("EDGEPRUNE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "edgeprune"


def _cache_path(source: Path, member: str) -> Path:
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{member}".encode()).hexdigest()[:20]
    return cache_dir() / "arrays" / f"{key}-{Path(member).name}"


def _stream_to_cache(opener: Any, target: Path) -> Path:
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".{os.getpid()}.part")
    with opener() as src, open(partial, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    partial.replace(target)
    return target


def read_idx(path: Path) -> np.ndarray:
    """Memory-map an IDX file (MNIST's format), gzipped or not; raises a one-line error when it is not one."""
    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        if gz:
            raw = _stream_to_cache(lambda: gzip.open(path, "rb"), _cache_path(path, path.stem))
        else:
            raw = path
        with open(raw, "rb") as f:
            zero, code, ndim = struct.unpack(">HBB", f.read(4))
            if zero != 0 or code not in IDX_TYPES or not 1 <= ndim <= 4:
                raise ValueError("bad magic number")
            dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        offset = 4 + 4 * ndim
        array = np.memmap(raw, dtype=IDX_TYPES[code], mode="r", offset=offset, shape=tuple(dims))
    except (OSError, ValueError, struct.error, EOFError) as err:
        raise UsageError(f"{path} is not a readable IDX file: {err}") from err
    return array


def npz_member(path: Path, key: str) -> np.ndarray | None:
    """Memory-map one array of an ``.npz`` (``None`` when absent); never unpickles."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            name = f"{key}.npy"
            if name not in names:
                return None
            cached = _stream_to_cache(lambda: archive.open(name), _cache_path(path, name))
        return np.load(cached, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UsageError(f"cannot read {path} as .npz: {err}") from err


class ArrayDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(input, label) pairs from two arrays (memory-mapped or not), converted one sample at a time.

    Args:
        x: inputs ``[N, ...]``; uint8 images are scaled to [0, 1] first.
        y: integer labels ``[N]``.
        shape: each input is reshaped to this (``(1, 28, 28)`` for IDX images).
        mean, std: per-channel normalization applied after scaling (scalars or sequences).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        shape: tuple[int, ...] | None = None,
        mean: Any = 0.0,
        std: Any = 1.0,
    ) -> None:
        if len(x) != len(y):
            raise UsageError(f"inputs and labels differ in length ({len(x)} and {len(y)})")
        self.x, self.y, self.shape = x, y, shape
        dims = len(shape) if shape is not None else x.ndim - 1
        view = (-1, *([1] * (dims - 1))) if dims > 1 else (-1,)  # per channel, broadcast over H, W
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(view)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(view)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = np.asarray(self.x[index])
        x = torch.from_numpy(sample.astype(np.float32))
        if sample.dtype == np.uint8:
            x = x / 255.0
        if self.shape is not None:
            x = x.reshape(self.shape)
        x = (x - self.mean) / self.std
        return x, torch.as_tensor(int(self.y[index]), dtype=torch.int64)
