"""Write the digits calibration set: N training-split images, preprocessed exactly as digits-resnet.

The committed ``calibration/digits.npz`` was made by running this script with its defaults; run it
again to check or to make a larger set:

    python calibration/prepare_digits.py --out calibration/digits.npz --samples 256 --seed 0

The file holds ``input`` (float32 ``[N, 1, 32, 32]``: 8x8 digits upsampled bilinearly to 32x32 and
normalized with the training split's mean and std) and ``labels`` (int64 ``[N]``, for sanity checks
only: calibration never uses labels). Only training images are used, so accuracy measured on the
test split stays honest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "digits.npz")
    parser.add_argument("--samples", type=int, default=256, help="images to keep (seeded choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be positive")

    from edgeprune.export.calibration import make_digits_calibration

    x, y = make_digits_calibration(args.samples, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".part.npz")
    np.savez_compressed(tmp, input=x, labels=y)
    tmp.replace(args.out)
    print(f"wrote {args.out}: input {x.shape} {x.dtype}, labels {y.shape}; {args.out.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
