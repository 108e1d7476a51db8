"""Time and peak memory to trace and prune ResNet-50 to 50% of its channels.

Runs in a fresh subprocess so that ``ru_maxrss`` (the process's peak resident set) measures this
job alone. Reported:

* the RSS once the model is built (random weights) and its weight bytes;
* the seconds to trace and group (``build_groups``) and to prune (``prune_channels`` end to end:
  trace, score, plan, copy and slice, cost the result), at 224x224, batch 2 for the trace;
* the peak RSS, and the budget the pruner must stay within: the loaded model plus twice its
  weight bytes (one copy for the pruned model, one for everything transient).

Usage::

    python benchmarks/prune_resnet50_cost.py [--threads 1] [--sparsity 0.5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any


def _rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(threads: int, sparsity: float) -> dict[str, Any]:
    import gc
    import resource
    import time

    import torch
    import torchvision

    from edgeprune.prune.graph import build_groups
    from edgeprune.prune.structural import ChannelConfig, prune_channels

    torch.set_num_threads(threads)
    model = torchvision.models.resnet50(weights=None).eval()
    gc.collect()
    loaded = _rss_bytes()
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    start = time.perf_counter()
    groups = build_groups(model, torch.zeros(2, 3, 224, 224))
    graph_s = time.perf_counter() - start
    del groups
    start = time.perf_counter()
    result = prune_channels(model, (3, 224, 224), ChannelConfig(sparsity=sparsity))
    prune_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {
        "threads": threads,
        "sparsity": sparsity,
        "rss_loaded_mb": loaded / 2**20,
        "weights_mb": weights / 2**20,
        "graph_s": graph_s,
        "prune_s": prune_s,
        "peak_rss_mb": peak / 2**20,
        "budget_mb": (loaded + 2 * weights) / 2**20,
        "extra_over_weights": (peak - loaded) / weights,
        "macs_before": result.macs_before,
        "macs_after": result.macs_after,
        "params_before": result.params_before,
        "params_after": result.params_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.threads, args.sparsity)))
        return
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--threads", str(args.threads), "--sparsity", str(args.sparsity)],
        capture_output=True,
        text=True,
        check=True,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    verdict = "within" if row["peak_rss_mb"] <= row["budget_mb"] else "OVER"
    print(
        "| model | channels removed | threads | trace + group s | prune s | RSS loaded MB | weights MB "
        "| peak RSS MB | budget MB (loaded + 2 x weights) | extra / weights | GMACs before -> after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| resnet50 (224 px) | {row['sparsity']:.0%} | {row['threads']} | {row['graph_s']:.2f} | "
        f"{row['prune_s']:.2f} | {row['rss_loaded_mb']:.0f} | {row['weights_mb']:.0f} | {row['peak_rss_mb']:.0f} | "
        f"{row['budget_mb']:.0f} ({verdict}) | {row['extra_over_weights']:.2f} | "
        f"{row['macs_before'] / 1e9:.2f} -> {row['macs_after'] / 1e9:.2f} |"
    )


if __name__ == "__main__":
    main()
