"""The device agent's HTTP API: auth, uploads, jobs, results, device report, store, config, CLI.

Most tests run the app in process with FastAPI's TestClient (the job thread and the measurement
subprocesses are real); one starts the real server with ``python -m edgeprune.device.agent`` and
checks what only a separate process can show: its footprint and that it loads no heavy module.
Failure injection (crashes, SIGKILL, oversize streams, concurrency) lives in test_agent_faults.py.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tarfile
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgeprune.bundle import pack_bundle
from edgeprune.device.agent import app as app_module
from edgeprune.device.agent.config import (
    TOKEN_ENV,
    AgentConfig,
    build_config,
    load_config_file,
    load_token,
)
from edgeprune.device.agent.jobs import RESTARTED_REASON
from edgeprune.device.agent.store import Store
from edgeprune.device.measure.timing import MeasureConfig
from edgeprune.errors import UsageError

JOB_TIMEOUT_S = 30.0


def archive_bytes(bundle_dir: Path, tmp_path: Path) -> bytes:
    archive = pack_bundle(bundle_dir, tmp_path / f"{bundle_dir.name}-{time.monotonic_ns()}.tar.gz")
    return archive.read_bytes()


def upload(client: Any, auth: dict[str, str], data: bytes) -> Any:
    return client.post("/v1/bundles", content=data, headers={**auth, "Content-Type": "application/gzip"})


def wait_done(client: Any, auth: dict[str, str], job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
        if job["state"] in ("done", "failed"):
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished within {timeout_s} s")


# -- authentication ------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/v1/device"),
    ("POST", "/v1/bundles"),
    ("GET", "/v1/bundles"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/" + "0" * 32),
    ("GET", "/v1/jobs/" + "0" * 32 + "/result"),
]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token-0123456789", "Basic dGVzdA==", "Bearer", "Bearer test-token-0123456789abcde"],
    ids=["missing", "wrong", "basic-scheme", "empty", "prefix-of-token"],
)
def test_every_endpoint_refuses_a_missing_or_wrong_token(agent_client: Callable[..., Any], header: str | None) -> None:
    client = agent_client()
    headers = {} if header is None else {"Authorization": header}
    for method, path in PROTECTED:
        response = client.request(method, path, headers=headers, content=b"x" * 10)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "token" in response.json()["detail"]
    assert not any((client.app.state.config.tmp_dir).iterdir()), "an unauthenticated upload left a file"


def test_token_is_compared_in_constant_time(
    agent_client: Callable[..., Any], auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = app_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", spy)
    client = agent_client()
    assert client.get("/v1/device", headers=auth).status_code == 200
    assert client.get("/v1/device", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert len(calls) == 2 and all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


def test_health_needs_no_token_and_reveals_nothing(agent_client: Callable[..., Any]) -> None:
    response = agent_client().get("/v1/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


# -- device report -------------------------------------------------------------------------------


def test_device_reports_runners_sensors_limits_and_footprint(
    agent_client: Callable[..., Any], auth: dict[str, str]
) -> None:
    client = agent_client(max_upload_bytes=3 << 20)
    info = client.get("/v1/device", headers=auth).json()
    runners = {r["name"]: r["available"] for r in info["runners"]}
    assert runners["onnxruntime"] is True and set(runners) == {"onnxruntime", "tensorrt", "pytorch"}
    assert isinstance(info["sensors"], list)
    assert isinstance(info["sensors_unavailable"], list)
    if not info["sensors"]:
        assert info["sensors_unavailable"]  # never an empty list without saying why
    assert info["limits"]["max_upload_bytes"] == 3 << 20
    footprint = info["footprint"]
    assert footprint["rss_bytes"] > 0 and footprint["cpu_percent"] >= 0 and footprint["threads"] >= 1
    assert info["provenance"]["python"] and "libraries" in info["provenance"]
    assert info["queue"] == {"queued": 0, "running": 0, "done": 0, "failed": 0, "busy": False}


def test_real_server_is_light_and_binds_loopback(spawn_agent: Callable[..., Any], auth: dict[str, str]) -> None:
    import httpx

    agent = spawn_agent()
    assert agent.url.startswith("http://127.0.0.1:")
    info = httpx.get(agent.url + "/v1/device", headers=auth, timeout=10).json()
    footprint = info["footprint"]
    assert footprint["pid"] == agent.proc.pid
    assert footprint["rss_bytes"] < 150 * (1 << 20), footprint
    # The measured process is the worker; the service itself must not carry a runtime.
    assert footprint["heavy_modules_loaded"] == [], footprint
    time.sleep(0.5)
    idle = httpx.get(agent.url + "/v1/device", headers=auth, timeout=10).json()["footprint"]
    assert idle["cpu_percent"] < 50.0, idle  # idle: the job thread sleeps on an event


# -- uploads -------------------------------------------------------------------------------------


def test_upload_is_content_addressed_and_deduplicated(
    agent_client: Callable[..., Any], auth: dict[str, str], tiny_bundle: Path, tmp_path: Path
) -> None:
    client = agent_client()
    data = archive_bytes(tiny_bundle, tmp_path)
    first = upload(client, auth, data)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["id"] == hashlib.sha256(data).hexdigest()
    assert body == {"id": body["id"], "name": "tiny", "size_bytes": len(data), "deduplicated": False}
    stored = client.app.state.config.bundles_dir / body["id"]
    assert sorted(p.name for p in stored.iterdir()) == ["manifest.json", "model.onnx", "reference.npz"]
    again = upload(client, auth, data)
    assert again.status_code == 200 and again.json()["deduplicated"] is True
    assert client.get(f"/v1/bundles/{body['id']}", headers=auth).json()["manifest"]["name"] == "tiny"
    assert [b["id"] for b in client.get("/v1/bundles", headers=auth).json()["bundles"]] == [body["id"]]
    assert not any(client.app.state.config.tmp_dir.iterdir())


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


HOSTILE = {
    "dotdot": [(_member("../evil.txt"), b"pwned")],
    "dotdot-nested": [(_member("ok/../../evil.txt"), b"pwned")],
    "absolute": [(_member("{ABSOLUTE}"), b"pwned")],  # filled in with a path in the test's tmp folder
    "symlink": [(_member("manifest.json", tarfile.SYMTYPE, "/etc/passwd"), None)],
    "hardlink": [(_member("model.onnx", tarfile.LNKTYPE, "/etc/passwd"), None)],
    "directory": [(_member("sub", tarfile.DIRTYPE), None)],
    "fifo": [(_member("pipe", tarfile.FIFOTYPE), None)],
    "char-device": [(_member("null", tarfile.CHRTYPE), None)],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_write_nothing_outside(
    agent_client: Callable[..., Any], auth: dict[str, str], make_tar: Callable[..., bytes], tmp_path: Path, kind: str
) -> None:
    client = agent_client()
    store = client.app.state.config.store
    absolute = tmp_path / "absolute-evil.txt"
    members = [(_member(str(absolute)) if info.name == "{ABSOLUTE}" else info, data) for info, data in HOSTILE[kind]]
    before = {p for p in tmp_path.rglob("*")}
    response = upload(client, auth, make_tar(members))
    assert response.status_code == 400, response.text
    assert "unsafe" in response.json()["detail"] or "not a regular file" in response.json()["detail"]
    after = {p for p in tmp_path.rglob("*")}
    outside = [p for p in after - before if store not in p.parents and p != store]
    assert outside == []
    assert not absolute.exists()
    assert not any(client.app.state.config.bundles_dir.iterdir())
    assert not any(client.app.state.config.tmp_dir.iterdir())


def test_truncated_and_garbage_archives_are_400(
    agent_client: Callable[..., Any], auth: dict[str, str], tiny_bundle: Path, tmp_path: Path
) -> None:
    client = agent_client()
    data = archive_bytes(tiny_bundle, tmp_path)
    for bad in (data[: len(data) // 2], data[:-20], b"this is not a tar.gz", b"\x1f\x8b" + b"\x00" * 64):
        response = upload(client, auth, bad)
        assert response.status_code == 400, response.text
        assert "truncated or corrupt" in response.json()["detail"]
    empty = upload(client, auth, b"")
    assert empty.status_code == 400 and "empty upload" in empty.json()["detail"]
    assert not any(client.app.state.config.bundles_dir.iterdir())


def test_checksum_mismatch_is_400(
    agent_client: Callable[..., Any], auth: dict[str, str], tiny_bundle: Path, make_tar: Callable[..., bytes]
) -> None:
    client = agent_client()
    members = []
    for name in ("manifest.json", "model.onnx", "reference.npz"):
        data = (tiny_bundle / name).read_bytes()
        if name == "model.onnx":
            data = data[:-1] + bytes([data[-1] ^ 0xFF])  # one flipped byte in transit
        members.append((_member(name), data))
    response = upload(client, auth, make_tar(members))
    assert response.status_code == 400
    assert "fails its checksum" in response.json()["detail"]
    assert not any(client.app.state.config.bundles_dir.iterdir())


def test_declared_oversize_upload_is_413(
    agent_client: Callable[..., Any], auth: dict[str, str], tiny_bundle: Path, tmp_path: Path
) -> None:
    data = archive_bytes(tiny_bundle, tmp_path)
    client = agent_client(max_upload_bytes=len(data) - 1)
    response = upload(client, auth, data)
    assert response.status_code == 413
    assert "--max-upload-mb" in response.json()["detail"]
    assert not any(client.app.state.config.tmp_dir.iterdir())


# -- jobs ----------------------------------------------------------------------------------------


def test_job_runs_in_a_subprocess_and_its_result_is_stored(
    agent_client: Callable[..., Any],
    auth: dict[str, str],
    bundle_factory: Callable[..., Path],
    tmp_path: Path,
    fast_config: dict[str, float],
) -> None:
    client = agent_client()
    variant = upload(client, auth, archive_bytes(bundle_factory("small", seed=1, hidden=2), tmp_path)).json()["id"]
    base = upload(client, auth, archive_bytes(bundle_factory("dense", seed=2, hidden=8), tmp_path)).json()["id"]
    response = client.post(
        "/v1/jobs",
        headers=auth,
        json={
            "bundles": [variant],
            "baseline": base,
            "batch_sizes": [1, 2],
            "config": fast_config,
            "options": {"power": False},
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] in ("queued", "running") and response.headers["location"] == f"/v1/jobs/{job['id']}"
    final = wait_done(client, auth, job["id"])
    assert final["state"] == "done", final
    assert final["progress"]["fraction"] == 1.0 and final["result_url"].endswith("/result")
    record = client.get(f"/v1/jobs/{job['id']}/result", headers=auth).json()
    assert record["kind"] == "edgeprune.result"
    assert record["agent"] == {"job_id": job["id"], "bundle_ids": [variant], "baseline_id": base}
    names = {v["name"]: v for v in record["variants"]}
    assert set(names) == {"small", "dense"}
    assert set(names["small"]["latency"]) == {"1", "2"}
    assert names["small"]["comparison"]["per_batch"]["1"]["measured_speedup"] > 0
    assert names["small"]["reference_check"]["passed"] is True
    assert record["method"]["min_iterations"] == fast_config["min_iterations"]
    # The worker process, not the agent, did the measuring.
    assert record["memory"]["peak_rss_bytes"] > 0
    # Stored durably: the result survives the job folder, which is cleaned up.
    assert not (client.app.state.config.jobs_dir / job["id"]).exists()
    assert Store(client.app.state.config.db_path).get_result(job["id"]) == record


def test_result_before_done_is_409_and_unknown_ids_are_404(
    agent_client: Callable[..., Any], auth: dict[str, str], tiny_bundle: Path, tmp_path: Path
) -> None:
    client = agent_client()
    bundle_id = upload(client, auth, archive_bytes(tiny_bundle, tmp_path)).json()["id"]
    slow = {"warmup_s": 0.0, "min_iterations": 1, "min_duration_s": 30.0, "max_duration_s": 30.0}
    job = client.post(
        "/v1/jobs", headers=auth, json={"bundles": [bundle_id], "config": slow, "options": {"power": False}}
    ).json()
    early = client.get(f"/v1/jobs/{job['id']}/result", headers=auth)
    assert early.status_code == 409 and "poll" in early.json()["detail"]
    assert client.get("/v1/jobs/" + "a" * 32, headers=auth).status_code == 404
    assert client.get("/v1/jobs/" + "a" * 32 + "/result", headers=auth).status_code == 404
    assert client.get("/v1/bundles/" + "b" * 64, headers=auth).status_code == 404
    assert client.get("/v1/jobs/not-an-id", headers=auth).status_code == 422


@pytest.mark.parametrize(
    "body, status, text",
    [
        ({"bundles": ["c" * 64]}, 404, "unknown bundle"),
        ({"bundles": []}, 422, "bundles"),
        ({"bundles": ["../../etc"]}, 422, "bundles"),
        ({"bundles": ["c" * 64], "batch_sizes": [0]}, 422, "batch_sizes"),
        ({"bundles": ["c" * 64], "config": {"warmup_s": -1}}, 422, "warmup_s"),
        ({"bundles": ["c" * 64], "surprise": 1}, 422, "surprise"),
        ({"bundles": ["c" * 64], "config": {"iterations": 3}}, 422, "iterations"),
    ],
    ids=["unknown-bundle", "no-bundles", "path-as-id", "batch-0", "negative-warmup", "extra-field", "extra-config"],
)
def test_invalid_jobs_are_refused_with_a_readable_reason(
    agent_client: Callable[..., Any], auth: dict[str, str], body: dict[str, Any], status: int, text: str
) -> None:
    client = agent_client()
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and text in detail
    assert client.get("/v1/jobs", headers=auth).json()["jobs"] == []


def test_job_timeout_above_the_agent_limit_is_400(
    agent_client: Callable[..., Any], auth: dict[str, str], tiny_bundle: Path, tmp_path: Path
) -> None:
    client = agent_client(job_timeout_s=60)
    bundle_id = upload(client, auth, archive_bytes(tiny_bundle, tmp_path)).json()["id"]
    response = client.post("/v1/jobs", headers=auth, json={"bundles": [bundle_id], "timeout_s": 61})
    assert response.status_code == 400 and "exceeds" in response.json()["detail"]


def test_a_bundle_computing_wrong_outputs_fails_with_the_reason(
    agent_client: Callable[..., Any],
    auth: dict[str, str],
    bundle_factory: Callable[..., Path],
    tmp_path: Path,
    fast_config: dict[str, float],
) -> None:
    client = agent_client()
    bad = bundle_factory("liar", corrupt_reference=True)
    bundle_id = upload(client, auth, archive_bytes(bad, tmp_path)).json()["id"]
    job = client.post(
        "/v1/jobs", headers=auth, json={"bundles": [bundle_id], "config": fast_config, "options": {"power": False}}
    ).json()
    final = wait_done(client, auth, job["id"])
    assert final["state"] == "failed"
    assert "differ from reference.npz" in final["error"]
    result = client.get(f"/v1/jobs/{job['id']}/result", headers=auth)
    assert result.status_code == 409 and "differ from reference.npz" in result.json()["detail"]


def test_job_options_are_the_bench_options() -> None:
    """A job's options are BenchOptions itself: same fields, same defaults, same limits (422 on the wire)."""
    from pydantic import ValidationError

    from edgeprune.device.agent.app import JobBody
    from edgeprune.device.measure.bench import BenchRequest
    from edgeprune.device.measure.settings import BenchOptions

    body = JobBody(bundles=["c" * 64])
    assert body.options == BenchOptions() == BenchRequest([]).options
    assert body.model_dump()["options"] == BenchOptions().to_dict()
    defaults = {f.name: f.default for f in fields(BenchRequest)}
    assert body.batch_sizes == list(defaults["batch_sizes"])
    with pytest.raises(ValidationError, match="intra_op_threads must be at least 0"):
        JobBody(bundles=["c" * 64], options={"intra_op_threads": -1})


