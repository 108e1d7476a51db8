"""The agent's HTTP API (FastAPI), and :func:`serve`, which runs it under uvicorn.

Endpoints (all under ``/v1``; every one but ``/v1/health`` needs ``Authorization: Bearer TOKEN``):

* ``GET  /v1/health``            liveness, no secrets: ``{"status": "ok"}``
* ``GET  /v1/device``            provenance, runners, sensors, limits, queue, the agent's own footprint
* ``POST /v1/bundles``           raw ``.tar.gz`` body; 201 new, 200 already known; id = sha256 of the archive
* ``GET  /v1/bundles[/{id}]``    what is stored
* ``POST /v1/jobs``              ``{"bundles": [id], "baseline": id|null, "batch_sizes": [1],
  "config": {...}, "power": true, ...}`` -> 202 once the job is on disk
* ``GET  /v1/jobs[/{id}]``       state (queued, running, done, failed), progress, reason
* ``GET  /v1/jobs/{id}/result``  the result record once done (409 before, or with the reason if it failed)

The agent process stays light on purpose, because it shares the device with what it measures: no
numpy, onnxruntime or torch here (a test checks), so its idle footprint is the web stack alone.
Measurements run in subprocesses (:mod:`edgeprune.device.agent.jobs`).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.requests import ClientDisconnect

from edgeprune.bundle import unpack_bundle
from edgeprune.device import provenance
from edgeprune.device.agent.config import AgentConfig
from edgeprune.device.agent.jobs import JobRunner
from edgeprune.device.agent.store import Store, StoreLock
from edgeprune.device.measure.settings import BenchOptions, MeasureConfig
from edgeprune.errors import BundleError, EdgepruneError, StoreError, UsageError

log = logging.getLogger("edgeprune.agent")

API_VERSION = 1
# Modules that must never be loaded into the agent process (they belong in the worker).
HEAVY_MODULES = ("torch", "onnxruntime", "tensorrt", "numpy")
# Runners the device may offer, and the module each needs; probed with find_spec, never imported.
RUNNER_MODULES = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt", "pytorch": "torch"}
# Where detect_sources() may live (the first that has it wins).
SENSOR_MODULES = ("edgeprune.device.sensors.source",)

BundleId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
JobId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class JobBody(BaseModel):
    """A measurement request: bundles by id (upload them first), batch sizes, timing rule."""

    model_config = ConfigDict(extra="forbid")

    bundles: list[BundleId] = Field(min_length=1, max_length=32)
    baseline: BundleId | None = None
    batch_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [1], min_length=1, max_length=32
    )
    config: MeasureConfig = Field(default_factory=MeasureConfig)
    timeout_s: float | None = Field(default=None, gt=0)
    options: BenchOptions = Field(default_factory=BenchOptions)


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=401,
        detail="wrong or missing token: send 'Authorization: Bearer <token>' (edgeprune bench --token-file FILE)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _bearer_auth(expected: str) -> Callable[[Request], None]:
    """A dependency that accepts only the configured bearer token, compared in constant time."""
    expected_bytes = expected.encode("utf-8")

    def check(request: Request) -> None:
        scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
        # compare_digest runs in time independent of where the strings differ, so the token
        # cannot be guessed byte by byte from response times.
        ok = hmac.compare_digest(supplied.strip().encode("utf-8"), expected_bytes)
        if scheme.lower() != "bearer" or not ok:
            raise _unauthorized()

    return check


def _footprint(process: Any) -> dict[str, Any]:
    """The agent's own resource use: what it adds to the device while it measures nothing."""
    with process.oneshot():
        memory = process.memory_info()
        cpu = process.cpu_times()
        threads = process.num_threads()
    return {
        "pid": process.pid,
        "rss_bytes": int(memory.rss),
        # Since the previous call (primed at start-up), so an idle agent reads close to 0.
        "cpu_percent": float(process.cpu_percent(interval=None)),
        "cpu_seconds": float(cpu.user + cpu.system),
        "threads": int(threads),
        "heavy_modules_loaded": sorted(m for m in HEAVY_MODULES if m in sys.modules),
    }


def _runners() -> list[dict[str, Any]]:
    return [
        {"name": name, "module": module, "available": importlib.util.find_spec(module) is not None}
        for name, module in RUNNER_MODULES.items()
    ]


