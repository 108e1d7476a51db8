"""The demo's budget: wall time under 5 minutes and peak memory under 4 GB on a 2-core CPU.

Runs ``edgeprune demo`` from scratch (no cached baseline) in a child process and reads the child's
peak RSS from the kernel's accounting (getrusage of children). Training time is read from the
demo's own progress: the baseline is retrained in every run here.

    python benchmarks/demo_budget.py [--runs 1] [--keep runs/demo-budget]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_line, today, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="copy the last run's folder here")
    args = parser.parse_args()
    rows = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "demo"
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "edgeprune.cli.main", "demo", "--out", str(out)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            wall_s = time.perf_counter() - start
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            record = json.loads((out / "results.json").read_text())
            rows.append((wall_s, peak_mb, record["demo"]["accuracy"]))
            if args.keep is not None:
                shutil.rmtree(args.keep, ignore_errors=True)
                shutil.copytree(out, args.keep)
    lines = [
        f"## Demo budget ({today()})",
        "",
        f"Machine: {machine_line()}",
        "",
        "Command: `python benchmarks/demo_budget.py` (runs `edgeprune demo` from scratch, baseline trained)",
        "",
        "| run | wall s | peak RSS MB | accuracy (dense / unstr. / 2:4 / channel) |",
        "|---|---|---|---|",
    ]
    for i, (wall_s, peak_mb, acc) in enumerate(rows, 1):
        accs = " / ".join(f"{100 * acc[k]:.1f}%" for k in ("dense", "unstructured-50", "nm-2:4", "channel-50mac"))
        lines.append(f"| {i} | {wall_s:.0f} | {peak_mb:.0f} | {accs} |")
    write_result("demo_budget.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
