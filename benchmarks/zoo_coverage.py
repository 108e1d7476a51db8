"""Channel-pruning coverage of the whole torchvision classification zoo.

For every model of ``torchvision.models.list_models(module=torchvision.models)`` (random weights),
prune 30% of the channels of every prunable group (criterion l1) and check that:

1. the pruned model runs and keeps its output shape;
2. it has fewer MACs than the original;
3. its ONNX export (the product's exporter, opset 17) matches PyTorch under ONNX Runtime
   (|ort - torch| <= 1e-4 + 1e-3 |torch|).

Each model runs in its own subprocess (a crash or a memory blow-up of one model cannot take the
table down) with a time limit. The graph is shape-agnostic, so inputs are small where the model
allows (64 px; Inception v3 needs 75 px at least, so 96; the ViT and MaxViT families check their
input size, and AlexNet and VGG pool adaptively to 6x6 / 7x7, which the ONNX exporter supports
only when the input is a multiple of that, so 224). The table says which size each model used.

Usage::

    python benchmarks/zoo_coverage.py                       # every model; prints the table
    python benchmarks/zoo_coverage.py --only resnet18,vit_b_16 --markdown out.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

FIXED_SIZE = {"inception_v3": 96}
FULL_SIZE_PREFIXES = ("vit_", "maxvit_", "alexnet", "vgg")
SPARSITY = 0.3


def input_size(name: str) -> int:
    if name.startswith(FULL_SIZE_PREFIXES):
        return 224
    return FIXED_SIZE.get(name, 64)


def run_one(name: str, threads: int) -> dict[str, Any]:
    """Prune one model and check it; returns the row (never raises)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from edgeprune.errors import EdgepruneError, GraphError
    from edgeprune.export.onnx_export import check_parity, export_onnx
    from edgeprune.models.spec import build_source
    from edgeprune.prune.structural import ChannelConfig, prune_channels

    torch.manual_seed(0)
    size = input_size(name)
    shape = (3, size, size)
    row: dict[str, Any] = {"model": name, "input": size, "status": "crash", "stage": "build"}
    try:
        model, _ = build_source(f"torchvision:{name}")
        model.eval()
        row["params"] = sum(p.numel() for p in model.parameters())
        row["stage"] = "prune"
        start = time.perf_counter()
        result = prune_channels(model, shape, ChannelConfig(sparsity=SPARSITY))
        row["prune_s"] = round(time.perf_counter() - start, 2)
        row.update(
            macs_before=result.macs_before,
            macs_after=result.macs_after,
            params_after=result.params_after,
            pruned_groups=len(result.groups),
            fixed_groups=len(result.fixed),
        )
        reasons: dict[str, int] = {}
        for entry in result.fixed:
            if entry["reason"] != "model output":
                key = entry["reason"].split(": ", 1)[-1] if ": " in entry["reason"] else entry["reason"]
                reasons[key] = reasons.get(key, 0) + 1
        row["fixed_reasons"] = sorted(reasons, key=lambda r: -reasons[r])[:2]
        row["stage"] = "run"
        x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected_shape = tuple(model(x).shape)
            pruned = result.model.eval()
            got_shape = tuple(pruned(x).shape)
        del model
        if got_shape != expected_shape:
            row.update(status="wrong-shape", reason=f"{got_shape} != {expected_shape}")
            return row
        if not result.macs_after < result.macs_before:
            row.update(status="no-saving", reason="MACs did not drop")
            return row
        row["stage"] = "export"
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(pruned, shape, Path(tmp) / "model.onnx")
            inputs = np.random.default_rng(2).standard_normal((2, *shape)).astype(np.float32)
            parity, _ = check_parity(pruned, path, inputs)
        row["max_abs_diff"] = parity.max_abs_diff
        if not parity.passed:
            row.update(status="parity-fail", reason=f"max |ort - torch| = {parity.max_abs_diff:.3g}")
            return row
        row.update(status="pass", stage="done")
    except GraphError as err:
        row.update(status="graph-error", reason=str(err))
    except EdgepruneError as err:
        row.update(status=f"{type(err).__name__}", reason=str(err))
    except Exception as err:  # recorded as a crash: that is what the table is for
        row.update(status="crash", reason=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-2000:])
    return row


def run_isolated(name: str, timeout: float, threads: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    try:
        cmd = [sys.executable, __file__, "--one", name, "--json", str(out), "--threads", str(threads)]
        proc = subprocess.run(
            cmd, timeout=timeout, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
        )
        if out.stat().st_size:
            return dict(json.loads(out.read_text()))
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {
            "model": name,
            "input": input_size(name),
            "status": "crash",
            "reason": f"exit {proc.returncode}: {tail[0][:300]}",
        }
    except subprocess.TimeoutExpired:
        return {"model": name, "input": input_size(name), "status": "timeout", "reason": f"over {timeout:.0f} s"}
    finally:
        out.unlink(missing_ok=True)


def _m(value: Any) -> str:
    return f"{value / 1e6:,.1f}" if isinstance(value, (int, float)) else "-"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | input | status | MMACs before | MMACs after | MACs kept | params (M) before / after "
        "| pruned / fixed groups | prune s | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kept = f"{r['macs_after'] / r['macs_before']:.0%}" if r.get("macs_before") and r.get("macs_after") else "-"
        note = r.get("reason") or "; ".join(r.get("fixed_reasons") or [])
        note = note.replace("|", "/").replace("\n", " ")[:160]
        params = f"{_m(r.get('params'))} / {_m(r.get('params_after'))}"
        groups = f"{r.get('pruned_groups', '-')} / {r.get('fixed_groups', '-')}"
        lines.append(
            f"| {r['model']} | {r['input']} | {r['status']} | {_m(r.get('macs_before'))} | "
            f"{_m(r.get('macs_after'))} | {kept} | {params} | {groups} | {r.get('prune_s', '-')} | {note} |"
        )
    passed = sum(1 for r in rows if r["status"] == "pass")
    lines.append("")
    lines.append(
        f"**{passed} of {len(rows)} models pass** (pruned, runs, same output shape, fewer MACs, ONNX Runtime parity)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names (default: the whole zoo)")
    parser.add_argument("--skip", default="", help="comma-separated model names to leave out")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per model")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per model (1 keeps timings steady on a shared machine)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--jsonl", type=Path, help="append each row here as it completes")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = run_one(args.one, args.threads)
        args.json.write_text(json.dumps(row))
        return
    import torchvision

    names = args.only.split(",") if args.only else torchvision.models.list_models(module=torchvision.models)
    names = [n for n in names if n not in set(args.skip.split(","))]
    rows = []
    for i, name in enumerate(names, 1):
        row = run_isolated(name, args.timeout, args.threads)
        rows.append(row)
        print(
            f"[{i}/{len(names)}] {name}: {row['status']} {row.get('prune_s', '')} {(row.get('reason') or '')[:200]}",
            flush=True,
        )
        if args.jsonl:
            with args.jsonl.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    text = table(rows)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
