"""The agent under failure: oversize streams, concurrency, crashes, timeouts, SIGKILL and restart.

The promises under test: an upload over the limit is refused while it streams, never buffered
whole; every acknowledged job is accounted for (done, or failed with a reason) even when the agent
is killed with SIGKILL mid-measurement; queued jobs resume after a restart; a crashing or hanging
runtime takes down only its own subprocess; and only one measurement runs at a time.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psutil
import pytest

from edgeprune.bundle import pack_bundle
from edgeprune.device.agent.app import create_app
from edgeprune.device.agent.config import AgentConfig
from edgeprune.device.agent.jobs import RESTARTED_REASON, STOPPED_REASON
from edgeprune.device.agent.store import Store
from edgeprune.errors import StoreError

SLOW_CONFIG = {"warmup_s": 0.0, "min_iterations": 1, "min_duration_s": 5.0, "max_duration_s": 5.0}


def _archive(bundle: Path, tmp_path: Path) -> bytes:
    return pack_bundle(bundle, tmp_path / f"{bundle.name}-{time.monotonic_ns()}.tar.gz").read_bytes()


def _job(http: httpx.Client, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/jobs/{job_id}", headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _finished(http: httpx.Client, auth: dict[str, str], job_id: str) -> dict[str, Any] | None:
    job = _job(http, auth, job_id)
    return job if job["state"] in ("done", "failed") else None


def _worker_children() -> list[psutil.Process]:
    """Measurement subprocesses started by agents running inside this test process."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "edgeprune.device.agent.worker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- uploads over the limit ----------------------------------------------------------------------


