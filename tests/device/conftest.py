"""Shared fixtures for the device tests: tiny real bundles, agent configs, real agent servers.

The bundles are real: an ONNX graph (MatMul + Add) built with the ``onnx`` package, reference
outputs computed with ONNX Runtime, and a schema-1 manifest written by
:func:`edgeprune.bundle.write_bundle`, so the agent verifies and measures them like any other.

Agent servers are real too: ``python -m edgeprune.device.agent`` in a subprocess on a free
loopback port (it binds port 0 and logs the port it got), with every wait bounded.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeprune.bundle import Manifest, ModelInfo, TensorSpec, write_bundle

# The agent's service needs the device extra (fastapi, uvicorn, httpx). Where it is absent (a GPU
# machine used only for `pytest -m gpu`, say) its tests are not collected; `make test` installs it.
collect_ignore = (
    []
    if all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "httpx"))
    else ["test_agent.py", "test_agent_faults.py", "test_client.py"]
)

TOKEN = "test-token-0123456789abcdef"
FAST_CONFIG = {"warmup_s": 0.01, "min_iterations": 5, "min_duration_s": 0.01}
READY_TIMEOUT_S = 20.0


def build_tiny_bundle(
    directory: Path, name: str = "tiny", seed: int = 0, hidden: int = 3, corrupt_reference: bool = False
) -> Path:
    """Write a bundle with a ``["batch", 4] -> ["batch", hidden]`` MatMul+Add model.

    Args:
        directory: the bundle folder to create.
        name: the manifest name.
        seed: weights seed (different seeds give different archives).
        hidden: output width.
        corrupt_reference: store wrong expected outputs, so the device's correctness check fails.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((4, hidden)).astype(np.float32)
    bias = rng.standard_normal((hidden,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", hidden])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)

    staging = directory.parent / f".{directory.name}.src"
    staging.mkdir(parents=True, exist_ok=True)
    model_path = staging / "model.onnx"
    model_path.write_bytes(model.SerializeToString())
    x = rng.standard_normal((2, 4)).astype(np.float32)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (y,) = session.run(["logits"], {"input": x})
    if corrupt_reference:
        y = y + 1.0
    reference = staging / "reference.npz"
    np.savez(reference, **{"input:input": x, "output:logits": y})
    manifest = Manifest(
        name=name,
        precision="fp32",
        model=ModelInfo(spec="tiny"),
        inputs=(TensorSpec("input", ("batch", 4)),),
        outputs=(TensorSpec("logits", ("batch", hidden)),),
        sparsity={"pattern": "dense", "layers": []},
        cost={"macs": 0, "theoretical_speedup": 1.0},
        parity={"atol": 1e-4},
    )
    return write_bundle(directory, manifest, {"model.onnx": model_path, "reference.npz": reference})


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A .tar.gz built member by member, so tests can craft hostile archives."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


@pytest.fixture
def bundle_factory(tmp_path: Path) -> Callable[..., Path]:
    """Make tiny bundles under the test's tmp folder: ``bundle_factory("name", seed=1)``."""
    root = tmp_path / "bundles-src"

    def make(name: str = "tiny", **kwargs: Any) -> Path:
        return build_tiny_bundle(root / name, name=name, **kwargs)

    return make


@pytest.fixture
def tiny_bundle(bundle_factory: Callable[..., Path]) -> Path:
    """One valid tiny bundle folder."""
    return bundle_factory("tiny")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file holding :data:`TOKEN`, readable by its owner only."""
    path = tmp_path / "agent.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@dataclass
class AgentProcess:
    """A real agent server running in a subprocess."""

    proc: subprocess.Popen[bytes]
    url: str
    store: Path
    log: Path
    workers_seen: set[int] = field(default_factory=set)

    def worker_pids(self) -> list[int]:
        """Pids of the agent's measurement subprocesses right now."""
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        pids = [c.pid for c in children]
        self.workers_seen.update(pids)
        return pids

    def kill(self) -> None:
        """SIGKILL the agent (no cleanup runs, like a power cut of the service)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Kill the agent and every measurement process it started."""
        self.worker_pids()
        self.kill()
        for pid in self.workers_seen:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_agent(
    workdir: Path,
    token_file: Path,
    store: Path | None = None,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> AgentProcess:
    """Start ``python -m edgeprune.device.agent`` on a free loopback port and wait until it serves.

    The agent binds port 0 and logs the address it got, so there is no race for a free port.
    """
    store = store or workdir / "store"
    log = workdir / f"agent-{time.monotonic_ns()}.log"
    argv = [sys.executable, "-m", "edgeprune.device.agent", "--store", str(store), "--port", "0"]
    argv += ["--token-file", str(token_file), *extra_args]
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EDGEPRUNE_AGENT_TOKEN", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env, start_new_session=True
        )
    agent = AgentProcess(proc=proc, url="", store=store, log=log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = agent.log_text()
        match = re.search(r"edgeprune agent on (http://[\d.]+:\d+)", text)
        if match and "Application startup complete" in text:
            agent.url = match.group(1)
            return agent
        if proc.poll() is not None:
            raise AssertionError(f"agent exited with {proc.returncode}:\n{text}")
        time.sleep(0.05)
    agent.stop()
    raise AssertionError(f"agent not ready within {READY_TIMEOUT_S} s:\n{agent.log_text()}")


@pytest.fixture
def spawn_agent(tmp_path: Path, token_file: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Start real agents: ``spawn_agent(store=..., extra_args=(...))``; all are killed at teardown."""
    started: list[AgentProcess] = []

    def spawn(
        store: Path | None = None, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> AgentProcess:
        agent = start_agent(tmp_path, token_file, store, extra_args, env)
        started.append(agent)
        return agent

    yield spawn
    for agent in started:
        agent.stop()


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One real agent for a whole test module, for tests that only talk to it."""
    workdir = tmp_path_factory.mktemp("shared-agent")
    token_file = workdir / "agent.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    agent = start_agent(workdir, token_file)
    yield agent
    agent.stop()


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def wait() -> Callable[..., Any]:
    """:func:`wait_for` as a fixture, so test modules need not import conftest."""
    return wait_for


@pytest.fixture
def make_tar() -> Callable[[list[tuple[tarfile.TarInfo, bytes | None]]], bytes]:
    """:func:`tar_gz` as a fixture."""
    return tar_gz


@pytest.fixture
def agent_token() -> str:
    """The token every test agent is started with."""
    return TOKEN


@pytest.fixture
def fast_config() -> dict[str, float]:
    """A MeasureConfig small enough that a job takes a fraction of a second."""
    return dict(FAST_CONFIG)


@pytest.fixture
def auth() -> dict[str, str]:
    """Request headers carrying the right token."""
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def agent_client(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """In-process agents behind FastAPI's TestClient (lifespan running: the job thread is live).

    ``agent_client(**config_overrides)`` returns a started TestClient whose ``app.state`` holds the
    config, store and runner; every client is closed (job thread stopped) at teardown.
    """
    from fastapi.testclient import TestClient

    from edgeprune.device.agent.app import create_app
    from edgeprune.device.agent.config import AgentConfig

    clients: list[Any] = []

    def make(**overrides: Any) -> Any:
        settings = {"store": tmp_path / "store", "token": TOKEN, "poll_interval_s": 0.05, **overrides}
        client = TestClient(create_app(AgentConfig(**settings)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        if not getattr(client, "closed_by_test", False):
            client.__exit__(None, None, None)