@pytest.mark.parametrize(
    "config, field",
    [
        ({"min_duration_s": 0}, "min_duration_s"),
        ({"min_duration_s": -1}, "min_duration_s"),
        ({"min_iterations": 0}, "min_iterations"),
        ({"warmup_s": -0.1}, "warmup_s"),
        ({"chunk": 1.5}, "chunk"),
        ({"max_duration_s": 1e9}, "max_duration_s"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_one_settings_type_refuses_the_same_values_everywhere(
    agent_client: Callable[..., Any], auth: dict[str, str], config: dict[str, Any], field: str
) -> None:
    """The CLI, the client and the agent share MeasureConfig: a bad value is refused by each, before any work."""
    from edgeprune.device.agent.client import measure_settings

    client = agent_client()
    with pytest.raises(UsageError, match=field):
        measure_settings(config)
    answer = client.post("/v1/jobs", headers=auth, json={"bundles": ["c" * 64], "config": config})
    assert answer.status_code == 422 and field in answer.text


# -- store ---------------------------------------------------------------------------------------


def test_store_uses_wal_with_full_sync_and_recovers_running_jobs(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    first = store.create_job({"bundles": ["x"]})
    second = store.create_job({"bundles": ["y"]})
    assert store.get_job(second["id"])["queue_position"] == 1
    claimed = store.claim_next()
    assert claimed is not None and claimed["id"] == first["id"] and claimed["state"] == "running"
    store.set_worker_pid(first["id"], 12345)
    store.close()

    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    reopened = Store(tmp_path / "db.sqlite3")
    assert reopened._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    interrupted = reopened.recover_interrupted(RESTARTED_REASON)
    assert [j["id"] for j in interrupted] == [first["id"]] and interrupted[0]["worker_pid"] == 12345
    failed = reopened.get_job(first["id"])
    assert failed["state"] == "failed" and failed["error"] == RESTARTED_REASON
    assert reopened.get_job(second["id"])["state"] == "queued"
    assert reopened.counts() == {"queued": 1, "running": 0, "done": 0, "failed": 1}


# -- configuration and CLI -----------------------------------------------------------------------


def test_token_sources_and_their_errors(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("  file-token-0123456789abcdef\n")
    assert load_token(path, {}) == "file-token-0123456789abcdef"
    assert load_token(None, {TOKEN_ENV: "env-token-0123456789abcdef"}) == "env-token-0123456789abcdef"
    with pytest.raises(UsageError, match="--token-file"):
        load_token(None, {})
    with pytest.raises(UsageError, match="does not exist"):
        load_token(tmp_path / "missing", {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="is empty"):
        load_token(tmp_path / "empty", {})
    (tmp_path / "json").write_text('{\n  "name": "not a token"\n}\n')
    with pytest.raises(UsageError, match="must hold just the token"):
        load_token(tmp_path / "json", {})
    with pytest.raises(UsageError, match="printable"):
        AgentConfig(store=tmp_path, token="with space 0123456789abcdef")
    with pytest.raises(UsageError, match="shorter than"):
        AgentConfig(store=tmp_path, token="short")
    assert "file-token" not in repr(AgentConfig(store=tmp_path, token="file-token-0123456789abcdef"))


def test_a_world_readable_token_file_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = tmp_path / "tok"
    token.write_text("shared-token-0123456789abcdef")
    token.chmod(0o644)
    with caplog.at_level("WARNING", logger="edgeprune.agent"):
        build_config(store=tmp_path / "s", token_file=token, environ={})
    assert "chmod 600" in caplog.text
    caplog.clear()
    token.chmod(0o600)
    with caplog.at_level("WARNING", logger="edgeprune.agent"):
        build_config(store=tmp_path / "s", token_file=token, environ={})
    assert caplog.text == ""


def test_config_file_and_options_merge(tmp_path: Path) -> None:
    token = tmp_path / "tok"
    token.write_text("toml-token-0123456789abcdef")
    conf = tmp_path / "agent.toml"
    conf.write_text(f'port = 9000\nstore = "{tmp_path / "s"}"\ntoken_file = "{token}"\nmax_upload_mb = 8\n')
    built = build_config(config_file=conf, port=9100, environ={})
    assert (built.port, built.host, built.store, built.token) == (
        9100,
        "127.0.0.1",
        tmp_path / "s",
        "toml-token-0123456789abcdef",
    )
    assert built.max_upload_bytes == 8 << 20
    env_wins = build_config(config_file=conf, environ={TOKEN_ENV: "env-token-0123456789abcdef"})
    assert env_wins.token == "env-token-0123456789abcdef"
    conf.write_text("prot = 1\n")
    with pytest.raises(UsageError, match="unknown keys"):
        load_config_file(conf)


def test_python_310_reads_the_config_with_tomli() -> None:
    """The standard library has tomllib from 3.11; JetPack 6's Python 3.10 gets the same parser as tomli."""
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert "tomli>=2; python_version < '3.11'" in text


def test_a_config_file_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    for bad in ("[table\n", "key\n", "port = 1\nport = 2\n"):
        conf.write_text(bad)
        with pytest.raises(UsageError, match="is not valid TOML"):
            load_config_file(conf)


def test_cli_serve_turns_errors_into_one_red_line(
    tmp_path: Path, token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeprune.device.agent.cli import app

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--store", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "needs a bearer token" in result.output and "Traceback" not in result.output
    busy = __import__("socket").socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        result = runner.invoke(
            app, ["serve", "--store", str(tmp_path / "s"), "--token-file", str(token_file), "--port", str(port)]
        )
    finally:
        busy.close()
    assert result.exit_code == 2 and "cannot listen" in result.output
    help_text = runner.invoke(app, ["serve", "--help"]).output
    for option in ("--host", "--port", "--store", "--token-file", "--max-upload-mb"):
        assert option in help_text


def test_job_request_is_kept_verbatim_for_the_record(
    agent_client: Callable[..., Any], auth: dict[str, str], tiny_bundle: Path, tmp_path: Path
) -> None:
    client = agent_client()
    bundle_id = upload(client, auth, archive_bytes(tiny_bundle, tmp_path)).json()["id"]
    job = client.post(
        "/v1/jobs", headers=auth, json={"bundles": [bundle_id], "batch_sizes": [3], "options": {"power": False}}
    ).json()
    listed = client.get("/v1/jobs", headers=auth).json()["jobs"]
    assert listed[0]["id"] == job["id"]
    assert listed[0]["request"]["batch_sizes"] == [3]
    assert listed[0]["request"]["config"] == MeasureConfig().to_dict()
    json.dumps(listed)  # the public view is plain JSON


def test_a_tensorrt_job_without_tensorrt_fails_with_what_to_install(
    agent_client: Callable[..., Any],
    auth: dict[str, str],
    tiny_bundle: Path,
    tmp_path: Path,
    fast_config: dict[str, float],
) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    client = agent_client()
    bundle_id = upload(client, auth, archive_bytes(tiny_bundle, tmp_path)).json()["id"]
    job = client.post(
        "/v1/jobs",
        headers=auth,
        json={"bundles": [bundle_id], "config": fast_config, "options": {"power": False, "runner": "trt"}},
    ).json()
    final = wait_done(client, auth, job["id"])
    assert final["state"] == "failed"
    assert "tensorrt" in final["error"].lower() and "edgeprune[trt]" in final["error"]
    refused = client.post("/v1/jobs", headers=auth, json={"bundles": [bundle_id], "options": {"runner": "tflite"}})
    assert refused.status_code in (400, 422)