def _describe_source(source: Any) -> dict[str, Any]:
    """What a power source is, read from attributes only: describing must not start sampling."""
    described: dict[str, Any] = {}
    for attribute in ("name", "rate_hz", "scope"):
        try:
            value = getattr(source, attribute)
        except Exception:  # a property that needs a connection: leave it out
            continue
        if isinstance(value, (str, int, float)):
            described[attribute] = value
    return described or {"name": type(source).__name__}


def _sensors() -> tuple[list[dict[str, Any]], list[str]]:
    """Power sources the device offers, and one reason per source that is missing.

    Looked up by name rather than imported at module level, so the agent runs (reporting no
    sensors, with the reason) with an edgeprune that has no sensor layer.
    """
    detect = None
    for module_name in SENSOR_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        detect = getattr(module, "detect_sources", None)
        if callable(detect):
            break
    if not callable(detect):
        return [], ["this edgeprune has no power-sensor detection (detect_sources)"]
    try:
        found = detect()
    except Exception as err:  # a sensor probe must never take the device endpoint down
        return [], [f"sensor detection failed: {err}"]
    sources, reasons = found if isinstance(found, tuple) and len(found) == 2 else (found, [])
    described = []
    for source in sources:
        described.append(_describe_source(source))
        close = getattr(source, "close", None)
        if callable(close):
            try:
                close()  # detection may open a library (NVML); the measuring worker reopens it
            except Exception:
                log.warning("closing power source %s failed", described[-1].get("name"), exc_info=True)
    return described, [str(r) for r in reasons]


class _GzipGuard:
    """Decompresses an upload as it streams in, and throws the output away.

    This proves the archive is complete (the gzip end marker and CRC are checked; Python's
    tarfile silently accepts an archive cut off after its last member) and bounds what it unpacks
    to, before anything is extracted, so a gzip bomb is refused while it is still arriving.

    Args:
        max_unpacked_bytes: refuse archives that decompress to more than this.
    """

    _STEP = 1 << 20  # decompress at most this much per step, so a bomb never fills memory

    def __init__(self, max_unpacked_bytes: int) -> None:
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._max = max_unpacked_bytes
        self.unpacked_bytes = 0

    def feed(self, chunk: bytes) -> None:
        """Inflate one chunk of the body.

        Raises:
            BundleError: not gzip, data after the end of the stream, or too large unpacked.
        """
        data = chunk
        try:
            while data:
                if self._inflater.eof:
                    raise BundleError("archive is truncated or corrupt: data follows the end of the gzip stream")
                out = self._inflater.decompress(data, self._STEP)
                self.unpacked_bytes += len(out)
                if self.unpacked_bytes > self._max:
                    raise BundleError(f"archive unpacks to more than {self._max} bytes")
                data = self._inflater.unconsumed_tail or self._inflater.unused_data
        except zlib.error as err:
            raise BundleError(f"archive is not a readable .tar.gz (truncated or corrupt?): {err}") from err

    def finish(self) -> None:
        """Check that the whole gzip stream arrived.

        Raises:
            BundleError: the stream ends before its end marker (a truncated upload).
        """
        if not self._inflater.eof:
            raise BundleError("archive is not a readable .tar.gz (truncated or corrupt?): the gzip stream ends early")


