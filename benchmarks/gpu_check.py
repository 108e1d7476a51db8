"""GPU checks: the PyTorch CUDA runner, 2:4 through torch's semi-structured kernels, NVML power.

Everything here needs a CUDA GPU; nothing of it runs in CI. One command measures it all, so the
figures that are compared come from the same machine, the same process and the same minute::

    PYTHONPATH=. python benchmarks/gpu_check.py [--runs runs/demo] [--out benchmarks/results] [--only digits ...]

Sections (each records its own error instead of stopping the others):

1. ``digits``: the demo's dense, channel-pruned, unstructured and 2:4 models through
   :class:`~edgeprune.device.runners.pyt.PytRunner` on CUDA, fp32 and fp16, at several batch sizes,
   interleaved; host end-to-end p50 beside CUDA-event GPU p50; accuracy on the digits test split;
   the MAC-ratio speedup beside the measured one.
2. ``semi_structured``: dense vs ``to_sparse_semi_structured`` GEMMs (fp16) over layer shapes and
   token counts, timed by CUDA events in alternating chunks; then an MLP through the runner with
   ``semi_structured=True``; then the demo's 2:4 CNN, to show which layers torch can convert.
3. ``nvml``: idle baseline and loaded power from :class:`~edgeprune.device.sensors.nvml.NvmlSource`
   through :class:`~edgeprune.device.measure.energy.PowerSampler`, energy per inference gross and net for a
   dense and a 2:4 GEMM, checked against NVML's own energy counter; the sampler's CPU cost.

Writes ``gpu_check.json`` (every figure) and ``gpu_check.md`` (the tables for BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
import traceback
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.analysis.cost import model_cost
from edgeprune.device.measure.timing import MeasureConfig, measure_interleaved, summarize
from edgeprune.device.runners.pyt import PytRunner
from edgeprune.models.digits import INPUT_SHAPE, digits_resnet, load_digits_data
from edgeprune.models.spec import load_model, load_weights
from edgeprune.prune.patterns import nm_mask

VARIANTS = ("channel-50mac", "unstructured-50", "nm-2-4")
REPO = Path(__file__).resolve().parents[1]


def environment() -> dict[str, Any]:
    """What the figures were taken on."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=torch.cuda.get_device_name(0),
            compute_capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
        )
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        env["driver"] = driver.decode() if isinstance(driver, bytes) else str(driver)
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        env["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
        pynvml.nvmlShutdown()
    except Exception as exc:  # the driver facts are labels; their absence is recorded, not fatal
        env["driver"] = None
        env["driver_reason"] = str(exc)
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    return env


# --------------------------------------------------------------------------------------------
# 1. the demo's models through the PyTorch runner


def load_demo_models(runs: Path) -> dict[str, nn.Module]:
    """The dense baseline and the pruned variants of a finished ``edgeprune demo`` run folder."""
    dense = digits_resnet()
    load_weights(dense, runs / "baseline" / "weights.safetensors")
    models: dict[str, nn.Module] = {"dense": dense.eval()}
    for name in VARIANTS:
        folder = runs / "models" / name
        if folder.is_dir():
            models[name] = load_model(str(folder)).model.eval()
    return models


def accuracy(runner: PytRunner, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a runner on the digits test split."""
    logits = runner.infer({"input": x})["logits"]
    return float((logits.argmax(1) == y).mean())


def gpu_interleaved(
    runners: dict[str, PytRunner], feeds: dict[str, np.ndarray], pipelined: int, rounds: int = 10, chunk: int = 10
) -> dict[str, float]:
    """Median CUDA-event time per forward of each runner, in alternating chunks."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        for name in list(runners) if r % 2 == 0 else list(runners)[::-1]:
            samples[name] += runners[name].time_gpu_ms(feeds, chunk, pipelined)
    return {name: statistics.median(v) for name, v in samples.items()}


def digits_section(runs: Path, batch_sizes: list[int], config: MeasureConfig, rounds: int) -> dict[str, Any]:
    """Dense and pruned digits models on CUDA: accuracy, host and GPU latency, measured vs MAC ratio."""
    models = load_demo_models(runs)
    data = load_digits_data()
    x_test, y_test = data.x_test.numpy(), data.y_test.numpy()
    dense_macs = model_cost(models["dense"], INPUT_SHAPE).macs
    macs = {name: model_cost(model, INPUT_SHAPE) for name, model in models.items()}
    theory = {name: dense_macs / cost.effective_macs for name, cost in macs.items()}
    rows: list[dict[str, Any]] = []
    for dtype, graphs in (("float32", False), ("float16", False), ("float16", True)):
        runners = {
            name: PytRunner(model, "cuda", dtype, input_shape=INPUT_SHAPE, cuda_graphs=graphs)
            for name, model in models.items()
        }
        for runner in runners.values():
            runner.activate()
        try:
            acc = {name: accuracy(r, x_test, y_test) for name, r in runners.items()}
            for batch in batch_sizes:
                rng = np.random.default_rng(batch)
                feeds = {"input": rng.standard_normal((batch, *INPUT_SHAPE)).astype(np.float32)}
                torch.cuda.reset_peak_memory_stats()
                samples = measure_interleaved(runners, dict.fromkeys(runners, feeds), config)
                synced = gpu_interleaved(runners, feeds, 1, rounds)
                piped = gpu_interleaved(runners, feeds, 10, rounds)
                host = {name: summarize(s, batch) for name, s in samples.items()}
                for name in runners:
                    rows.append(
                        {
                            "dtype": dtype,
                            "cuda_graphs": graphs,
                            "batch": batch,
                            "variant": name,
                            "accuracy": acc[name],
                            "macs": macs[name].macs,
                            "effective_macs": macs[name].effective_macs,
                            "mac_ratio": theory[name],
                            "host_p50_ms": host[name].p50_ms,
                            "host_cov": host[name].cov,
                            "host_iterations": host[name].iterations,
                            "gpu_ms": synced[name],
                            "gpu_pipelined_ms": piped[name],
                            "host_speedup": host["dense"].p50_ms / host[name].p50_ms,
                            "gpu_speedup": synced["dense"] / synced[name],
                            "gpu_pipelined_speedup": piped["dense"] / piped[name],
                            "throughput_per_s": host[name].throughput_per_s,
                        }
                    )
                rows[-1]["peak_gpu_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
        finally:
            for runner in runners.values():
                runner.deactivate()
    return {
        "rows": rows,
        "settings": {
            "timer": "host perf_counter around infer (H2D copy, forward, sync, D2H); "
            "GPU time by CUDA events around the forward: one forward per event "
            "pair (gpu_ms) and ten back to back (gpu_pipelined_ms)",
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        },
    }


# --------------------------------------------------------------------------------------------
# 2. 2:4 through semi-structured sparse tensors


def cuda_time_ms(fn: Callable[[], Any], iterations: int, per_event: int = 1) -> list[float]:
    """Per-call GPU time of ``fn`` by CUDA events, ``per_event`` calls between each pair."""
    times = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(per_event):
            fn()
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)) / per_event)
    return times


