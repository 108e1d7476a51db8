"""Turn a folder of images into a calibration .npz for ``edgeprune package --precision int8``.

Each image is converted to the model's channel count, its shorter side resized to fit the target
size and the centre cropped, scaled to [0, 1] and normalized per channel. Use the *same*
preprocessing as the model's deployment: the quantizer measures activation ranges on these arrays,
and a mismatch gives wrong scales.

    python calibration/prepare_images.py ~/data/val_subset --out calib/imagenet-256.npz \\
        --size 224 --channels 3 --samples 256 \\
        --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225

Defaults: 3 channels, ImageNet mean/std (torchvision models); 1 channel uses 0.5/0.5. Images are
picked by a seeded random choice when the folder holds more than ``--samples``; unreadable files
are skipped and counted. The output holds ``input`` (float32 ``[N, C, H, W]``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    parser.add_argument("--size", type=int, nargs="+", default=[224], help="H [W] (one value: square)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--mean", type=float, nargs="+", default=None)
    parser.add_argument("--std", type=float, nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(args.size) not in (1, 2):
        parser.error("--size takes H or H W")
    height, width = (args.size * 2)[:2]

    from edgeprune.errors import EdgepruneError
    from edgeprune.export.calibration import load_image_folder

    try:
        calib = load_image_folder(args.folder, (args.channels, height, width), args.samples, args.mean, args.std,
                                  args.seed)
    except EdgepruneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".part.npz")
    np.savez_compressed(tmp, input=calib.data)
    tmp.replace(args.out)
    print(f"wrote {args.out}: input {calib.data.shape} from {calib.available} images in {args.folder}")
    print(f"preprocessing: {json.dumps(calib.preprocessing)}")
    if calib.skipped:
        print(f"skipped {calib.skipped['count']} unreadable files, e.g. {calib.skipped['first']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
