"""Benchmark bundles on this machine and produce result records (the contract of DESIGN.md).

For each bundle: verify its checksums, re-check its outputs against ``reference.npz`` (a wrong
model measured fast is worth nothing), then time it at every batch size. A baseline bundle, when
given, is timed in the same run, interleaved with each variant, so measured speedup compares like
with like. Power and energy are ``null`` with a reason unless a sensor is wired in: never guessed.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import bundle as bundle_mod
from edgeprune.bundle import Manifest
from edgeprune.device import provenance
from edgeprune.device.measure.settings import BenchOptions, MeasureConfig
from edgeprune.device.measure.timing import measure_interleaved, summarize
from edgeprune.device.runners.base import Runner
from edgeprune.device.runners.ort import OrtRunner
from edgeprune.errors import BundleError
from edgeprune.record import ResultRecord, Variant

BASELINE = "baseline"
# RUNNERS (edgeprune.vocab, checked by BenchOptions): ``ort``: ONNX Runtime on the CPU; ``ort-cuda``: ONNX
# Runtime's CUDA provider, nothing else (a missing provider is an error, not a silent fall-back to the CPU);
# ``trt``: a TensorRT engine built from the bundle (or taken from the engine cache) and run by
# TrtRunner.


@dataclass(frozen=True)
class BenchRequest:
    """What to measure, and how.

    Attributes:
        bundles: bundle folders to measure.
        baseline: the dense bundle the variants are compared with, or None.
        batch_sizes: each bundle is timed at each of these.
        config: warm-up and stopping rule.
        options: runner, threads and power sampling (see :class:`BenchOptions`).
        power_source: use this source instead of detecting one (tests, or a chosen rail).
    """

    bundles: Sequence[Path]
    baseline: Path | None = None
    batch_sizes: Sequence[int] = (1,)
    config: MeasureConfig = MeasureConfig()
    options: BenchOptions = BenchOptions()
    power_source: Any = None


def check_reference(bundle_dir: Path, manifest: Manifest, runner: Runner, tensorrt: bool = False) -> dict[str, Any]:
    """Run the bundle's reference inputs and compare with its reference outputs.

    TensorRT runs FP32 layers in TF32 on Ampere and newer GPUs, so for it the manifest's wider
    ``atol_tensorrt`` applies where the packager recorded one.

    Raises:
        BundleError: if the outputs differ beyond the tolerance recorded in the manifest.
    """
    path = bundle_dir / bundle_mod.REFERENCE_FILE
    with np.load(path, allow_pickle=False) as ref:
        inputs = {spec.name: ref[f"input:{spec.name}"] for spec in manifest.inputs}
        expected = {spec.name: ref[f"output:{spec.name}"] for spec in manifest.outputs}
    got = runner.infer(inputs)
    parity = manifest.parity
    atol = float(parity.get("atol_tensorrt", parity.get("atol", 1e-4)) if tensorrt else parity.get("atol", 1e-4))
    worst = 0.0
    for name, want in expected.items():
        diff = float(np.max(np.abs(got[name].astype(np.float64) - want.astype(np.float64))))
        worst = max(worst, diff)
    if worst > atol:
        raise BundleError(
            f"bundle {manifest.name}: outputs differ from reference.npz by {worst:.3g} (> atol {atol}); "
            "the runtime computes a different model than was packaged"
        )
    return {"max_abs_diff": worst, "atol": atol, "passed": True}


def make_feeds(manifest: Manifest, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs shaped by the manifest, with the symbolic batch set to ``batch_size``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in manifest.inputs:
        shape = [batch_size if not isinstance(d, int) else d for d in spec.shape]
        feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_bench(request: BenchRequest, on_progress: Callable[[str, float], None] | None = None) -> ResultRecord:
    """Measure the requested bundles and return one result record.

    Args:
        request: bundles, baseline, batch sizes and timing rule.
        on_progress: called with (label, fraction of that label's work done).

    Raises:
        BundleError: a bundle is invalid or computes the wrong outputs.
    """
    loaded: dict[str, tuple[Path, Manifest]] = {}
    if request.baseline is not None:
        loaded[BASELINE] = (Path(request.baseline), bundle_mod.read_manifest(Path(request.baseline)))
    for path in request.bundles:
        manifest = bundle_mod.read_manifest(Path(path))
        label = manifest.name
        if label in loaded:
            label = f"{label}@{Path(path).name}"
        loaded[label] = (Path(path), manifest)

    engines: dict[str, dict[str, Any]] = {}
    runners: dict[str, Runner] = {}
    for label, (path, manifest) in loaded.items():
        runners[label], engine = make_runner(request, path, manifest)
        if engine is not None:
            engines[label] = engine
        if on_progress is not None and engine is not None:
            on_progress(f"engine {label}", 1.0)
    variants: dict[str, Variant] = {}
    started = time.time()
    try:
        for label, runner in runners.items():
            runner.activate()
            path, manifest = loaded[label]
            variants[label] = Variant(
                name=manifest.name,
                bundle=str(path),
                is_baseline=label == BASELINE,
                precision=manifest.precision,
                pattern=manifest.pattern,
                cost=manifest.cost,
                accuracy=manifest.model.accuracy,
                # False where a pruned model was packaged without fine-tuning (its accuracy says how much it lost).
                finetuned=manifest.model.finetuned,
                reference_check=check_reference(path, manifest, runner, tensorrt=request.options.runner == "trt"),
                model_file_bytes=(path / bundle_mod.MODEL_FILE).stat().st_size,
                engine=engines.get(label),
            )
        # Measure each variant interleaved with the baseline, one batch size at a time.
        others = [label for label in runners if label != BASELINE] or [BASELINE]
        for batch in request.batch_sizes:
            for label in others:
                group = [label] if label == BASELINE or BASELINE not in runners else [BASELINE, label]
                feeds = {lb: make_feeds(loaded[lb][1], batch) for lb in group}
                progress = None if on_progress is None else (lambda f, lb=label, b=batch: on_progress(f"{lb} b{b}", f))
                samples = measure_interleaved({lb: runners[lb] for lb in group}, feeds, request.config, progress)
                for lb in group:
                    stats = summarize(samples[lb], batch).to_dict()
                    # The baseline is timed beside every variant; keep each pairing's own figures.
                    key = str(batch)
                    if lb == BASELINE and label != BASELINE:
                        pairing = variants[label].baseline_latency
                        variants[label].baseline_latency = {**(pairing or {}), key: stats}
                        variants[BASELINE].latency.setdefault(key, stats)
                    else:
                        variants[lb].latency[key] = stats

        power = _measure_power(request, runners, loaded, variants, on_progress)
    finally:
        for runner in runners.values():
            runner.deactivate()

    for label, variant in variants.items():
        variant.comparison = _compare(variant) if label != BASELINE else None
    settings = next(iter(runners.values())).settings if runners else {}
    memory: dict[str, Any] = {
        "peak_rss_bytes": peak_rss_bytes(),
        "gpu_bytes": None,
        "gpu_reason": "the ONNX Runtime CPU runner uses no GPU memory",
    }
    if request.options.runner == "trt":
        sizes = [e.get("device_memory_bytes") for e in engines.values()]
        known = [int(b) for b in sizes if b is not None]
        memory["gpu_bytes"] = max(known) if known else None
        memory["gpu_reason"] = (
            "largest engine activation memory (device_memory_size); weights not included"
            if known
            else "TensorRT did not report the engines' device memory"
        )
    elif request.options.runner == "ort-cuda":
        memory["gpu_reason"] = "ONNX Runtime's CUDA provider does not report its memory"
    return ResultRecord(
        created_unix_s=started,
        provenance=provenance.collect(),
        runner={
            "name": runners[next(iter(runners))].name if runners else request.options.runner,
            "kind": request.options.runner,
            "settings": settings,
        },
        method={
            "warmup_s": request.config.warmup_s,
            "min_iterations": request.config.min_iterations,
            "min_duration_s": request.config.min_duration_s,
            "interleaved_chunk": request.config.chunk,
            "timer": "host perf_counter_ns around infer(), inputs already in host memory",
        },
        memory=memory,
        power=power,
        variants=list(variants.values()),
    )


def make_runner(request: BenchRequest, path: Path, manifest: Manifest) -> tuple[Runner, dict[str, Any] | None]:
    """The runner for one bundle, and for TensorRT the engine build's report.

    Raises:
        MissingDependencyError: the runner's library (TensorRT, cuda-python) is not installed.
        EngineBuildError: TensorRT could not build the bundle's engine.
    """
    model, threads = path / bundle_mod.MODEL_FILE, request.options.intra_op_threads
    if request.options.runner == "ort":
        return OrtRunner(model, intra_op_threads=threads), None
    if request.options.runner == "ort-cuda":
        return OrtRunner(model, providers=("CUDAExecutionProvider",), intra_op_threads=threads), None
    from edgeprune.device.engine import build_engine, options_for_bundle
    from edgeprune.device.runners.trt import TrtRunner

    built = build_engine(path, options_for_bundle(manifest, batch_sizes=request.batch_sizes))
    return TrtRunner(built.engine_path), built.to_dict()


def _measure_power(
    request: BenchRequest,
    runners: Mapping[str, Runner],
    loaded: dict[str, tuple[Path, Manifest]],
    variants: dict[str, Variant],
    on_progress: Callable[[str, float], None] | None,
) -> dict[str, Any]:
    """Energy per inference for every bundle and batch size, or null with the reason.

    Latency is measured interleaved, but energy cannot be split between runners that share a
    window, so each runner runs alone for ``energy_s`` while the sampler integrates power; an
    idle baseline taken first gives the net figure.
    """
    from edgeprune.device.measure.energy import PowerSampler, measure_idle, no_power
    from edgeprune.device.sensors.source import detect_sources

    if not request.options.power:
        return no_power("power sampling was switched off for this run")
    source = request.power_source
    reasons: list[str] = []
    if source is None:
        sources, reasons = detect_sources()
        if not sources:
            return no_power("no power sensor on this machine: " + "; ".join(reasons))
        source, others = sources[0], sources[1:]
        for other in others:
            other.close()
    try:
        idle = measure_idle(source, request.options.idle_s)
        for label, runner in runners.items():
            for batch in request.batch_sizes:
                feeds = make_feeds(loaded[label][1], batch)
                count = 0
                with PowerSampler(source) as sampler:
                    counter_start = _energy_counter_mj(source)
                    t0 = time.monotonic()
                    while time.monotonic() - t0 < request.options.energy_s:
                        runner.infer(feeds)
                        count += 1
                    t1 = time.monotonic()
                    counter_end = _energy_counter_mj(source)
                report = sampler.report((t0, t1), inferences=count * batch, idle_mw=idle.mean_power_mw)
                report["per"] = "sample (inference of one input)"
                report["counter_energy_mj_per_inference"] = (
                    (counter_end - counter_start) / (count * batch)
                    if counter_start is not None and counter_end is not None
                    else None
                )
                variants[label].energy = {**(variants[label].energy or {}), str(batch): report}
                if on_progress is not None:
                    on_progress(f"energy {label} b{batch}", 1.0)
        return {
            "source": source.name,
            "scope": source.scope,
            "idle": idle.to_dict(),
            "energy_s_per_run": request.options.energy_s,
            "not_used": reasons,
        }
    finally:
        source.close()


def _energy_counter_mj(source: Any) -> float | None:
    """The source's own cumulative energy counter (NVML on Volta and newer), or None.

    Where a sensor reports power as a running average (NVML on data-centre GPUs averages over one
    second), the counter's difference over a window is the better energy figure; both are kept.
    """
    read = getattr(source, "read_energy_mj", None)
    if not callable(read):
        return None
    try:
        value = read()
    except Exception:  # a counter is a second opinion only; the sampled figure still stands
        return None
    return float(value) if value is not None else None


def _compare(variant: Variant) -> dict[str, Any] | None:
    """Measured speedup per batch size (baseline p50 / variant p50, same run) beside theory."""
    base = variant.baseline_latency
    if not base:
        return None
    theoretical = variant.cost.get("theoretical_speedup")
    per_batch = {}
    for key, stats in variant.latency.items():
        measured = base[key]["p50_ms"] / stats["p50_ms"]
        per_batch[key] = {
            "measured_speedup": measured,
            "theoretical_speedup": theoretical,
            "measured_over_theoretical": measured / theoretical if theoretical else None,
        }
    return {"per_batch": per_batch, "theoretical_label": "MAC ratio (dense MACs / effective MACs), estimate"}