def interleaved_ms(
    fns: Mapping[str, Callable[[], Any]], rounds: int, chunk: int, per_event: int = 1
) -> dict[str, float]:
    """Median CUDA-event time of each function, timed in alternating chunks after a warm-up."""
    for fn in fns.values():
        cuda_time_ms(fn, 5)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            samples[name] += cuda_time_ms(fns[name], chunk, per_event)
    return {k: statistics.median(v) for k, v in samples.items()}


def pruned_2_4(out_features: int, in_features: int, generator: torch.Generator) -> torch.Tensor:
    """A random fp16 weight with the 2:4 pattern along its input dimension."""
    w = torch.randn(out_features, in_features, generator=generator).cuda().half()
    return w * nm_mask(w)


UNAVAILABLE_BACKENDS: dict[str, str] = {}
"""Semi-structured backends that could not run here, and why (filled by :func:`sparse_backends`)."""


def sparse_backends(w: torch.Tensor) -> dict[str, Any]:
    """The weight compressed by each semi-structured backend that runs on this GPU.

    A backend counts only if a product with it runs: torch's CUTLASS kernels compress on any
    GPU but multiply only on compute capability 8.x.
    """
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    out: dict[str, Any] = {}
    backends = {"cusparselt": SparseSemiStructuredTensorCUSPARSELT, "cutlass": SparseSemiStructuredTensorCUTLASS}
    for name, cls in backends.items():
        try:
            sparse = cls.from_dense(w)
            F.linear(torch.zeros(32, w.shape[1], device=w.device, dtype=w.dtype), sparse)
            out[name] = sparse
        except (RuntimeError, ValueError, NotImplementedError) as exc:
            UNAVAILABLE_BACKENDS[name] = str(exc).splitlines()[0]
    return out


