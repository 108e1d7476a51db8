"""The measurement subprocess: ``python -m edgeprune.device.agent.worker --job-dir DIR``.

The agent runs every measurement in a fresh process so that a runtime that crashes (a segfault in
a TensorRT plugin, an out-of-memory kill) takes down only this process, never the service, and so
that the process being measured holds only the model under test: no web server, no database.

Protocol, all files inside the job folder (written atomically: temp file, then rename):

* ``request.json`` (read): ``bundles`` and ``baseline`` as folder paths, ``batch_sizes``,
  ``config`` (MeasureConfig fields), ``options`` (BenchOptions fields: runner, power, idle_s, ...),
  ``agent`` (job and bundle ids, copied into the result) and ``agent_pid``.
* ``progress.json`` (written while running): ``{"fraction": 0..1, "label": "...",
  "step_fraction": 0..1}``: overall progress, the current step, and how far that step is.
* ``result.json`` on success (exit 0), or ``error.json`` ``{"error": "..."}`` for an
  :class:`~edgeprune.errors.EdgepruneError` (exit 3). Anything else is a crash: a traceback on
  stderr and a non-zero exit, which the agent reports with the tail of stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USAGE = 2
EXIT_ERROR = 3
REQUEST_FILE = "request.json"
PROGRESS_FILE = "progress.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
LOG_FILE = "worker.log"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a concurrent reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def die_with_parent(agent_pid: int | None) -> None:
    """Ask Linux to SIGKILL this process when the agent dies, so no orphan keeps measuring.

    Linux sends the signal when the *thread* that started this process ends; that is the agent's
    job thread, which lives as long as the agent. Best effort: elsewhere (or without libc) the
    restarted agent stops orphans by their recorded pid.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The agent may have died between fork and prctl: then nobody would send the signal.
    if agent_pid is not None and os.getppid() != agent_pid:
        os._exit(EXIT_CRASH)


class ProgressWriter:
    """Turns run_bench's per-step progress into one overall fraction, written to progress.json.

    run_bench reports ``(label, fraction of that step)`` where a step is one variant at one batch
    size (``NAME bN``), or one bundle's energy run (``energy NAME bN``); the number of steps is
    known from the request, so the overall fraction is ``(finished steps + fraction) / steps``.
    Energy steps only happen where a power sensor exists, so without one the fraction jumps to 1
    at the end rather than creeping past it. Writes are throttled: the agent polls a few times a
    second, and fsyncing on every measurement round would disturb the measurement.
    """

    def __init__(self, path: Path, steps: int, min_interval_s: float = 0.2) -> None:
        self.path = path
        self.steps = max(1, steps)
        self.min_interval_s = min_interval_s
        self._labels: list[str] = []
        self._last = 0.0

    def write(self, fraction: float, label: str, step_fraction: float = 0.0, force: bool = False) -> None:
        """Write progress now if forced or if enough time has passed since the last write."""
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        write_json_atomic(
            self.path,
            {"fraction": _clamp(fraction), "label": label, "step_fraction": _clamp(step_fraction)},
        )

    def __call__(self, label: str, fraction: float) -> None:
        if label not in self._labels:
            self._labels.append(label)
            force = True
        else:
            force = fraction >= 1.0
        done = len(self._labels) - 1 + _clamp(fraction)
        shown = label if label.startswith("energy ") else f"measuring {label}"
        self.write(done / self.steps, shown, fraction, force=force)


def _clamp(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


def run_job(job_dir: Path) -> dict[str, Any]:
    """Measure what ``request.json`` asks for and return the result record.

    Raises:
        EdgepruneError: a bundle is invalid, computes wrong outputs, or a runner fails.
    """
    request = json.loads((job_dir / REQUEST_FILE).read_text(encoding="utf-8"))
    options = dict(request.get("options") or {})
    n_batches = len(request["batch_sizes"])
    steps = len(request["bundles"]) * n_batches  # latency: each variant (beside the baseline) per batch
    if options.get("power", True):  # energy, if a sensor exists: every bundle alone per batch
        steps += (len(request["bundles"]) + (1 if request.get("baseline") else 0)) * n_batches
    progress = ProgressWriter(job_dir / PROGRESS_FILE, steps)
    progress.write(0.0, "loading models", 0.0, force=True)

    # Heavy imports (numpy, onnxruntime) happen here, in the subprocess only.
    from edgeprune.device.measure.bench import BenchRequest, run_bench
    from edgeprune.device.measure.settings import BenchOptions, MeasureConfig

    bench_request = BenchRequest(
        bundles=[Path(p) for p in request["bundles"]],
        baseline=Path(request["baseline"]) if request.get("baseline") else None,
        batch_sizes=tuple(int(b) for b in request["batch_sizes"]),
        config=MeasureConfig.from_dict(request["config"]),
        options=BenchOptions.from_dict(options),
    )
    record = run_bench(bench_request, on_progress=progress)
    record.extra["agent"] = request.get("agent", {})
    progress.write(1.0, "writing result", 1.0, force=True)
    return record.to_dict()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m edgeprune.device.agent.worker",
        description="Run one agent measurement job (started by the agent).",
    )
    parser.add_argument("--job-dir", type=Path, required=True, help="the job folder holding request.json")
    args = parser.parse_args(argv)
    job_dir: Path = args.job_dir
    try:
        request = json.loads((job_dir / REQUEST_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        print(f"cannot read {job_dir / REQUEST_FILE}: {err}", file=sys.stderr)
        return EXIT_USAGE
    die_with_parent(request.get("agent_pid"))
    try:
        record = run_job(job_dir)
    except EdgepruneError as err:
        write_json_atomic(job_dir / ERROR_FILE, {"error": str(err)})
        print(f"edgeprune: {err}", file=sys.stderr)
        return EXIT_ERROR
    write_json_atomic(job_dir / RESULT_FILE, record)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
