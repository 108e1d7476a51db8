"""torchvision's resnet18 on a small image folder made here, through the whole command line.

The images are generated, not downloaded: three classes of 64x64 pictures (a bright disc, a
bright square, horizontal stripes) on noisy backgrounds of random tint, 60 training and 20
validation images each, written as PNG files in ``class/`` subfolders. Then, as a user would:

    edgeprune prune torchvision:resnet18 --input-shape 3,64,64 --data imagefolder:TRAIN,VAL \\
        --pattern channel --target-macs 0.5 --round-to 8 --finetune-epochs 2 --out DIR
    edgeprune package DIR --out BUNDLE ; edgeprune package torchvision:resnet18 ... --out DENSE
    edgeprune bench BUNDLE --baseline DENSE

The dense model is first trained on the same folder (3 epochs, the library's loop) so that the
accuracies mean something; weights never come from a hub.

Run: ``python benchmarks/imagefolder_resnet18.py`` (a few minutes). Writes
benchmarks/results/imagefolder_resnet18.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine_line, today, write_result

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "imagefolder-resnet18"
SIZE = 64
PER_CLASS = {"train": 60, "val": 20}


def make_images(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for split, count in PER_CLASS.items():
        for label in ("disc", "square", "stripes"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.uniform(0, 80, (SIZE, SIZE, 3)) + rng.uniform(0, 60, 3)
                cy, cx, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(8, 16)
                if label == "disc":
                    shape = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
                elif label == "square":
                    shape = (abs(yy - cy) < r) & (abs(xx - cx) < r)
                else:
                    shape = (yy // int(r // 2 + 2)) % 2 == 0
                image[shape] += 150
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")


def cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edgeprune.cli.main", *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"edgeprune {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def main() -> None:
    import torch
    from safetensors.torch import save_file

    from edgeprune.data import resolve_data
    from edgeprune.models.spec import build_source
    from edgeprune.train import TrainConfig, evaluate, train

    images = RUNS / "images"
    if not (images / "val").is_dir():
        make_images(images)
    spec = f"imagefolder:{images / 'train'},{images / 'val'}"
    shape = (3, SIZE, SIZE)
    task = resolve_data(spec, shape)
    model, _ = build_source("torchvision:resnet18", shape)
    start = time.perf_counter()
    torch.manual_seed(0)
    train(model, task, TrainConfig(epochs=3, batch_size=32, lr=0.05))
    train_s = time.perf_counter() - start
    dense_acc = evaluate(model, task)
    weights = RUNS / "dense.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))

    common = ["--input-shape", "3,64,64", "--weights", str(weights)]
    start = time.perf_counter()
    out = cli("prune", "torchvision:resnet18", *common, "--data", spec, "--pattern", "channel", "--target-macs",
              "0.5", "--round-to", "8", "--finetune-epochs", "2", "--out", str(RUNS / "ch50"))  # fmt: skip
    prune_s = time.perf_counter() - start
    meta = json.loads((RUNS / "ch50" / "model.json").read_text())
    cli("package", str(RUNS / "ch50"), "--out", str(RUNS / "bundle"))
    cli("package", "torchvision:resnet18", *common, "--data", spec, "--out", str(RUNS / "dense"))
    cli("bench", str(RUNS / "bundle"), "--baseline", str(RUNS / "dense"), "--batch-sizes", "1,8", "--threads", "1",
        "--no-power", "--json", str(RUNS / "bench.json"))  # fmt: skip
    bundle = json.loads((RUNS / "bundle" / "manifest.json").read_text())["model"]
    record = json.loads((RUNS / "bench.json").read_text())
    variant = next(v for v in record["variants"] if not v["is_baseline"])
    per_batch = variant["comparison"]["per_batch"]
    lines = [
        "# torchvision:resnet18 on a generated image folder, through the command line",
        "",
        f"`python benchmarks/imagefolder_resnet18.py`, {machine_line()}, {today()}.",
        "",
        f"Data: 3 classes x ({PER_CLASS['train']} train + {PER_CLASS['val']} val) generated 64x64 PNGs; "
        f"normalization {meta['preprocessing']['normalization']} (mean {meta['preprocessing']['mean']}, "
        f"std {meta['preprocessing']['std']}).",
        f"Dense resnet18 at 3x64x64 trained here 3 epochs in {train_s:.0f} s: {dense_acc:.1%} val top-1.",
        "",
        "| step | figure |",
        "|---|---|",
        f"| prune --target-macs 0.5 --round-to 8 --finetune-epochs 2 | {prune_s:.0f} s; accuracy "
        f"{meta['accuracy']:.1%} (unpruned {meta['accuracy_unpruned']:.1%}) |",
        f"| bundle's own accuracy (ONNX Runtime) | {bundle['accuracy']:.1%} |",
        f"| MACs | {meta['summary']['macs_before'] / 1e6:.1f} M → {meta['summary']['macs_after'] / 1e6:.1f} M |",
        f"| measured speedup b1 / b8 (ONNX Runtime CPU, 1 thread) | {per_batch['1']['measured_speedup']:.2f} / "
        f"{per_batch['8']['measured_speedup']:.2f} |",
        "",
        "prune's output:",
        "",
        "```",
        out.strip(),
        "```",
        "",
    ]
    write_result("imagefolder_resnet18.md", "\n".join(lines))


if __name__ == "__main__":
    main()