def _fsync_tree(folder: Path) -> None:
    """Flush extracted files and the folder itself, so a 201 means the bundle is on disk."""
    for path in folder.iterdir():
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_app(config: AgentConfig) -> FastAPI:
    """Build the agent application for ``config``.

    The store is opened here, so a bad ``--store`` fails before the server binds; the job thread
    starts (after crash recovery) when the application starts.

    Raises:
        StoreError: the store folder or database cannot be opened.
    """
    # Lock first: cleaning tmp/ or recovering jobs under a live agent would break it.
    store_lock = StoreLock(config.store / "agent.lock")
    store_lock.acquire()
    try:
        for folder in (config.bundles_dir, config.jobs_dir, config.tmp_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot create {folder}: {err}; pass a writable --store") from err
        # Uploads and extractions that a previous process left half-done are garbage.
        for leftover in config.tmp_dir.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        store = Store(config.db_path)
    except BaseException:
        store_lock.release()
        raise
    runner = JobRunner(store, config)
    ingest_lock = threading.Lock()
    started = time.time()

    import psutil

    process = psutil.Process()
    process.cpu_percent(interval=None)  # prime: the next reading covers the time since now
    sensors_cache: list[tuple[list[dict[str, Any]], list[str]]] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runner.start()
        log.info("agent ready: store %s, %d job(s) queued", config.store, store.counts()["queued"])
        try:
            yield
        finally:
            runner.stop()
            store.close()
            store_lock.release()

    app = FastAPI(
        title="edgeprune agent",
        version=str(API_VERSION),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.config = config
    app.state.store = store
    app.state.runner = runner

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, err: StoreError) -> JSONResponse:
        log.error("%s", err)
        return JSONResponse(status_code=500, content={"detail": f"agent storage error: {err}"})

    @app.exception_handler(EdgepruneError)
    async def _edgeprune_error(_: Request, err: EdgepruneError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(err)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for e in err.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return JSONResponse(status_code=422, content={"detail": "invalid request: " + "; ".join(parts)})

    @app.get("/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    api = APIRouter(prefix="/v1", dependencies=[Depends(_bearer_auth(config.token))])

    @api.get("/device")
    def device() -> dict[str, Any]:
        if not sensors_cache:
            sensors_cache.append(_sensors())
        sensors, missing_sensors = sensors_cache[0]
        return {
            "api_version": API_VERSION,
            "agent_version": provenance.library_versions(("edgeprune",))["edgeprune"],
            "uptime_s": time.time() - started,
            "footprint": _footprint(process),
            "provenance": provenance.collect(),
            "runners": _runners(),
            "sensors": sensors,
            "sensors_unavailable": missing_sensors,
            "limits": {
                "max_upload_bytes": config.max_upload_bytes,
                "max_unpacked_bytes": config.max_unpacked_bytes,
                "job_timeout_s": config.job_timeout_s,
            },
            "queue": {**store.counts(), "busy": runner.busy},
        }

    def ingest(archive: Path, bundle_id: str, size: int) -> tuple[dict[str, Any], bool]:
        """Extract and register an uploaded archive (blocking work, run in a thread)."""
        target = config.bundles_dir / bundle_id
        known = store.get_bundle(bundle_id)
        if known is not None and target.is_dir():
            return known, False
        staging = config.tmp_dir / f"extract-{uuid.uuid4().hex}"
        # unpack_bundle refuses unsafe members before writing anything, and verifies checksums.
        manifest = unpack_bundle(archive, staging, max_bytes=config.max_unpacked_bytes)
        try:
            _fsync_tree(staging)
            with ingest_lock:
                if target.exists():
                    if store.get_bundle(bundle_id) is not None:
                        shutil.rmtree(staging, ignore_errors=True)
                        known = store.get_bundle(bundle_id)
                        assert known is not None
                        return known, False
                    shutil.rmtree(target)  # a folder without its row: a crash mid-ingest
                staging.rename(target)
                _fsync_dir(config.bundles_dir)
                created = store.add_bundle(bundle_id, manifest.name, manifest.to_dict(), size)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        row = store.get_bundle(bundle_id)
        assert row is not None
        return row, created

    @api.post("/bundles", status_code=201)
    async def upload_bundle(request: Request) -> JSONResponse:
        limit = config.max_upload_bytes
        too_big = HTTPException(
            status_code=413,
            detail=f"bundle archive exceeds the agent's upload limit of {limit} bytes "
            f"({limit / (1 << 20):.0f} MB); start the agent with a larger --max-upload-mb",
        )
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                declared_bytes = int(declared)
            except ValueError as err:
                raise HTTPException(400, "invalid Content-Length header") from err
            if declared_bytes > limit:
                raise too_big  # refused before a single body byte is read
        fd, tmp_name = tempfile.mkstemp(prefix="upload-", suffix=".tar.gz", dir=config.tmp_dir)
        tmp_path = Path(tmp_name)
        digest = hashlib.sha256()
        guard = _GzipGuard(config.max_unpacked_bytes)
        total = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > limit:
                        raise too_big  # refused while streaming: at most `limit` bytes are kept
                    digest.update(chunk)
                    guard.feed(chunk)
                    out.write(chunk)
            if total == 0:
                raise HTTPException(400, "empty upload: send the bundle .tar.gz as the request body")
            guard.finish()
            row, created = await run_in_threadpool(ingest, tmp_path, digest.hexdigest(), total)
        except ClientDisconnect:
            log.info("client disconnected during an upload after %d bytes", total)
            raise HTTPException(400, "upload interrupted") from None
        finally:
            tmp_path.unlink(missing_ok=True)
        body = {
            "id": row["id"],
            "name": row["name"],
            "size_bytes": row["size_bytes"],
            "deduplicated": not created,
        }
        return JSONResponse(status_code=201 if created else 200, content=body)

    @api.get("/bundles")
    def list_bundles() -> dict[str, Any]:
        return {"bundles": store.list_bundles()}

    @api.get("/bundles/{bundle_id}")
    def get_bundle(bundle_id: BundleId) -> dict[str, Any]:
        row = store.get_bundle(bundle_id)
        if row is None:
            raise HTTPException(404, f"unknown bundle {bundle_id}")
        return row

    @api.post("/jobs", status_code=202)
    def submit_job(body: JobBody) -> JSONResponse:
        wanted = [*body.bundles, *([body.baseline] if body.baseline else [])]
        for bundle_id in wanted:
            if store.get_bundle(bundle_id) is None or not (config.bundles_dir / bundle_id).is_dir():
                raise HTTPException(404, f"unknown bundle {bundle_id}: upload it first with POST /v1/bundles")
        if body.timeout_s is not None and body.timeout_s > config.job_timeout_s:
            raise UsageError(f"timeout_s {body.timeout_s:g} exceeds the agent's limit of {config.job_timeout_s:g} s")
        # create_job commits (fsync'd, synchronous=FULL) before we answer: a 202 is a promise.
        job = store.create_job(body.model_dump())
        runner.notify()
        return JSONResponse(
            status_code=202,
            content=_job_view(job),
            headers={"Location": f"/v1/jobs/{job['id']}"},
        )

    @api.get("/jobs")
    def list_jobs(limit: int = 100) -> dict[str, Any]:
        return {"jobs": [_job_view(job) for job in store.list_jobs(max(1, min(limit, 1000)))]}

    @api.get("/jobs/{job_id}")
    def get_job(job_id: JobId) -> dict[str, Any]:
        job = store.get_job(job_id)
        if job is None:
            raise HTTPException(404, f"unknown job {job_id}")
        return _job_view(job)

    @api.get("/jobs/{job_id}/result")
    def get_result(job_id: JobId) -> dict[str, Any]:
        job = store.get_job(job_id)
        if job is None:
            raise HTTPException(404, f"unknown job {job_id}")
        if job["state"] == "failed":
            raise HTTPException(409, f"job {job_id} failed: {job['error']}")
        result = store.get_result(job_id) if job["state"] == "done" else None
        if result is None:
            raise HTTPException(409, f"job {job_id} is {job['state']}; poll GET /v1/jobs/{job_id} until it is done")
        return result

    app.include_router(api)
    return app


def _job_view(job: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a job (no worker pid, no internal sequence number)."""
    view = {
        "id": job["id"],
        "state": job["state"],
        "progress": {
            "fraction": job["progress"],
            "label": job["label"],
            "step_fraction": job["step_progress"],
        },
        "created": job["created"],
        "started": job["started"],
        "finished": job["finished"],
        "error": job["error"],
        "request": job["request"],
    }
    if "queue_position" in job:
        view["queue_position"] = job["queue_position"]
    if job["state"] == "done":
        view["result_url"] = f"/v1/jobs/{job['id']}/result"
    return view


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so "address in use" is one clear error, not a traceback.

    Raises:
        UsageError: the address cannot be bound.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UsageError(f"cannot resolve --host {host!r}: {err}") from err
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {err.strerror or err}; is another agent running? pick another --port"
        ) from err
    return sock


def serve(config: AgentConfig) -> None:
    """Run the agent until SIGINT/SIGTERM (blocking).

    Raises:
        EdgepruneError: the store cannot be opened or the address cannot be bound.
    """
    import uvicorn

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "listening on %s: the token travels in clear text; use this only on a trusted network "
            "or behind an SSH tunnel",
            config.host,
        )
    sock = bind_socket(config.host, config.port)
    try:
        app = create_app(config)
        log.info("edgeprune agent on http://%s:%d", config.host, sock.getsockname()[1])
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="info",
                access_log=False,
                server_header=False,
                timeout_keep_alive=5,
                limit_concurrency=64,
                lifespan="on",
            )
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