def gemm_sweep(shapes: list[tuple[int, int]], tokens: list[int], rounds: int, chunk: int) -> list[dict[str, Any]]:
    """Dense vs semi-structured ``F.linear`` for each weight shape and token count, per backend.

    Each pair is timed twice: one call per event pair (a caller waiting on every result; host
    dispatch shows up as GPU idle time) and twenty back to back (a full queue: kernel time).
    """
    gen = torch.Generator().manual_seed(0)
    rows = []
    for out_f, in_f in shapes:
        w = pruned_2_4(out_f, in_f, gen)
        weights: dict[str, Any] = {"dense": w, **sparse_backends(w)}
        for n in tokens:
            x = torch.randn(n, in_f, generator=gen).cuda().half()
            with torch.inference_mode():
                want = F.linear(x, w)
                errs = {k: float((F.linear(x, v) - want).abs().max() / want.abs().max()) for k, v in weights.items()}
                fns = {k: partial(F.linear, x, v) for k, v in weights.items()}
                synced = interleaved_ms(fns, rounds, chunk)
                piped = interleaved_ms(fns, rounds, max(1, chunk // 4), per_event=20)
            flops = 2.0 * n * out_f * in_f
            row: dict[str, Any] = {
                "out_features": out_f,
                "in_features": in_f,
                "tokens": n,
                "dense_tflops": flops / piped["dense"] / 1e9,
            }
            for k in weights:
                row[f"{k}_ms"] = piped[k]
                row[f"{k}_synced_ms"] = synced[k]
                if k != "dense":
                    row[f"{k}_speedup"] = piped["dense"] / piped[k]
                    row[f"{k}_synced_speedup"] = synced["dense"] / synced[k]
                    row[f"{k}_max_rel_err"] = errs[k]
            rows.append(row)
    return rows


def mlp_through_runner(width: int, batches: list[int], config: MeasureConfig, rounds: int) -> dict[str, Any]:
    """A 2:4 MLP through the PyTorch runner, dense fp16 vs semi-structured fp16."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1024)
    ).eval()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(nm_mask(layer.weight))
    dense = PytRunner(model, "cuda", "float16", input_shape=(width,))
    sparse = PytRunner(model, "cuda", "float16", semi_structured=True, input_shape=(width,))
    rows = []
    dense.activate()
    sparse.activate()
    try:
        for batch in batches:
            feeds = {"input": np.random.default_rng(batch).standard_normal((batch, width)).astype(np.float32)}
            want, got = dense.infer(feeds)["logits"], sparse.infer(feeds)["logits"]
            samples = measure_interleaved({"dense": dense, "sparse": sparse}, {"dense": feeds, "sparse": feeds}, config)
            host = {k: summarize(v, batch).p50_ms for k, v in samples.items()}
            gpu = gpu_interleaved({"dense": dense, "sparse": sparse}, feeds, 1, rounds)
            piped = gpu_interleaved({"dense": dense, "sparse": sparse}, feeds, 10, rounds)
            rows.append(
                {
                    "batch": batch,
                    "host_dense_ms": host["dense"],
                    "host_sparse_ms": host["sparse"],
                    "host_speedup": host["dense"] / host["sparse"],
                    "gpu_dense_ms": gpu["dense"],
                    "gpu_sparse_ms": gpu["sparse"],
                    "gpu_speedup": gpu["dense"] / gpu["sparse"],
                    "gpu_pipelined_dense_ms": piped["dense"],
                    "gpu_pipelined_sparse_ms": piped["sparse"],
                    "gpu_pipelined_speedup": piped["dense"] / piped["sparse"],
                    "max_abs_diff": float(np.abs(got - want).max()),
                }
            )
        converted, left = list(sparse.converted), dict(sparse.left_dense)
    finally:
        dense.deactivate()
        sparse.deactivate()
    return {"width": width, "converted": converted, "left_dense": left, "rows": rows}


def semi_structured_section(
    runs: Path, shapes: list[tuple[int, int]], tokens: list[int], rounds: int, chunk: int, config: MeasureConfig
) -> dict[str, Any]:
    """The GEMM sweep, the MLP through the runner and the digits 2:4 model's convertible layers."""
    out: dict[str, Any] = {
        "gemm": gemm_sweep(shapes, tokens, rounds, chunk),
        "unavailable_backends": dict(UNAVAILABLE_BACKENDS),
    }
    try:
        out["mlp"] = mlp_through_runner(4096, [1, 64, 1024], config, rounds)
    except Exception:
        out["mlp_error"] = traceback.format_exc()
    folder = runs / "models" / "nm-2-4"
    if folder.is_dir():
        runner = PytRunner(
            load_model(str(folder)).model, "cuda", "float16", semi_structured=True, input_shape=INPUT_SHAPE
        )
        runner.activate()
        out["digits_nm_2_4"] = {"converted": list(runner.converted), "left_dense": dict(runner.left_dense)}
        runner.deactivate()
    return out


def _profile_rows(prof: Any, calls: int) -> list[dict[str, Any]]:
    """Operator and kernel totals per call from a torch profiler run, largest first."""
    rows = []
    for event in prof.key_averages():
        device_us = float(getattr(event, "self_device_time_total", 0.0) or 0.0)
        rows.append(
            {
                "name": event.key,
                "count_per_call": event.count / calls,
                "self_cpu_us_per_call": float(event.self_cpu_time_total) / calls,
                "self_device_us_per_call": device_us / calls,
            }
        )
    rows.sort(key=lambda r: -(r["self_cpu_us_per_call"] + r["self_device_us_per_call"]))
    return rows[:10]


def semi_profile_section(calls: int = 20) -> dict[str, Any]:
    """Where the time of one small semi-structured product goes: host operators or GPU kernels."""
    from torch.profiler import ProfilerActivity, profile
    from torch.sparse import to_sparse_semi_structured

    gen = torch.Generator().manual_seed(2)
    w = pruned_2_4(4096, 4096, gen)
    weights = {"dense": w, "cusparselt": to_sparse_semi_structured(w)}
    x = torch.randn(128, 4096, generator=gen).cuda().half()
    out: dict[str, Any] = {"shape": "4096x4096 weight, 128 tokens, fp16", "calls": calls}
    with torch.inference_mode():
        for name, weight in weights.items():
            for _ in range(10):
                F.linear(x, weight)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(calls):
                    F.linear(x, weight)
                torch.cuda.synchronize()
            out[name] = _profile_rows(prof, calls)
    return out


# --------------------------------------------------------------------------------------------
# 3. NVML power and energy


def nvml_section(idle_s: float, load_s: float) -> dict[str, Any]:
    """Idle and loaded board power, energy per GEMM gross and net, against NVML's energy counter."""
    from torch.sparse import to_sparse_semi_structured

    from edgeprune.device.measure.energy import PowerSampler, measure_idle
    from edgeprune.device.sensors.nvml import NvmlSource

    source = NvmlSource(0)
    source.open()
    out: dict[str, Any] = {"device": source.device_name, "scope": source.scope}
    torch.cuda.synchronize()
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    idle = measure_idle(source, idle_s)
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    cpu_s = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    out["idle"] = idle.to_dict()
    out["sampler_cpu_percent_of_one_core"] = 100.0 * cpu_s / (wall1 - wall0)
    gen = torch.Generator().manual_seed(1)
    w = pruned_2_4(8192, 8192, gen)
    ws = to_sparse_semi_structured(w)
    x = torch.randn(4096, 8192, generator=gen).cuda().half()
    loads = {"dense GEMM 4096x8192x8192": lambda: F.linear(x, w), "2:4 GEMM 4096x8192x8192": lambda: F.linear(x, ws)}
    out["loads"] = []
    with torch.inference_mode():
        for label, fn in loads.items():
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
            with PowerSampler(source) as sampler:
                e0 = source.read_energy_mj()
                t0 = time.monotonic()
                count = 0
                while time.monotonic() - t0 < load_s:
                    for _ in range(20):
                        fn()
                    torch.cuda.synchronize()
                    count += 20
                t1 = time.monotonic()
                e1 = source.read_energy_mj()
            report = sampler.report((t0, t1), inferences=count, idle_mw=idle.mean_power_mw)
            counter_mj = (e1 - e0) if e0 is not None and e1 is not None else None
            out["loads"].append(
                {
                    "load": label,
                    "calls": count,
                    "window_s": t1 - t0,
                    "ms_per_call": 1000.0 * (t1 - t0) / count,
                    "mean_power_w": (report.get("mean_power_mw") or 0) / 1000.0 or None,
                    "energy_mj_per_call": report.get("energy_mj_per_inference"),
                    "energy_mj_per_call_net": report.get("energy_mj_per_inference_net"),
                    "counter_energy_mj_per_call": counter_mj / count if counter_mj is not None else None,
                    "n_samples": report.get("n_samples"),
                    "sample_rate_hz": report.get("sample_rate_hz"),
                    "reason": report.get("reason"),
                }
            )
    source.close()
    return out


# --------------------------------------------------------------------------------------------
# report


def _f(value: Any, spec: str = ".3f") -> str:
    return "null" if value is None else format(value, spec)


def markdown(result: dict[str, Any]) -> str:
    """The tables BENCHMARKS.md quotes."""
    env = result["environment"]
    lines = [
        f"# GPU checks ({env.get('gpu', 'no GPU')}, {result['date']})",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {env.get('gpu')} (compute capability {env.get('compute_capability')}, driver "
        f"{env.get('driver')}, power limit {env.get('power_limit_w')} W), torch {env['torch']} "
        f"(CUDA {env['cuda_runtime']}), onnxruntime {env.get('onnxruntime')} with providers "
        f"{env.get('onnxruntime_providers')}.",
        "",
    ]
    for name, section in result["sections"].items():
        if "error" in section:
            lines += [f"## {name}: failed", "", "```", section["error"].strip()[-1500:], "```", ""]
    digits = result["sections"].get("digits", {})
    if "rows" in digits:
        lines += [
            "## Digits models through the PyTorch CUDA runner",
            "",
            "Speedups are dense time / variant time in the same run; GPU: CUDA events around one forward "
            "(synced) or ten back to back (queued).",
            "",
            "| dtype | graphs | batch | variant | accuracy | MAC ratio | host p50 ms | GPU synced ms | "
            "GPU queued ms | host x | GPU synced x | GPU queued x |",
            "|---" * 12 + "|",
        ]
        for r in digits["rows"]:
            lines.append(
                f"| {r['dtype']} | {'yes' if r['cuda_graphs'] else 'no'} | {r['batch']} | {r['variant']} | "
                f"{r['accuracy']:.4f} | {r['mac_ratio']:.2f} | {r['host_p50_ms']:.3f} | {r['gpu_ms']:.3f} | "
                f"{r['gpu_pipelined_ms']:.3f} | {r['host_speedup']:.2f} | {r['gpu_speedup']:.2f} | "
                f"{r['gpu_pipelined_speedup']:.2f} |"
            )
        lines.append("")
    semi = result["sections"].get("semi_structured", {})
    if "gemm" in semi:
        lines += [
            "## 2:4 semi-structured GEMMs (fp16, CUDA events, interleaved)",
            "",
            "Queued: twenty calls between events (kernel time). Synced: one call per event pair (what a "
            "caller waiting on each result gets; host dispatch included). Backends that could not run: "
            f"{semi.get('unavailable_backends') or 'none'}.",
            "",
            "| out x in | tokens | dense ms | cuSPARSELt ms | CUTLASS ms | cuSPARSELt x | CUTLASS x | "
            "synced dense ms | synced cuSPARSELt x | synced CUTLASS x | dense TFLOP/s | max rel err |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in semi["gemm"]:
            lines.append(
                f"| {r['out_features']}x{r['in_features']} | {r['tokens']} | {r['dense_ms']:.4f} | "
                f"{_f(r.get('cusparselt_ms'), '.4f')} | {_f(r.get('cutlass_ms'), '.4f')} | "
                f"{_f(r.get('cusparselt_speedup'), '.2f')} | {_f(r.get('cutlass_speedup'), '.2f')} | "
                f"{r['dense_synced_ms']:.4f} | {_f(r.get('cusparselt_synced_speedup'), '.2f')} | "
                f"{_f(r.get('cutlass_synced_speedup'), '.2f')} | {r['dense_tflops']:.0f} | "
                f"{max(v for k, v in r.items() if k.endswith('max_rel_err')):.1e} |"
            )
        lines.append("")
    if "mlp" in semi:
        mlp = semi["mlp"]
        lines += [
            f"## 2:4 MLP ({mlp['width']} wide, 3 layers, fp16) through the runner",
            "",
            f"Converted: {mlp['converted']}; left dense: {mlp['left_dense']}",
            "",
            "| batch | host dense ms | host 2:4 ms | host x | GPU synced dense ms | GPU synced 2:4 ms | "
            "GPU synced x | GPU queued dense ms | GPU queued 2:4 ms | GPU queued x | max abs diff |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in mlp["rows"]:
            lines.append(
                f"| {r['batch']} | {r['host_dense_ms']:.3f} | {r['host_sparse_ms']:.3f} | "
                f"{r['host_speedup']:.2f} | {r['gpu_dense_ms']:.3f} | {r['gpu_sparse_ms']:.3f} | "
                f"{r['gpu_speedup']:.2f} | {r['gpu_pipelined_dense_ms']:.3f} | "
                f"{r['gpu_pipelined_sparse_ms']:.3f} | {r['gpu_pipelined_speedup']:.2f} | "
                f"{r['max_abs_diff']:.2e} |"
            )
        lines.append("")
    if "mlp_error" in semi:
        lines += ["## 2:4 MLP through the runner: failed", "", "```", semi["mlp_error"].strip()[-1500:], "```", ""]
    if "digits_nm_2_4" in semi:
        d = semi["digits_nm_2_4"]
        lines += [
            f"Digits 2:4 CNN with `semi_structured=True`: converted {d['converted']}; left dense "
            f"{len(d['left_dense'])} layers ({sorted(set(d['left_dense'].values()))}).",
            "",
        ]
    prof = result["sections"].get("semi_profile", {})
    if "dense" in prof:
        lines += [f"## Where a small 2:4 product's time goes ({prof['shape']}, torch profiler, per call)", ""]
        for name in ("dense", "cusparselt"):
            lines += [f"{name}:", "", "| operator or kernel | count | self CPU us | self GPU us |", "|---|---|---|---|"]
            for r in prof.get(name, []):
                lines.append(
                    f"| `{r['name'][:90]}` | {r['count_per_call']:.2f} | {r['self_cpu_us_per_call']:.1f} | "
                    f"{r['self_device_us_per_call']:.1f} |"
                )
            lines.append("")
    nvml = result["sections"].get("nvml", {})
    if "loads" in nvml:
        idle = nvml["idle"]
        lines += [
            "## NVML power (board only)",
            "",
            f"Idle: {_f((idle['mean_power_mw'] or 0) / 1000, '.1f')} W over {idle['duration_s']:.1f} s "
            f"({idle['n_samples']} samples); sampler cost {nvml['sampler_cpu_percent_of_one_core']:.2f}% of "
            "one core.",
            "",
            "| load | calls | ms/call | mean W | mJ/call gross | mJ/call net | mJ/call (NVML counter) | samples |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in nvml["loads"]:
            lines.append(
                f"| {r['load']} | {r['calls']} | {r['ms_per_call']:.3f} | {_f(r['mean_power_w'], '.1f')} | "
                f"{_f(r['energy_mj_per_call'])} | {_f(r['energy_mj_per_call_net'])} | "
                f"{_f(r['counter_energy_mj_per_call'])} | {r['n_samples']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=REPO / "runs/demo", help="a finished demo run folder")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script itself")
    parser.add_argument("--only", nargs="*", default=None, help="run only these sections")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA GPU; these checks run only where one exists")
    quick = args.quick
    config = MeasureConfig(warmup_s=0.2, min_iterations=20 if quick else 100, min_duration_s=0.2 if quick else 1.0)
    shapes = [(1024, 1024)] if quick else [(4096, 4096), (11008, 4096), (4096, 11008), (8192, 8192)]
    tokens = [64] if quick else [16, 128, 1024, 8192]
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "digits": lambda: digits_section(
            args.runs, [1, 32] if quick else [1, 32, 256, 2048], config, 2 if quick else 10
        ),
        "semi_structured": lambda: semi_structured_section(
            args.runs, shapes, tokens, 3 if quick else 10, 10 if quick else 20, config
        ),
        "nvml": lambda: nvml_section(1.0 if quick else 5.0, 1.0 if quick else 6.0),
        "semi_profile": semi_profile_section,
    }
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "environment": environment(),
        "command": "python benchmarks/gpu_check.py" + (" --quick" if quick else ""),
        "sections": {},
    }
    for name, run in sections.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        try:
            result["sections"][name] = run()
        except Exception:
            result["sections"][name] = {"error": traceback.format_exc()}
        result["sections"][name]["seconds"] = time.perf_counter() - start
        print(f"{name}: {result['sections'][name]['seconds']:.1f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))
    (args.out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
