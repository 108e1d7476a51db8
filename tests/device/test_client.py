"""The host-side client against a real agent: the happy path with progress, and every error a
user can meet (agent down, wrong token, bundle too large, bad bundle, failed job), each with a
message that says what to do."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeprune.bundle import pack_bundle
from edgeprune.device.agent.client import AgentClient, measure_settings, submit_and_wait
from edgeprune.device.measure.settings import BenchOptions, MeasureConfig
from edgeprune.errors import AgentError, UsageError

FAST = MeasureConfig(warmup_s=0.01, min_iterations=5, min_duration_s=0.01)
NO_POWER = BenchOptions(power=False)  # keep jobs short and alike on machines with a power sensor


def test_submit_and_wait_measures_on_the_agent_and_reports_progress(
    shared_agent: Any, agent_token: str, bundle_factory: Callable[..., Path]
) -> None:
    agent = shared_agent
    variant = bundle_factory("small", seed=1, hidden=2)
    dense = bundle_factory("dense", seed=2, hidden=8)
    calls: list[tuple[str, float]] = []
    # Long enough per step that polling sees the measurement steps go by.
    visible = MeasureConfig(warmup_s=0.01, min_iterations=5, min_duration_s=0.25)
    record = submit_and_wait(
        agent.url,
        agent_token,
        [variant],
        dense,
        (1, 2),
        visible,
        on_progress=lambda label, f: calls.append((label, f)),
        options=NO_POWER,
        poll_s=0.05,
    )

    assert record["kind"] == "edgeprune.result"
    names = {v["name"]: v for v in record["variants"]}
    assert set(names) == {"small", "dense"} and names["dense"]["is_baseline"]
    assert set(names["small"]["comparison"]["per_batch"]) == {"1", "2"}
    assert record["method"]["min_duration_s"] == visible.min_duration_s
    assert record["agent"]["job_id"] and len(record["agent"]["bundle_ids"]) == 1
    assert "switched off" in json.dumps(record["power"])  # the job's options reached the measurement

    labels = list(dict.fromkeys(label for label, _ in calls))
    assert labels[:2] == ["upload small", "upload dense"]
    assert any(label.startswith("measuring small b") for label in labels), labels
    assert all(0.0 <= f <= 1.0 for _, f in calls)
    for label in labels:  # every step ends at 100%, as in a local run
        assert [f for lb, f in calls if lb == label][-1] == 1.0, (label, calls)


def test_the_same_bundle_as_variant_and_baseline_is_uploaded_once(
    shared_agent: Any, agent_token: str, tiny_bundle: Path
) -> None:
    agent = shared_agent
    calls: list[str] = []
    record = submit_and_wait(
        agent.url,
        agent_token,
        [tiny_bundle],
        tiny_bundle,
        (1,),
        FAST,
        on_progress=lambda label, f: calls.append(label),
        options=NO_POWER,
    )
    assert [lb for lb in dict.fromkeys(calls) if lb.startswith("upload")] == ["upload tiny"]
    assert record["agent"]["baseline_id"] == record["agent"]["bundle_ids"][0]


def test_agent_down_says_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(AgentError, match="connection refused.*edgeprune agent serve") as info:
        submit_and_wait(f"http://127.0.0.1:{port}", "any-token-0123456789abcdef", [Path("unused")])
    assert info.value.status is None


def test_wrong_token_says_pass_token_file(shared_agent: Any, tiny_bundle: Path) -> None:
    agent = shared_agent
    with pytest.raises(AgentError, match="wrong or missing token: pass --token-file") as info:
        submit_and_wait(agent.url, "not-the-token-0123456789abcdef", [tiny_bundle], config=FAST, options=NO_POWER)
    assert info.value.status == 401


def test_bundle_over_the_upload_limit_is_refused_with_the_fix(
    spawn_agent: Callable[..., Any], agent_token: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    agent = spawn_agent(extra_args=("--max-upload-mb", "0.0005"))  # 524 bytes
    with pytest.raises(AgentError, match="over the agent's upload limit.*--max-upload-mb"):
        submit_and_wait(agent.url, agent_token, [tiny_bundle], config=FAST, options=NO_POWER)
    # Without the client's own check, the agent answers 413 itself.
    archive = pack_bundle(tiny_bundle, tmp_path / "tiny.tar.gz")
    with pytest.raises(AgentError, match="too large.*--max-upload-mb") as info:
        AgentClient(agent.url, agent_token).upload_archive(archive)
    assert info.value.status == 413


def test_a_rejected_bundle_shows_the_agents_reason(shared_agent: Any, agent_token: str, tmp_path: Path) -> None:
    agent = shared_agent
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b definitely not a bundle")
    with pytest.raises(
        AgentError, match=r"rejected the upload of broken.tar.gz.*\(400\).*truncated or corrupt"
    ) as info:
        AgentClient(agent.url, agent_token).upload_archive(archive)
    assert info.value.status == 400


def test_a_failed_job_raises_with_the_agents_reason(
    shared_agent: Any, agent_token: str, bundle_factory: Callable[..., Path]
) -> None:
    agent = shared_agent
    liar = bundle_factory("liar", corrupt_reference=True)
    with pytest.raises(AgentError, match="failed: .*differ from reference.npz"):
        submit_and_wait(agent.url, agent_token, [liar], config=FAST, poll_s=0.1, options=NO_POWER)


def test_wait_rides_out_a_brief_outage_but_not_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Any] = [
        AgentError("cannot reach the agent", status=None),
        AgentError("agent restarting", status=503),
        {"id": "j", "state": "running", "progress": {"label": "measuring x b1", "step_fraction": 0.5}},
        {"id": "j", "state": "done", "progress": {"label": "done", "step_fraction": 1.0}},
    ]

    def fake_job(self: AgentClient, job_id: str) -> dict[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    monkeypatch.setattr(AgentClient, "job", fake_job)
    calls: list[tuple[str, float]] = []
    client = AgentClient("127.0.0.1:1", "t" * 20)
    assert client.wait("j", lambda lb, f: calls.append((lb, f)), poll_s=0.01)["state"] == "done"
    assert calls == [("measuring x b1", 0.5), ("measuring x b1", 1.0)]

    answers[:] = [AgentError("the agent rejected it", status=404)]
    with pytest.raises(AgentError, match="rejected"):
        client.wait("j", poll_s=0.01)

    answers[:] = [AgentError("cannot reach the agent", status=None)] * 1000
    started = time.monotonic()
    with pytest.raises(AgentError, match="retried for 0.2 s"):
        client.wait("j", poll_s=0.02, retry_s=0.2)
    assert time.monotonic() - started < 5


def test_wait_gives_up_after_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AgentClient, "job", lambda self, job_id: {"id": job_id, "state": "queued", "progress": {}})
    calls: list[tuple[str, float]] = []
    with pytest.raises(AgentError, match="did not finish within 0.2 s"):
        AgentClient("http://127.0.0.1:1", "t" * 20).wait(
            "j", lambda lb, f: calls.append((lb, f)), poll_s=0.02, timeout_s=0.2
        )
    assert calls == [("queued", 0.0)]


def test_urls_and_settings_are_normalised() -> None:
    assert AgentClient("jetson:8765/", "t").url == "http://jetson:8765"
    assert AgentClient("https://jetson", "t").url == "https://jetson"
    with pytest.raises(UsageError, match="http://"):
        AgentClient("ftp://jetson", "t")
    with pytest.raises(UsageError):
        AgentClient("  ", "t")
    with pytest.raises(UsageError, match="--token-file"):
        AgentClient("jetson", '{\n "name": "a manifest, not a token"}')
    assert measure_settings(None) == {}
    assert measure_settings(FAST) == {
        "warmup_s": 0.01,
        "min_iterations": 5,
        "min_duration_s": 0.01,
        "chunk": FAST.chunk,
        "max_duration_s": FAST.max_duration_s,
    }
    assert measure_settings({"min_iterations": 3}) == {"min_iterations": 3}
    with pytest.raises(UsageError, match="unknown measurement settings"):
        measure_settings({"iterations": 3})
