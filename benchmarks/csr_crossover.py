"""Where does CSR beat dense GEMM on this CPU? The crossover sparsity per layer shape.

For each GEMM shape (a conv in its im2col form: rows = output channels, depth = C*kh*kw,
columns = batch x output positions; a linear layer: columns = batch), the weight is pruned at
random to each sparsity and multiplied by the same dense operand with ``torch.mm`` (MKL dense GEMM)
and with ``torch.sparse.mm`` on the CSR weight (MKL sparse). The theoretical speedup is the MAC
ratio 1 / (1 - sparsity). Then the per-layer decision of :func:`edgeprune.prune.sparse_exec.sparsify_model`
on the 90%-sparse digits model, where the dense side is the layer as PyTorch runs it (oneDNN
convolution, no im2col) and the CSR side includes its im2col.

Run: ``python benchmarks/csr_crossover.py`` (about 2 minutes; one torch thread).
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from patterns_table import header, load_baseline, update_section

ROUNDS = 3
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
# (label, rows, depth, columns)
SHAPES = [
    ("digits layer1.conv2, b1", 16, 144, 1024),
    ("digits layer2.conv2, b1", 32, 288, 256),
    ("digits layer3.conv2, b1", 64, 576, 64),
    ("digits layer3.conv2, b32", 64, 576, 2048),
    ("ResNet-50 layer3 3x3 conv, b1", 256, 2304, 196),
    ("Linear 1024x1024, b1", 1024, 1024, 1),
    ("Linear 1024x1024, b32", 1024, 1024, 32),
]


def main() -> None:
    from edgeprune.prune.api import PruneRequest, prune_model
    from edgeprune.prune.sparse_exec import crossover_sparsity, crossover_table, sparsify_model

    torch.set_num_threads(1)
    started = time.time()
    lines = [
        header("CSR against dense GEMM on this CPU", "python benchmarks/csr_crossover.py"),
        f"PyTorch {torch.__version__}, 1 thread; weights pruned at random (unstructured); each cell the median "
        f"over {ROUNDS} rounds (different random masks) of the median of at least 30 timed calls; theoretical "
        "= MAC ratio 1 / (1 - sparsity), an estimate.\n",
        "| GEMM (rows x depth x columns) | sparsity | dense ms | CSR ms | measured × | theoretical × |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    crossovers = []
    for label, rows, depth, columns in SHAPES:
        # Three rounds, median per cell: a shared machine moves single timings by up to 2x.
        rounds = [crossover_table(rows, depth, columns, SPARSITIES, repeats=30, seed=seed) for seed in range(ROUNDS)]
        table = []
        for cells in zip(*rounds):
            dense_ms = statistics.median(c["dense_ms"] for c in cells)
            csr_ms = statistics.median(c["csr_ms"] for c in cells)
            table.append({**cells[0], "dense_ms": dense_ms, "csr_ms": csr_ms, "measured_speedup": dense_ms / csr_ms})
        for r in table:
            lines.append(
                f"| {label} ({rows}x{depth}x{columns}) | {r['sparsity']:.0%} | {r['dense_ms']:.4f} | "
                f"{r['csr_ms']:.4f} | {r['measured_speedup']:.2f} | {r['theoretical_speedup']:.1f} |"
            )
        best = max(table, key=lambda r: r["measured_speedup"])
        crossovers.append(
            (
                label,
                rows,
                depth,
                columns,
                crossover_sparsity(table),
                f"{best['measured_speedup']:.2f} at {best['sparsity']:.0%}",
            )
        )
        print(label, crossovers[-1], flush=True)
    lines += [
        "",
        "Crossover: the lowest sparsity tried from which CSR stays at least as fast as dense.\n",
        "| GEMM | crossover sparsity | best measured × |",
        "|---|---:|---:|",
    ]
    for label, rows, depth, columns, cross, best in crossovers:
        lines.append(
            f"| {label} ({rows}x{depth}x{columns}) | {'never (≤ 99%)' if cross is None else f'{cross:.0%}'} | {best} |"
        )

    base, _ = load_baseline()
    pruned, _, _ = prune_model(copy.deepcopy(base), (1, 32, 32), PruneRequest("unstructured", sparsity=0.9))
    lines += [
        "",
        "Per-layer decision on digits-resnet pruned to 90% (unstructured; stem and classifier dense), "
        "dense = the layer as PyTorch runs it (oneDNN conv), CSR = im2col + CSR GEMM:\n",
        "| layer | batch | sparsity | dense ms | CSR ms | measured × | theoretical × | runs as |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for batch in (1, 32):
        _, report = sparsify_model(pruned, (1, 32, 32), batch_size=batch, repeats=50)
        for r in report:
            if r["dense_ms"] is None:
                continue
            lines.append(
                f"| {r['module']} | {batch} | {r['sparsity']:.0%} | {r['dense_ms']:.4f} | {r['csr_ms']:.4f} | "
                f"{r['speedup']:.2f} | {r['theoretical']:.1f} | {'CSR' if r['csr'] else 'dense'} |"
            )
    lines.append(f"\nRun time {time.time() - started:.0f} s.")
    update_section("csr_crossover", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
