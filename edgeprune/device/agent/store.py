"""The agent's durable state: bundles, jobs and results in one SQLite database (WAL mode).

The database *is* the job queue. A job row is committed with ``synchronous=FULL`` before the HTTP
handler answers 202, so an acknowledged job survives a crash or a power cut; the job thread takes
the oldest queued row in a transaction that marks it running. After a crash, rows still marked
running belong to a measurement that died with the agent: :meth:`Store.recover_interrupted` fails
them with a reason, and queued rows simply wait for the thread of the new process.

One connection, guarded by a lock, serves the HTTP threads and the job thread. The measurement
subprocess never opens the database (it writes files the job thread reads), so SQLite has a single
writer process and ``busy_timeout`` only matters for an operator poking at the file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeprune.errors import StoreError

SCHEMA_VERSION = 1
STATES = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    id          TEXT PRIMARY KEY,            -- sha256 of the uploaded archive
    name        TEXT NOT NULL,
    manifest    TEXT NOT NULL,               -- JSON
    size_bytes  INTEGER NOT NULL,
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,   -- queue order
    id          TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    request     TEXT NOT NULL,               -- JSON: bundles, baseline, batch_sizes, config
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL,
    progress    REAL NOT NULL DEFAULT 0,      -- overall fraction done
    label       TEXT NOT NULL DEFAULT '',     -- current step
    step_progress REAL NOT NULL DEFAULT 0,    -- fraction of the current step
    error       TEXT,
    worker_pid  INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS results (
    job_id      TEXT PRIMARY KEY REFERENCES jobs (id),
    record      TEXT NOT NULL                -- JSON result record
);
"""


