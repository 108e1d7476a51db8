"""Run every benchmark script in turn (``make bench``). Each writes benchmarks/results/*.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = sorted(
    p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name not in {"run_all.py", "report_screenshot.py"}
)


NEEDS_GPU = {"gpu_check.py"}


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def main() -> int:
    failed = []
    cuda = _has_cuda()
    for script in SCRIPTS:
        print(f"== {script.name}", flush=True)
        if script.name in NEEDS_GPU and not cuda:
            print("skipped: needs a CUDA GPU (its figures in BENCHMARKS.md name the card they came from)")
            continue
        if subprocess.run([sys.executable, str(script)], cwd=HERE).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
