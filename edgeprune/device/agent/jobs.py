"""The job queue: one thread that runs one measurement at a time, each in its own subprocess.

One at a time, because two measurements on one device disturb each other (shared caches, clocks,
thermal headroom, memory bandwidth), and the numbers of both would be wrong. Each measurement runs
in a subprocess (see :mod:`edgeprune.device.agent.worker`) started in its own session, so that a
crash, a hang or a timeout kills only that process group.

The queue lives in SQLite (:class:`~edgeprune.device.agent.store.Store`): the thread claims the
oldest queued row, runs it, and stores the result or a failure reason. The in-memory event only
shortens the wait; losing a wake-up costs at most one poll interval, never a job.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from edgeprune.device.agent import worker as worker_protocol
from edgeprune.device.agent.config import AgentConfig
from edgeprune.device.agent.store import Store

log = logging.getLogger("edgeprune.agent")

RESTARTED_REASON = "agent restarted while the job was running"
STOPPED_REASON = "agent was stopped while the job was running; submit it again"
_STDERR_TAIL_CHARS = 600


class JobRunner:
    """Runs queued jobs in order, one subprocess at a time, on a background thread.

    Args:
        store: the agent database (also the queue).
        config: agent settings (store layout, worker command, timeouts).
    """

    def __init__(self, store: Store, config: AgentConfig) -> None:
        self.store = store
        self.config = config
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    def recover(self) -> list[dict[str, Any]]:
        """Account for jobs a previous agent process left running: fail them, stop their orphans.

        Called once at start-up, before any job runs. Queued jobs need nothing: they stay queued.
        """
        interrupted = self.store.recover_interrupted(RESTARTED_REASON)
        for job in interrupted:
            log.warning("job %s was running when the agent stopped; marked failed", job["id"])
            pid = job.get("worker_pid")
            if pid:
                _kill_orphan(int(pid), job["id"])
            shutil.rmtree(self.config.jobs_dir / job["id"], ignore_errors=True)
        return interrupted

    def start(self) -> None:
        """Recover, then start the queue thread."""
        self.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="edgeprune-jobs", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A job was queued: wake the thread now instead of at its next poll."""
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread; a running measurement is killed and its job failed with a reason."""
        self._stop.set()
        self._wake.set()
        with self._proc_lock:
            proc = self._proc
        if proc is not None:
            _kill_group(proc)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def busy(self) -> bool:
        """True while a measurement subprocess is running."""
        with self._proc_lock:
            return self._proc is not None

    # -- the thread ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                job = self.store.claim_next()
            except Exception:  # a broken database must not kill the thread: retry after a pause
                log.exception("cannot read the job queue")
                self._stop.wait(1.0)
                continue
            if job is None:
                # notify() wakes us for new jobs; the timeout only bounds a missed wake-up.
                self._wake.wait(5.0)
                continue
            try:
                self._run(job)
            except Exception as err:
                log.exception("job %s failed inside the agent", job["id"])
                self._safe_fail(job["id"], f"internal agent error: {err}")

    def _safe_fail(self, job_id: str, reason: str) -> None:
        try:
            self.store.fail_job(job_id, reason)
        except Exception:
            log.exception("cannot record the failure of job %s", job_id)

    def _run(self, job: dict[str, Any]) -> None:
        job_id: str = job["id"]
        request: dict[str, Any] = job["request"]
        job_dir = self.config.jobs_dir / job_id
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        bundles = self.config.bundles_dir
        worker_request = {
            "bundles": [str(bundles / bid) for bid in request["bundles"]],
            "baseline": str(bundles / request["baseline"]) if request.get("baseline") else None,
            "batch_sizes": request["batch_sizes"],
            "config": request["config"],
            "options": request.get("options") or {},
            "agent": {
                "job_id": job_id,
                "bundle_ids": request["bundles"],
                "baseline_id": request.get("baseline"),
            },
            "agent_pid": os.getpid(),
        }
        worker_protocol.write_json_atomic(job_dir / worker_protocol.REQUEST_FILE, worker_request)
        limit_s = self.config.job_timeout_s
        timeout_s = min(float(request.get("timeout_s") or limit_s), limit_s)
        log.info("job %s: starting measurement (timeout %.0f s)", job_id, timeout_s)
        record: dict[str, Any] | None = None
        try:
            reason = self._supervise(job_id, job_dir, timeout_s)
            if reason is None:
                try:
                    record = json.loads((job_dir / worker_protocol.RESULT_FILE).read_text(encoding="utf-8"))
                except (OSError, ValueError) as err:
                    reason = f"the measurement process wrote an unreadable result: {err}"
        finally:
            # Scratch files go before the state changes, so a client that sees the final state
            # sees a tidy store; a crash in between leaves a "running" row that recovery fails.
            shutil.rmtree(job_dir, ignore_errors=True)
        if record is not None:
            self.store.finish_job(job_id, record)
            log.info("job %s: done", job_id)
        else:
            self.store.fail_job(job_id, reason or "the measurement process wrote no result")
            log.warning("job %s: failed: %s", job_id, reason)

    def _supervise(self, job_id: str, job_dir: Path, timeout_s: float) -> str | None:
        """Run the worker to the end; returns None on success, else the failure reason."""
        argv = [*self.config.worker_command, "--job-dir", str(job_dir)]
        log_path = job_dir / worker_protocol.LOG_FILE
        with log_path.open("wb") as log_file:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=_worker_env(),
                )
            except OSError as err:
                return f"cannot start the measurement process {argv[0]!r}: {err}"
        with self._proc_lock:
            self._proc = proc
        try:
            self.store.set_worker_pid(job_id, proc.pid)
            deadline = time.monotonic() + timeout_s
            last_progress: tuple[float, str, float] | None = None
            while True:
                code = proc.poll()
                last_progress = self._relay_progress(job_id, job_dir, last_progress)
                if self._stop.is_set():
                    _kill_group(proc)
                    return STOPPED_REASON
                if code is not None:
                    break
                if time.monotonic() > deadline:
                    _kill_group(proc)
                    return f"timed out after {timeout_s:g} s; the measurement process was killed"
                # Wakes at once when the worker exits (stop() kills it, so that wakes us too).
                try:
                    proc.wait(timeout=self.config.poll_interval_s)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            with self._proc_lock:
                self._proc = None
            if proc.poll() is None:
                _kill_group(proc)
        return _exit_reason(code, job_dir)

    def _relay_progress(
        self, job_id: str, job_dir: Path, last: tuple[float, str, float] | None
    ) -> tuple[float, str, float] | None:
        try:
            data = json.loads((job_dir / worker_protocol.PROGRESS_FILE).read_text(encoding="utf-8"))
            current = (float(data["fraction"]), str(data["label"]), float(data.get("step_fraction", 0.0)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return last
        if current != last:
            self.store.update_progress(job_id, *current)
        return current


def _worker_env() -> dict[str, str]:
    """The agent's environment, with this edgeprune importable however the agent was started."""
    import edgeprune

    env = dict(os.environ)
    root = str(Path(edgeprune.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _exit_reason(code: int, job_dir: Path) -> str | None:
    """None if the worker succeeded; otherwise a reason naming what went wrong."""
    if code == worker_protocol.EXIT_OK:
        if (job_dir / worker_protocol.RESULT_FILE).is_file():
            return None
        return "the measurement process exited without writing a result"
    error_file = job_dir / worker_protocol.ERROR_FILE
    if code == worker_protocol.EXIT_ERROR and error_file.is_file():
        try:
            return str(json.loads(error_file.read_text(encoding="utf-8"))["error"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            what = f"was stopped by {name} (the device shutting down?)"
        elif -code == signal.SIGKILL:
            what = f"was killed by {name} (out of memory? see dmesg)"
        else:
            what = f"was killed by signal {name} (a crash in the runtime?)"
    else:
        what = f"exited with code {code}"
    tail = _stderr_tail(job_dir / worker_protocol.LOG_FILE)
    return f"the measurement process {what}" + (f": {tail}" if tail else "")


def _stderr_tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4 * _STDERR_TAIL_CHARS))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-_STDERR_TAIL_CHARS:]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's whole process group (it leads its own session) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.error("measurement process %d did not die after SIGKILL", proc.pid)


def _kill_orphan(pid: int, job_id: str) -> None:
    """Stop a worker that outlived a crashed agent, if that pid still is that worker.

    The pid is checked against the command line (which names the job folder) first: after a
    reboot the number may belong to an unrelated process.
    """
    try:
        import psutil

        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline())
    except Exception:  # gone already, or not ours to inspect
        return
    if job_id not in cmdline:
        return
    log.warning("stopping orphaned measurement process %d of job %s", pid, job_id)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except Exception:
            return