class StoreLock:
    """An exclusive lock on a store folder, held for the life of the agent process.

    Two agents on one store would both run "the" queue and each would fail the other's running job
    as interrupted. ``flock`` is released by the kernel when the process dies, even by SIGKILL, so
    a crashed agent never leaves a stale lock behind.

    Args:
        path: the lock file (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting.

        Raises:
            StoreError: another process holds it, or the file cannot be created.
        """
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise StoreError(f"cannot create {self.path}: {err}; pass a writable --store") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            raise StoreError(
                f"another agent is already using the store {self.path.parent}; stop it or pass another --store"
            ) from err
        self._fd = fd

    def release(self) -> None:
        """Drop the lock; harmless if not held."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Store:
    """Thread-safe access to the agent database.

    Args:
        path: the database file; its folder is created if needed.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode}); use a local disk for --store")
            # FULL: every commit is fsync'd, so a 202 really means "on disk".
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=10000")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(
                    f"{self.path} was written by a newer agent (schema {version}); upgrade edgeprune "
                    "or start with another --store"
                )
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as err:
            raise StoreError(f"cannot open the agent database {self.path}: {err}") from err
        except OSError as err:
            raise StoreError(f"cannot create the agent store folder {self.path.parent}: {err}") from err
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self, synchronous: str = "FULL") -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with BEGIN IMMEDIATE so readers never see half of it."""
        with self._lock:
            try:
                if synchronous != "FULL":
                    self._conn.execute(f"PRAGMA synchronous={synchronous}")
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield self._conn
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
                finally:
                    if synchronous != "FULL":
                        self._conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as err:
                raise StoreError(f"agent database write failed ({self.path}): {err}") from err

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as err:
                raise StoreError(f"agent database read failed ({self.path}): {err}") from err

    # -- bundles ---------------------------------------------------------------------------------

    def add_bundle(self, bundle_id: str, name: str, manifest: dict[str, Any], size_bytes: int) -> bool:
        """Record an extracted bundle; returns False if it was already known (deduplicated)."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO bundles (id, name, manifest, size_bytes, created) VALUES (?, ?, ?, ?, ?)",
                (bundle_id, name, json.dumps(manifest), size_bytes, time.time()),
            )
            return cur.rowcount == 1

    def get_bundle(self, bundle_id: str) -> dict[str, Any] | None:
        """A bundle's row with its manifest decoded, or None."""
        rows = self._query("SELECT * FROM bundles WHERE id = ?", (bundle_id,))
        return _bundle_dict(rows[0]) if rows else None

    def list_bundles(self) -> list[dict[str, Any]]:
        """All bundles, newest first, without their manifests."""
        rows = self._query("SELECT id, name, size_bytes, created FROM bundles ORDER BY created DESC")
        return [dict(row) for row in rows]

    # -- jobs ------------------------------------------------------------------------------------

    def create_job(self, request: dict[str, Any]) -> dict[str, Any]:
        """Queue a job; the row is durable when this returns."""
        job_id = uuid.uuid4().hex
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO jobs (id, state, request, created, label) VALUES (?, 'queued', ?, ?, 'queued')",
                (job_id, json.dumps(request), time.time()),
            )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        """A job's row (request decoded) plus its queue position while queued, or None."""
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        job = _job_dict(rows[0])
        if job["state"] == "queued":
            ahead = self._query(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running') AND seq < ?",
                (rows[0]["seq"],),
            )
            job["queue_position"] = int(ahead[0][0])
        return job

    def list_jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent jobs, newest first."""
        rows = self._query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        return [_job_dict(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs in each state."""
        rows = self._query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        counts = dict.fromkeys(STATES, 0)
        counts.update({row["state"]: int(row["n"]) for row in rows})
        return counts

    def claim_next(self) -> dict[str, Any] | None:
        """Mark the oldest queued job running and return it, or None if the queue is empty.

        Committed before the subprocess starts, so a crash from here on is seen as "was running".
        """
        with self._tx() as conn:
            row = conn.execute("SELECT seq FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', started = ?, label = 'starting' WHERE seq = ?",
                (time.time(), row["seq"]),
            )
            claimed = conn.execute("SELECT * FROM jobs WHERE seq = ?", (row["seq"],)).fetchone()
        return _job_dict(claimed)

    def set_worker_pid(self, job_id: str, pid: int) -> None:
        """Remember the measurement subprocess, so a restarted agent can stop an orphan."""
        with self._tx() as conn:
            conn.execute("UPDATE jobs SET worker_pid = ? WHERE id = ?", (pid, job_id))

    def update_progress(self, job_id: str, fraction: float, label: str, step_fraction: float = 0.0) -> None:
        """Record a running job's progress: overall fraction, current step, and that step's fraction.

        Progress is the one write that need not survive a power cut, and it is frequent, so it is
        committed without an fsync (``synchronous=NORMAL``: still safe against a crash of the
        agent) to keep disk flushes away from the measurement that is running meanwhile.
        """
        with self._tx(synchronous="NORMAL") as conn:
            conn.execute(
                "UPDATE jobs SET progress = ?, label = ?, step_progress = ? WHERE id = ? AND state = 'running'",
                (_clamp(fraction), label[:200], _clamp(step_fraction), job_id),
            )

    def finish_job(self, job_id: str, record: dict[str, Any]) -> None:
        """Store a job's result record and mark it done, in one transaction."""
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO results (job_id, record) VALUES (?, ?)", (job_id, json.dumps(record)))
            conn.execute(
                "UPDATE jobs SET state = 'done', finished = ?, progress = 1, step_progress = 1, "
                "label = 'done', worker_pid = NULL WHERE id = ?",
                (time.time(), job_id),
            )

    def fail_job(self, job_id: str, reason: str) -> None:
        """Mark a job failed with a reason a person can act on."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE jobs SET state = 'failed', finished = ?, error = ?, label = 'failed', "
                "worker_pid = NULL "
                "WHERE id = ?",
                (time.time(), reason, job_id),
            )

    def recover_interrupted(self, reason: str) -> list[dict[str, Any]]:
        """Fail every job left 'running' by a previous process; returns them (with worker pids).

        Queued jobs are left alone: they resume in the new process, in their original order.
        """
        with self._tx() as conn:
            rows = conn.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY seq").fetchall()
            conn.execute(
                "UPDATE jobs SET state = 'failed', finished = ?, error = ?, label = 'failed', "
                "worker_pid = NULL "
                "WHERE state = 'running'",
                (time.time(), reason),
            )
        return [_job_dict(row) for row in rows]

    def get_result(self, job_id: str) -> dict[str, Any] | None:
        """A finished job's result record, or None."""
        rows = self._query("SELECT record FROM results WHERE job_id = ?", (job_id,))
        if not rows:
            return None
        record: dict[str, Any] = json.loads(rows[0]["record"])
        return record


def _clamp(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


def _bundle_dict(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["manifest"] = json.loads(data["manifest"])
    return data


def _job_dict(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["request"] = json.loads(data["request"])
    return data