def test_oversize_stream_is_refused_while_streaming(
    spawn_agent: Callable[..., Any], agent_token: str, auth: dict[str, str]
) -> None:
    agent = spawn_agent(extra_args=("--max-upload-mb", "1"))
    url = urlparse(agent.url)
    total = 64 << 20
    packer = zlib.compressobj(0, zlib.DEFLATED, 31)  # stored blocks: valid gzip, incompressible
    sent = 0
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(
            (
                f"POST /v1/bundles HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {agent_token}\r\n"
                "Content-Type: application/gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        try:
            while sent < total:  # bounded: at most 64 MiB
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break  # the agent has answered before the body is complete
                data = packer.compress(os.urandom(64 << 10))
                if data:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
                sent += 64 << 10
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the agent stopped reading: that is the point
        response = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in response and time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not part:
                break
            response += part
    status_line = response.split(b"\r\n", 1)[0]
    assert b" 413 " in status_line, response[:300]
    assert sent < total // 4, f"the agent read {sent} bytes before refusing"
    with httpx.Client(base_url=agent.url, timeout=10) as http:
        assert http.get("/v1/device", headers=auth).status_code == 200  # still serving
    assert list((agent.store / "tmp").iterdir()) == []
    assert list((agent.store / "bundles").iterdir()) == []


def test_oversize_declared_length_is_refused_before_the_body(spawn_agent: Callable[..., Any], agent_token: str) -> None:
    agent = spawn_agent(extra_args=("--max-upload-mb", "1"))
    url = urlparse(agent.url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(
            (
                f"POST /v1/bundles HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {agent_token}\r\n"
                f"Content-Type: application/gzip\r\nContent-Length: {10 << 30}\r\n\r\n"
            ).encode()
        )
        response = b""
        deadline = time.monotonic() + 10
        while b"max-upload-mb" not in response and time.monotonic() < deadline:
            part = sock.recv(65536)  # no body byte was sent: the answer must come anyway
            if not part:
                break
            response += part
    assert b" 413 " in response.split(b"\r\n", 1)[0]
    assert b"max-upload-mb" in response


# -- concurrency ---------------------------------------------------------------------------------

# A stand-in for the measurement process that keeps the worker protocol (progress file, result
# file, exit 0) but measures nothing, so twenty jobs take seconds rather than twenty worker
# start-ups. It also proves "one at a time": it holds an O_EXCL marker while it runs and fails if
# another instance holds it. The real worker is exercised by every other job test.
STUB_WORKER = """
import json, os, sys, time
job_dir = sys.argv[sys.argv.index("--job-dir") + 1]
marker = os.path.join(os.path.dirname(os.path.dirname(job_dir)), "one-at-a-time")
fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
try:
    request = json.load(open(os.path.join(job_dir, "request.json")))
    with open(os.path.join(job_dir, "progress.json"), "w") as fh:
        json.dump({"fraction": 0.5, "label": "measuring stub", "step_fraction": 0.5}, fh)
    time.sleep(0.05)
    record = {"kind": "edgeprune.result", "agent": request["agent"], "batch_sizes": request["batch_sizes"]}
    with open(os.path.join(job_dir, "result.json"), "w") as fh:
        json.dump(record, fh)
finally:
    os.close(fd)
    os.unlink(marker)
"""


def test_twenty_concurrent_submissions_all_complete_one_at_a_time(
    spawn_agent: Callable[..., Any],
    auth: dict[str, str],
    tiny_bundle: Path,
    tmp_path: Path,
    fast_config: dict[str, float],
) -> None:
    stub = tmp_path / "stub_worker.py"
    stub.write_text(STUB_WORKER)
    conf = tmp_path / "agent.toml"
    conf.write_text(f"worker_command = [{json.dumps(sys.executable)}, {json.dumps(str(stub))}]\n")
    agent = spawn_agent(extra_args=("--config", str(conf)))
    data = _archive(tiny_bundle, tmp_path)

    def upload_and_submit(i: int) -> tuple[int, str, int]:
        with httpx.Client(base_url=agent.url, timeout=30) as http:
            up = http.post("/v1/bundles", content=data, headers={**auth, "Content-Type": "application/gzip"})
            assert up.status_code in (200, 201), up.text
            job = http.post(
                "/v1/jobs",
                headers=auth,
                json={
                    "bundles": [up.json()["id"]],
                    "config": fast_config,
                    "options": {"power": False},
                    "batch_sizes": [1 + i],
                },
            )
            assert job.status_code == 202, job.text
            return up.status_code, job.json()["id"], i

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(upload_and_submit, range(20)))
    job_ids = [job_id for _, job_id, _ in outcomes]
    assert len(set(job_ids)) == 20
    assert sorted(code for code, _, _ in outcomes).count(201) == 1  # one stored, 19 deduplicated

    with httpx.Client(base_url=agent.url, timeout=10) as http:
        deadline = time.monotonic() + 60
        pending = set(job_ids)
        while pending and time.monotonic() < deadline:
            listed = http.get("/v1/jobs", headers=auth).json()["jobs"]  # one cheap poll for all 20
            pending = {j["id"] for j in listed if j["state"] not in ("done", "failed")} | (
                set(job_ids) - {j["id"] for j in listed}
            )
            time.sleep(0.2)
        assert not pending, f"{len(pending)} jobs unfinished: {agent.log_text()[-2000:]}"
        jobs = [_job(http, auth, j) for j in job_ids]
        assert all(job["state"] == "done" for job in jobs), [j["error"] for j in jobs if j["state"] != "done"]
        for job, (_, _, i) in zip(jobs, outcomes):
            record = http.get(f"/v1/jobs/{job['id']}/result", headers=auth).json()
            assert record["agent"]["job_id"] == job["id"]
            assert record["batch_sizes"] == [1 + i]  # each result belongs to its own request
        assert len(http.get("/v1/jobs", headers=auth).json()["jobs"]) == 20
    # One measurement at a time: no two jobs' running intervals overlap.
    spans = sorted((job["started"], job["finished"]) for job in jobs)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end


# -- crashes, timeouts, stops --------------------------------------------------------------------

CRASHING_WORKER = """
import json, os, runpy, sys
job_dir = sys.argv[sys.argv.index("--job-dir") + 1]
request = json.load(open(os.path.join(job_dir, "request.json")))
if request["batch_sizes"] == [13]:
    print("simulated runtime crash", file=sys.stderr, flush=True)
    os.abort()
sys.argv = ["worker", *sys.argv[1:]]
runpy.run_module("edgeprune.device.agent.worker", run_name="__main__")
"""


def test_a_crashing_runtime_fails_its_job_and_the_agent_carries_on(
    agent_client: Callable[..., Any],
    auth: dict[str, str],
    tiny_bundle: Path,
    tmp_path: Path,
    fast_config: dict[str, float],
    wait: Callable[..., Any],
) -> None:
    script = tmp_path / "crashing_worker.py"
    script.write_text(CRASHING_WORKER)
    client = agent_client(worker_command=(sys.executable, str(script)))
    bundle_id = client.post("/v1/bundles", content=_archive(tiny_bundle, tmp_path), headers=auth).json()["id"]
    crash = client.post(
        "/v1/jobs",
        headers=auth,
        json={"bundles": [bundle_id], "batch_sizes": [13], "config": fast_config, "options": {"power": False}},
    ).json()
    fine = client.post(
        "/v1/jobs", headers=auth, json={"bundles": [bundle_id], "config": fast_config, "options": {"power": False}}
    ).json()

    def finished(job_id: str) -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
        return job if job["state"] in ("done", "failed") else None

    crashed = wait(lambda: finished(crash["id"]), 30, "the crashing job")
    assert crashed["state"] == "failed"
    assert "killed by signal SIGABRT" in crashed["error"] and "simulated runtime crash" in crashed["error"]
    assert wait(lambda: finished(fine["id"]), 30, "the next job")["state"] == "done"
    assert client.get("/v1/health").status_code == 200


def test_a_hanging_measurement_is_killed_at_its_timeout(
    agent_client: Callable[..., Any], auth: dict[str, str], tiny_bundle: Path, tmp_path: Path, wait: Callable[..., Any]
) -> None:
    client = agent_client()
    bundle_id = client.post("/v1/bundles", content=_archive(tiny_bundle, tmp_path), headers=auth).json()["id"]
    hang = {"warmup_s": 0.0, "min_iterations": 1, "min_duration_s": 60.0, "max_duration_s": 60.0}
    job = client.post(
        "/v1/jobs",
        headers=auth,
        json={"bundles": [bundle_id], "config": hang, "options": {"power": False}, "timeout_s": 1.5},
    ).json()
    started = time.monotonic()
    final = wait(
        lambda: (j := client.get(f"/v1/jobs/{job['id']}", headers=auth).json())["state"] == "failed" and j,
        20,
        "the timeout",
    )
    assert "timed out after 1.5 s" in final["error"]
    assert time.monotonic() - started < 15
    assert wait(lambda: not _worker_children(), 5, "the killed worker to be gone")


def test_stopping_the_agent_fails_the_running_job_and_keeps_the_queue(
    agent_client: Callable[..., Any],
    auth: dict[str, str],
    tiny_bundle: Path,
    tmp_path: Path,
    fast_config: dict[str, float],
    wait: Callable[..., Any],
) -> None:
    client = agent_client()
    bundle_id = client.post("/v1/bundles", content=_archive(tiny_bundle, tmp_path), headers=auth).json()["id"]
    slow = client.post(
        "/v1/jobs", headers=auth, json={"bundles": [bundle_id], "config": SLOW_CONFIG, "options": {"power": False}}
    ).json()
    queued = client.post(
        "/v1/jobs", headers=auth, json={"bundles": [bundle_id], "config": fast_config, "options": {"power": False}}
    ).json()
    wait(lambda: client.get(f"/v1/jobs/{slow['id']}", headers=auth).json()["state"] == "running", 10, "running")
    client.__exit__(None, None, None)  # graceful shutdown (SIGTERM under uvicorn)
    client.closed_by_test = True
    store = Store(client.app.state.config.db_path)
    assert store.get_job(slow["id"])["error"] == STOPPED_REASON
    assert store.get_job(queued["id"])["state"] == "queued"
    store.close()
    assert wait(lambda: not _worker_children(), 5, "no worker left behind")

    again = agent_client()
    done = wait(
        lambda: (j := again.get(f"/v1/jobs/{queued['id']}", headers=auth).json())["state"] == "done" and j,
        30,
        "the queued job to resume",
    )
    assert done["state"] == "done"


def test_a_second_agent_on_the_same_store_is_refused(tmp_path: Path, agent_token: str) -> None:
    config = AgentConfig(store=tmp_path / "store", token=agent_token)
    first = create_app(config)
    with pytest.raises(StoreError, match="another agent is already using"):
        create_app(config)
    del first


def test_recovery_stops_an_orphaned_worker_but_spares_unrelated_processes(
    tmp_path: Path, agent_token: str, wait: Callable[..., Any]
) -> None:
    from fastapi.testclient import TestClient

    config = AgentConfig(store=tmp_path / "store", token=agent_token)
    config.store.mkdir(parents=True)
    store = Store(config.db_path)
    orphan_job = store.create_job({"bundles": []})
    store.claim_next()
    other_job = store.create_job({"bundles": []})
    store.claim_next()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    orphan = subprocess.Popen([*sleeper, str(config.jobs_dir / orphan_job["id"])], start_new_session=True)
    bystander = subprocess.Popen([*sleeper, "unrelated"], start_new_session=True)
    try:
        store.set_worker_pid(orphan_job["id"], orphan.pid)
        store.set_worker_pid(other_job["id"], bystander.pid)  # a recycled pid: not ours any more
        store.close()
        with TestClient(create_app(config)) as client:
            jobs = {
                j["id"]: j
                for j in client.get("/v1/jobs", headers={"Authorization": f"Bearer {agent_token}"}).json()["jobs"]
            }
        assert jobs[orphan_job["id"]]["error"] == RESTARTED_REASON
        assert wait(lambda: orphan.poll() is not None, 5, "the orphan to be killed") is True
        assert bystander.poll() is None
    finally:
        for proc in (orphan, bystander):
            proc.kill()
            proc.wait(timeout=5)


# -- SIGKILL and restart -------------------------------------------------------------------------


def test_sigkill_mid_job_then_restart_accounts_for_every_job(
    spawn_agent: Callable[..., Any],
    auth: dict[str, str],
    tiny_bundle: Path,
    tmp_path: Path,
    fast_config: dict[str, float],
    wait: Callable[..., Any],
) -> None:
    agent = spawn_agent()
    with httpx.Client(base_url=agent.url, timeout=10) as http:
        bundle_id = http.post("/v1/bundles", content=_archive(tiny_bundle, tmp_path), headers=auth).json()["id"]
        slow = http.post(
            "/v1/jobs", headers=auth, json={"bundles": [bundle_id], "config": SLOW_CONFIG, "options": {"power": False}}
        ).json()
        queued = http.post(
            "/v1/jobs", headers=auth, json={"bundles": [bundle_id], "config": fast_config, "options": {"power": False}}
        ).json()
        assert queued["state"] == "queued" and queued["queue_position"] == 1
        wait(
            lambda: _job(http, auth, slow["id"])["progress"]["label"].startswith("measuring"),
            20,
            "the slow job to be measuring",
        )
        workers = wait(agent.worker_pids, 5, "the worker process")

    agent.kill()  # SIGKILL: no shutdown code runs
    # The worker dies with its agent (it asked for SIGKILL on parent death), so nothing keeps loading the device.
    assert wait(lambda: all(_gone(pid) for pid in workers), 5, "the orphaned worker to die")

    restarted = spawn_agent(store=agent.store)
    with httpx.Client(base_url=restarted.url, timeout=10) as http:
        failed = _job(http, auth, slow["id"])
        assert failed["state"] == "failed" and failed["error"] == RESTARTED_REASON
        resumed = wait(lambda: _finished(http, auth, queued["id"]), 30, "the queued job to resume")
        assert resumed["state"] == "done"
        later = http.post(
            "/v1/jobs", headers=auth, json={"bundles": [bundle_id], "config": fast_config, "options": {"power": False}}
        ).json()
        assert wait(lambda: _finished(http, auth, later["id"]), 30, "a new job")["state"] == "done"
        jobs = http.get("/v1/jobs", headers=auth).json()["jobs"]
        assert {j["id"] for j in jobs} == {slow["id"], queued["id"], later["id"]}  # nothing acknowledged lost
        assert http.get(f"/v1/jobs/{queued['id']}/result", headers=auth).json()["agent"]["job_id"] == queued["id"]
    assert "marked failed" in restarted.log_text()
