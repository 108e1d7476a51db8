"""Drive ``trtexec`` (it ships with TensorRT on every JetPack) and parse what it prints.

For users who prefer NVIDIA's own benchmark tool to the Python runner. The hard part is not running
it but making two runs comparable: trtexec's defaults *flipped* between TensorRT 10.x (JetPack 6)
and 11.x, so the same command line measures different things on a Jetson and on a host:

    setting                        TensorRT 10.x default    TensorRT 11.x default
    CUDA graph                     off                      on
    H2D/D2H copies in the loop     included                 excluded
    spin-wait synchronization      off (blocking sync)      on
    separate per-layer profiling   opt-in                   always

:func:`trtexec_command` therefore writes every one of these settings out. The flags that exist
differ by version:

- 10.x knows only the flags that leave its defaults: ``--useCudaGraph``, ``--noDataTransfers``,
  ``--useSpinWait``, ``--separateProfileRun``. Its defaults have no flag; when a setting equals
  the 10.x default nothing can be written, and the result lists it under ``implicit_defaults``
  (the run is still explicit in the recorded settings).
- 11.x adds the opposite flags ``--noCudaGraph``, ``--includeDataTransfers``, ``--noSpinWait`` and
  always profiles in a separate run. For the states that are 11.x defaults the older spellings
  are written (``--useCudaGraph``, ``--noDataTransfers``, ``--useSpinWait``): NVIDIA documents
  them beside the new ones for ``tensorrt_rtx``, the sibling tool that already had 11.x's
  defaults. Should an 11.x build reject one, :func:`run_trtexec` fails loudly with trtexec's own
  message rather than silently measuring something else.

Precision flags (``--fp16``, ``--int8``) exist only on 10.x; 11.x networks are strongly typed and
take precision from the ONNX. INT8 never passes ``--calib``: scales come from Q/DQ nodes.
Sparsity is ``--sparsity=enable`` (use sparse kernels where weights already follow 2:4) or
``disable``; ``force`` rewrote weights, is deprecated since TensorRT 10.0 and is refused here.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeprune.bundle import Manifest
from edgeprune.device.engine import SUPPORTED_TRT_MAJORS, BuildOptions
from edgeprune.device.engine.logs import (
    parse_engine_info,
    parse_layer_profile,
    parse_sparsity,
    parse_trtexec,
)
from edgeprune.errors import MissingDependencyError, RunnerError, UsageError

# Where JetPack and NVIDIA containers install trtexec when it is not on PATH.
TRTEXEC_FALLBACK_PATHS = ("/usr/src/tensorrt/bin/trtexec",)

# setting -> major -> (flag that turns it on, flag that turns it off); None = no such flag.
MODE_FLAGS: dict[str, dict[int, tuple[str | None, str | None]]] = {
    "use_cuda_graph": {10: ("--useCudaGraph", None), 11: ("--useCudaGraph", "--noCudaGraph")},
    "data_transfers": {10: (None, "--noDataTransfers"), 11: ("--includeDataTransfers", "--noDataTransfers")},
    "spin_wait": {10: ("--useSpinWait", None), 11: ("--useSpinWait", "--noSpinWait")},
}
# trtexec's own defaults per major version (what an omitted flag means).
TRTEXEC_DEFAULTS: dict[int, dict[str, bool]] = {
    10: {"use_cuda_graph": False, "data_transfers": True, "spin_wait": False},
    11: {"use_cuda_graph": True, "data_transfers": False, "spin_wait": True},
}
SPARSITY_MODES = ("enable", "disable")


def _format_shape(name: str, dims: Sequence[int]) -> str:
    # trtexec splits tensor specs on ',' and the last ':'; quote names that contain either.
    shown = f"'{name}'" if ("," in name or ":" in name) else name
    return f"{shown}:{'x'.join(str(int(d)) for d in dims)}"


def _concrete(shape: Sequence[int | str | None], batch: int, name: str) -> list[int]:
    dims: list[int] = []
    for axis, dim in enumerate(shape):
        if isinstance(dim, int) and dim >= 0:
            dims.append(dim)
        elif axis == 0:
            dims.append(batch)
        else:
            raise UsageError(f"input {name} has a symbolic dimension {dim!r} at axis {axis}: only the batch may be")
    return dims


def input_shapes_from_manifest(manifest: Manifest) -> dict[str, list[int | str | None]]:
    """Input name -> shape (symbolic batch kept as a string) from a bundle manifest."""
    return {spec.name: list(spec.shape) for spec in manifest.inputs}


def mode_flags(
    trt_major: int, *, use_cuda_graph: bool, data_transfers: bool, spin_wait: bool
) -> tuple[list[str], list[str]]:
    """The loop-mode flags for one TensorRT major version.

    Returns:
        ``(flags, implicit_defaults)``: flags to pass, and the settings that equal this version's
        default and have no flag to say so (only happens on 10.x).

    Raises:
        UsageError: the major version is not 10 or 11.
    """
    if trt_major not in SUPPORTED_TRT_MAJORS:
        raise UsageError(f"trtexec of TensorRT {trt_major}.x is not supported (supported: {SUPPORTED_TRT_MAJORS})")
    wanted = {"use_cuda_graph": use_cuda_graph, "data_transfers": data_transfers, "spin_wait": spin_wait}
    flags: list[str] = []
    implicit: list[str] = []
    for setting, value in wanted.items():
        on_flag, off_flag = MODE_FLAGS[setting][trt_major]
        flag = on_flag if value else off_flag
        if flag is not None:
            flags.append(flag)
        elif value == TRTEXEC_DEFAULTS[trt_major][setting]:
            implicit.append(setting)
        else:  # pragma: no cover - the table above has a flag for every non-default state
            raise UsageError(f"trtexec {trt_major}.x has no flag to set {setting}={value}")
    if trt_major == 10:
        # 10.x attaches the per-layer profiler to the timed run unless told otherwise, which
        # inflates latency; 11.x always profiles in a separate run.
        flags.append("--separateProfileRun")
    return flags, implicit


def export_paths(engine_path: Path, export_dir: Path | None = None) -> dict[str, Path]:
    """Where trtexec writes layer info, per-layer profile and per-iteration times for one engine."""
    engine_path = Path(engine_path)
    folder = Path(export_dir) if export_dir is not None else engine_path.parent
    stem = engine_path.stem
    return {
        "layer_info": folder / f"{stem}.layers.json",
        "profile": folder / f"{stem}.profile.json",
        "times": folder / f"{stem}.times.json",
    }


def trtexec_command(
    onnx: Path | None,
    engine_path: Path,
    options: BuildOptions,
    *,
    trt_major: int,
    input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
    run_batch: int | None = None,
    use_cuda_graph: bool = False,
    data_transfers: bool = True,
    spin_wait: bool = False,
    warmup_ms: int = 200,
    iterations: int = 10,
    duration_s: float = 3.0,
    avg_runs: int = 10,
    percentiles: Sequence[float] = (90, 95, 99),
    sparsity: str | None = None,
    export_dir: Path | None = None,
    binary: str = "trtexec",
) -> list[str]:
    """Build a trtexec command line with every methodology setting written out.

    The defaults follow edgeprune's own runner (no CUDA graph, copies included, blocking sync) so a
    trtexec run and a Python-runner run measure the same thing, on 10.x and on 11.x alike.

    Args:
        onnx: the ONNX to build from (``--onnx`` + ``--saveEngine``), or None to time an existing
            engine (``--loadEngine``; build flags are then omitted).
        engine_path: the engine to write or load.
        options: build options (precision, sparsity, workspace, batch profile, timing cache).
        trt_major: 10 or 11; decides which flags exist (see the module docstring).
        input_shapes: input name -> shape with the batch as a symbol; gives the min/opt/max
            profile from ``options`` and the ``--shapes`` to time at.
        run_batch: the batch size to time; default ``options.opt_batch``.
        use_cuda_graph, data_transfers, spin_wait: the loop mode (see the table above).
        warmup_ms, iterations, duration_s, avg_runs, percentiles: trtexec's timing loop; the
            defaults are trtexec's own (200 ms, 10 iterations and at least 3 s, 10, p90/95/99).
        sparsity: ``enable`` or ``disable``; default from ``options.sparse_weights``.
        export_dir: where the layer info, profile and times JSON go (default: beside the engine).
        binary: the trtexec executable.

    Raises:
        UsageError: ``force`` or an unknown sparsity mode, an unsupported major version, a
            non-batch symbolic dimension, or a nonsensical loop parameter.
    """
    mode = sparsity if sparsity is not None else ("enable" if options.sparse_weights else "disable")
    if mode == "force":
        raise UsageError(
            "--sparsity=force overwrites the weights and is deprecated since TensorRT 10.0: prune the model "
            "to 2:4 first (edgeprune prune --pattern nm) and use --sparsity=enable"
        )
    if mode not in SPARSITY_MODES:
        raise UsageError(f"sparsity must be one of {SPARSITY_MODES}, got {mode!r}")
    if warmup_ms < 0 or iterations < 1 or duration_s < 0 or avg_runs < 1:
        raise UsageError("warmup_ms and duration_s must be >= 0, iterations and avg_runs >= 1")
    if not percentiles or any(not 0 < p < 100 for p in percentiles):
        raise UsageError(f"percentiles must lie strictly between 0 and 100, got {list(percentiles)}")
    loop_flags, _ = mode_flags(
        trt_major, use_cuda_graph=use_cuda_graph, data_transfers=data_transfers, spin_wait=spin_wait
    )
    batch = run_batch if run_batch is not None else options.opt_batch
    exports = export_paths(engine_path, export_dir)

    cmd = [binary]
    if onnx is not None:
        cmd += [f"--onnx={onnx}", f"--saveEngine={engine_path}"]
    else:
        cmd += [f"--loadEngine={engine_path}"]

    if input_shapes:
        if onnx is not None:
            for flag, size in (
                ("--minShapes", options.min_batch),
                ("--optShapes", options.opt_batch),
                ("--maxShapes", options.max_batch),
            ):
                specs = [_format_shape(n, _concrete(s, size, n)) for n, s in input_shapes.items()]
                cmd.append(f"{flag}={','.join(specs)}")
        specs = [_format_shape(n, _concrete(s, batch, n)) for n, s in input_shapes.items()]
        cmd.append(f"--shapes={','.join(specs)}")

    if onnx is not None:
        workspace_mib = math.ceil(options.workspace_bytes / (1 << 20))
        cmd += [
            f"--memPoolSize=workspace:{workspace_mib}M",
            f"--builderOptimizationLevel={options.builder_optimization_level}",
            f"--sparsity={mode}",
        ]
        if trt_major == 10 and options.precision == "fp16":
            cmd.append("--fp16")
        elif trt_major == 10 and options.precision == "int8":
            cmd += ["--int8", "--fp16"]  # Q/DQ scales from the ONNX; never --calib
        if options.timing_cache is not None:
            cmd.append(f"--timingCacheFile={options.timing_cache}")

    cmd += [
        "--profilingVerbosity=detailed",
        f"--warmUp={int(warmup_ms)}",
        f"--iterations={int(iterations)}",
        f"--duration={duration_s:g}",
        f"--avgRuns={int(avg_runs)}",
        f"--percentile={','.join(f'{p:g}' for p in percentiles)}",
        "--infStreams=1",
        *loop_flags,
        f"--exportLayerInfo={exports['layer_info']}",
        f"--exportProfile={exports['profile']}",
        f"--exportTimes={exports['times']}",
    ]
    return cmd


def find_trtexec(binary: str | Path | None = None) -> Path:
    """Locate the trtexec executable.

    Args:
        binary: an explicit path or name; default ``trtexec`` on PATH, then JetPack's
            ``/usr/src/tensorrt/bin/trtexec``.

    Raises:
        MissingDependencyError: not found, with where we looked and how to fix it.
    """
    looked: list[str] = []
    if binary is not None:
        text = str(binary)
        if os.sep in text or Path(text).is_absolute():
            path = Path(text)
            if path.is_file() and os.access(path, os.X_OK):
                return path
            looked.append(text)
        else:
            found = shutil.which(text)
            if found:
                return Path(found)
            looked.append(f"{text} on PATH")
    else:
        found = shutil.which("trtexec")
        if found:
            return Path(found)
        looked.append("trtexec on PATH")
        for candidate in TRTEXEC_FALLBACK_PATHS:
            if os.access(candidate, os.X_OK):
                return Path(candidate)
            looked.append(candidate)
    raise MissingDependencyError(
        f"trtexec not found (looked for {', '.join(looked)}). It ships with TensorRT (on JetPack at "
        "/usr/src/tensorrt/bin/trtexec; pip wheels do not include it): install TensorRT, add its bin "
        "folder to PATH or pass the path to the binary"
    )


def detect_trtexec_major(binary: Path, timeout_s: float = 60.0) -> int:
    """Ask trtexec for its TensorRT version (it prints ``[TensorRT vNNNN]`` on every run).

    Raises:
        RunnerError: trtexec did not answer, or printed no version.
    """
    try:
        done = subprocess.run(
            [str(binary), "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RunnerError(f"cannot run {binary} --help to read its TensorRT version: {err}") from err
    version = parse_trtexec(done.stdout or "").trt_version
    if version is None:
        raise RunnerError(f"{binary} printed no TensorRT version; pass trt_major explicitly")
    return int(version.split(".")[0])


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_trtexec(
    onnx: Path | None,
    engine_path: Path,
    options: BuildOptions,
    *,
    binary: str | Path | None = None,
    trt_major: int | None = None,
    timeout_s: float = 1800.0,
    log_path: Path | None = None,
    use_cuda_graph: bool = False,
    data_transfers: bool = True,
    spin_wait: bool = False,
    **command_kwargs: Any,
) -> dict[str, Any]:
    """Run trtexec (build and/or time), keep its log, and parse everything it produced.

    Args:
        onnx, engine_path, options: as in :func:`trtexec_command`.
        binary: the trtexec executable (default: found by :func:`find_trtexec`).
        trt_major: 10 or 11; default: read from trtexec itself.
        timeout_s: kill trtexec after this long (a build on a small Jetson can take many minutes).
        log_path: where to keep the full log; default ``<engine>.trtexec.log`` beside the engine.
        use_cuda_graph, data_transfers, spin_wait: the loop mode, recorded in ``settings``.
        **command_kwargs: any other keyword of :func:`trtexec_command`.

    Returns:
        A JSON-ready dict: ``command``, ``trt_major``, ``log_path``, ``wall_s``, ``settings``
        (including ``implicit_defaults``), ``summary`` (:class:`~edgeprune.device.engine.logs.TrtexecSummary`),
        ``sparsity``, ``layers``, ``layer_profile`` and ``exports``.

    Raises:
        MissingDependencyError: trtexec is not installed.
        RunnerError: trtexec timed out or failed; the message quotes the end of its log.
    """
    path = find_trtexec(binary)
    major = trt_major if trt_major is not None else detect_trtexec_major(path)
    cmd = trtexec_command(
        onnx,
        engine_path,
        options,
        trt_major=major,
        use_cuda_graph=use_cuda_graph,
        data_transfers=data_transfers,
        spin_wait=spin_wait,
        binary=str(path),
        **command_kwargs,
    )
    _, implicit = mode_flags(major, use_cuda_graph=use_cuda_graph, data_transfers=data_transfers, spin_wait=spin_wait)
    exports = export_paths(engine_path, command_kwargs.get("export_dir"))
    for exported in exports.values():
        exported.parent.mkdir(parents=True, exist_ok=True)
    Path(engine_path).parent.mkdir(parents=True, exist_ok=True)
    log_file = Path(log_path) if log_path is not None else Path(engine_path).with_suffix(".trtexec.log")
    log_file.parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as err:
        partial = err.output
        if isinstance(partial, bytes):
            partial = partial.decode("utf-8", "replace")
        log_file.write_text(partial or "")
        raise RunnerError(f"trtexec did not finish within {timeout_s:g} s; its log so far is in {log_file}") from err
    except OSError as err:
        raise RunnerError(f"cannot run {path}: {err}") from err
    wall_s = time.perf_counter() - started
    output = done.stdout or ""
    log_file.write_text(output)
    if done.returncode != 0:
        raise RunnerError(
            f"trtexec exited with status {done.returncode}; full log in {log_file}. Last lines:\n{_tail(output)}"
        )

    layers: list[dict[str, Any]] = []
    if exports["layer_info"].is_file():
        layers = [layer.to_dict() for layer in parse_engine_info(exports["layer_info"].read_text()).layers]
    profile: list[dict[str, Any]] = []
    if exports["profile"].is_file():
        profile = [vars(t) for t in parse_layer_profile(exports["profile"].read_text())]
    settings = {
        "use_cuda_graph": use_cuda_graph,
        "data_transfers": data_transfers,
        "spin_wait": spin_wait,
        "implicit_defaults": implicit,
        "separate_profile_run": True,
        "precision": options.precision,
        "sparsity": command_kwargs.get("sparsity") or ("enable" if options.sparse_weights else "disable"),
        "warmup_ms": command_kwargs.get("warmup_ms", 200),
        "iterations": command_kwargs.get("iterations", 10),
        "duration_s": command_kwargs.get("duration_s", 3.0),
        "avg_runs": command_kwargs.get("avg_runs", 10),
        "percentiles": list(command_kwargs.get("percentiles", (90, 95, 99))),
        "run_batch": command_kwargs.get("run_batch") or options.opt_batch,
    }
    return {
        "runner": "trtexec",
        "command": cmd,
        "trt_major": major,
        "returncode": done.returncode,
        "log_path": str(log_file),
        "wall_s": wall_s,
        "settings": settings,
        "options": options.to_dict(),
        "summary": parse_trtexec(output).to_dict(),
        "sparsity": parse_sparsity(output).to_dict(),
        "layers": layers,
        "layer_profile": profile,
        "exports": {name: str(p) if p.is_file() else None for name, p in exports.items()},
    }
