"""Host-side client of the device agent: upload bundles, submit a job, follow it, fetch the result.

``edgeprune bench BUNDLE --agent URL`` is :func:`submit_and_wait`; ``edgeprune bench BUNDLE``
without ``--agent`` calls :func:`edgeprune.device.measure.bench.run_bench` directly. Both report progress
through the same ``on_progress(label, fraction)`` callback and return the same result record, so
the CLI does not care where the measurement ran.

Only the standard library is used (``urllib``), so a host needs nothing extra to talk to a device.
Every failure becomes an :class:`AgentError` whose message says what to do.
"""

from __future__ import annotations

import http.client
import json
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgeprune.bundle import pack_bundle
from edgeprune.device.measure.settings import BenchOptions, MeasureConfig
from edgeprune.errors import AgentError, UsageError

ProgressFn = Callable[[str, float], None]
TERMINAL_STATES = ("done", "failed")


@dataclass(frozen=True)
class AgentClient:
    """A connection to one agent.

    Attributes:
        url: the agent's base URL, e.g. ``http://jetson:8765`` (``http://`` is assumed if absent).
        token: the bearer token the agent was started with.
        timeout_s: per-request network timeout (uploads get ``upload_timeout_s``).
        upload_timeout_s: per-request timeout for uploads, which may be large over Wi-Fi.
    """

    url: str
    token: str
    timeout_s: float = 30.0
    upload_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        url = self.url.strip()
        if not url:
            raise UsageError("--agent needs a URL such as http://jetson:8765")
        if "://" not in url:
            url = "http://" + url
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"agent URL {self.url!r} must start with http:// or https://")
        object.__setattr__(self, "url", url.rstrip("/"))
        if not self.token or not all("!" <= char <= "~" for char in self.token):
            raise UsageError(
                "the agent token must be one line of printable characters without spaces: "
                "pass the file the agent was started with (--token-file)"
            )

    # -- transport -------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        what: str = "the request",
    ) -> Any:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise self._http_error(err, what) from None
        except urllib.error.URLError as err:
            raise self._network_error(err.reason, what) from err
        except (OSError, http.client.HTTPException) as err:
            raise self._network_error(err, what) from err
        try:
            return json.loads(payload) if payload else {}
        except json.JSONDecodeError as err:
            raise AgentError(f"{self.url} answered {what} with something that is not JSON: is it an agent?") from err

    def _http_error(self, err: urllib.error.HTTPError, what: str) -> AgentError:
        try:
            detail = json.loads(err.read() or b"{}").get("detail") or err.reason
        except (ValueError, AttributeError, OSError):
            detail = err.reason
        if err.code == 401:
            message = (
                f"the agent at {self.url} refused {what}: wrong or missing token: pass --token-file "
                "(the file the agent was started with) or set EDGEPRUNE_AGENT_TOKEN"
            )
        elif err.code == 413:
            message = f"the agent at {self.url} refused {what} as too large: {detail}"
        elif 400 <= err.code < 500:
            message = f"the agent at {self.url} rejected {what} ({err.code}): {detail}"
        else:
            message = f"the agent at {self.url} failed on {what} ({err.code}): {detail}; see its log"
        return AgentError(message, status=err.code)

    def _network_error(self, reason: object, what: str) -> AgentError:
        if isinstance(reason, ConnectionRefusedError):
            return AgentError(
                f"cannot reach the agent at {self.url}: connection refused; is `edgeprune agent serve` "
                "running there, and are the host and port right?"
            )
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return AgentError(f"the agent at {self.url} did not answer {what} in time; is the device busy or asleep?")
        if isinstance(reason, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
            return AgentError(f"the agent at {self.url} closed the connection during {what}")
        if isinstance(reason, socket.gaierror):
            return AgentError(f"cannot resolve the agent host in {self.url}: {reason}")
        return AgentError(f"cannot reach the agent at {self.url}: {reason}")

    # -- API -------------------------------------------------------------------------------------

    def device(self) -> dict[str, Any]:
        """``GET /v1/device``: provenance, runners, sensors, limits and the agent's footprint."""
        data: dict[str, Any] = self._request("GET", "/v1/device", what="the device query")
        return data

    def upload_archive(self, archive: Path, on_progress: ProgressFn | None = None, label: str = "") -> dict[str, Any]:
        """``POST /v1/bundles`` with a packed bundle, streamed from disk.

        Returns:
            ``{"id", "name", "size_bytes", "deduplicated"}``.
        """
        archive = Path(archive)
        size = archive.stat().st_size
        label = label or f"upload {archive.name}"
        with archive.open("rb") as fh:
            body = _ProgressReader(fh, size, label, on_progress)
            data: dict[str, Any] = self._request(
                "POST",
                "/v1/bundles",
                body=body,  # type: ignore[arg-type]  # urllib streams any object with read()
                headers={"Content-Type": "application/gzip", "Content-Length": str(size)},
                timeout_s=self.upload_timeout_s,
                what=f"the upload of {archive.name} ({size / (1 << 20):.1f} MB)",
            )
        return data

    def upload_bundle(
        self, bundle_dir: Path, on_progress: ProgressFn | None = None, max_upload_bytes: int | None = None
    ) -> dict[str, Any]:
        """Pack a bundle folder (checksums verified) and upload it.

        Raises:
            BundleError: the folder is not a valid bundle.
            AgentError: it is larger than ``max_upload_bytes`` or the agent refuses it.
        """
        bundle_dir = Path(bundle_dir)
        with tempfile.TemporaryDirectory(prefix="edgeprune-upload-") as tmp:
            archive = pack_bundle(bundle_dir, Path(tmp) / f"{bundle_dir.name}.tar.gz")
            size = archive.stat().st_size
            if max_upload_bytes is not None and size > max_upload_bytes:
                # Checked here because an agent that refuses mid-upload may just drop the connection.
                raise AgentError(
                    f"bundle {bundle_dir} packs to {size / (1 << 20):.1f} MB, over the agent's upload limit "
                    f"of {max_upload_bytes / (1 << 20):.0f} MB; start the agent with a larger --max-upload-mb"
                )
            return self.upload_archive(archive, on_progress, label=f"upload {bundle_dir.name}")

    def submit(
        self,
        bundle_ids: Sequence[str],
        baseline_id: str | None = None,
        batch_sizes: Sequence[int] = (1,),
        config: Any = None,
        timeout_s: float | None = None,
        options: BenchOptions | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/jobs``; returns the queued job (``id``, ``state``, ``queue_position``).

        Args:
            bundle_ids: uploaded bundles to measure.
            baseline_id: the uploaded baseline, or None.
            batch_sizes: each bundle is timed at each of these.
            config: MeasureConfig (or a mapping of its fields); None takes the agent's defaults.
            timeout_s: kill the measurement after this long (at most the agent's limit).
            options: runner, threads and power sampling; None takes the defaults (those of a local run).
        """
        body: dict[str, Any] = {
            "options": (options or BenchOptions()).to_dict(),
            "bundles": list(bundle_ids),
            "baseline": baseline_id,
            "batch_sizes": [int(b) for b in batch_sizes],
            "config": measure_settings(config),
        }
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        data: dict[str, Any] = self._request(
            "POST",
            "/v1/jobs",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            what="the job",
        )
        return data

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``: state, progress, failure reason."""
        data: dict[str, Any] = self._request("GET", f"/v1/jobs/{job_id}", what=f"the status query of job {job_id}")
        return data

    def result(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}/result``: the result record of a finished job."""
        data: dict[str, Any] = self._request("GET", f"/v1/jobs/{job_id}/result", what=f"the result of job {job_id}")
        return data

    def wait(
        self,
        job_id: str,
        on_progress: ProgressFn | None = None,
        poll_s: float = 0.5,
        timeout_s: float = 6 * 3600.0,
        retry_s: float = 30.0,
    ) -> dict[str, Any]:
        """Poll a job until it is done or failed, reporting progress.

        ``on_progress(label, fraction)`` gets the label of the current step (``queued``, ``loading
        models``, ``measuring NAME bN``) and that step's fraction; a step is reported at 1.0 when
        the next one starts, as :func:`~edgeprune.device.measure.bench.run_bench` does locally.

        Args:
            job_id: the job to follow.
            on_progress: progress callback, or None.
            poll_s: seconds between polls.
            timeout_s: give up (the job keeps running on the agent) after this long.
            retry_s: ride out an unreachable agent (a restart, a Wi-Fi drop) for this long.

        Returns:
            The final job status.

        Raises:
            AgentError: the job failed (with the agent's reason), or the agent stayed unreachable,
                or ``timeout_s`` passed.
        """
        deadline = time.monotonic() + timeout_s
        last: tuple[str, float] | None = None
        unreachable_since: float | None = None
        while True:
            try:
                job = self.job(job_id)
                unreachable_since = None
            except AgentError as err:
                if err.status is not None and err.status < 500:
                    raise  # an answer, not an outage: retrying cannot help
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > retry_s:
                    raise AgentError(f"{err} (retried for {retry_s:g} s; job {job_id} may still run there)") from err
                job = None
            if job is not None:
                if job["state"] == "done":
                    if on_progress is not None and last is not None and last[1] < 1.0:
                        on_progress(last[0], 1.0)
                    return job
                if job["state"] == "failed":
                    raise AgentError(f"the job on the agent at {self.url} failed: {job.get('error')}")
                label, fraction = _progress_of(job)
                if on_progress is not None and (label, fraction) != last:
                    if last is not None and last[0] != label and last[1] < 1.0:
                        on_progress(last[0], 1.0)  # the previous step is over
                    on_progress(label, fraction)
                last = (label, fraction)
            if time.monotonic() > deadline:
                raise AgentError(
                    f"job {job_id} did not finish within {timeout_s:g} s; it may still be queued or running: "
                    f"GET {self.url}/v1/jobs/{job_id}"
                )
            time.sleep(poll_s)


def _progress_of(job: Mapping[str, Any]) -> tuple[str, float]:
    progress = job.get("progress") or {}
    if job["state"] == "queued":
        return "queued", 0.0
    label = str(progress.get("label") or job["state"])
    return label, float(progress.get("step_fraction") or 0.0)


class _ProgressReader:
    """A file wrapper that reports upload progress as urllib reads the body."""

    def __init__(self, fh: IO[bytes], size: int, label: str, on_progress: ProgressFn | None) -> None:
        self._fh = fh
        self._size = max(size, 1)
        self._label = label
        self._on_progress = on_progress
        self._sent = 0
        self._last = -1.0

    def read(self, n: int = -1) -> bytes:
        chunk = self._fh.read(n)
        self._sent += len(chunk)
        if self._on_progress is not None:
            fraction = min(self._sent / self._size, 1.0)
            if fraction - self._last >= 0.01 or fraction >= 1.0 > self._last:
                self._last = fraction
                self._on_progress(self._label, fraction)
        return chunk


def measure_settings(config: MeasureConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """The job's timing rule from a MeasureConfig, a mapping of its fields, or None (the agent's defaults).

    A mapping is checked here, as the agent will check it, so a bad value fails before any upload.
    """
    if config is None:
        return {}
    if isinstance(config, Mapping):
        MeasureConfig.from_dict(dict(config))  # refuse what the agent would refuse; send what was given
        return dict(config)
    return config.to_dict()


def submit_and_wait(
    url: str,
    token: str,
    bundle_dirs: Sequence[Path],
    baseline: Path | None = None,
    batch_sizes: Sequence[int] = (1,),
    config: Any = None,
    on_progress: ProgressFn | None = None,
    *,
    poll_s: float = 0.5,
    timeout_s: float = 6 * 3600.0,
    options: BenchOptions | None = None,
) -> dict[str, Any]:
    """Measure bundles on an agent: upload them, queue one job, follow it, return its result record.

    Args:
        url: the agent, e.g. ``http://jetson:8765``.
        token: its bearer token.
        bundle_dirs: bundle folders to measure.
        baseline: the dense bundle to compare with, or None.
        batch_sizes: each bundle is timed at each of these.
        config: a :class:`~edgeprune.device.measure.MeasureConfig` (or a mapping of its fields);
            None takes the agent's defaults.
        on_progress: ``(label, fraction)`` callback, as for local runs.
        poll_s: seconds between status polls.
        timeout_s: how long to wait for the job before giving up.
        options: runner, threads and power sampling (:class:`BenchOptions`); None takes the
            defaults, which are those of a local run.

    Returns:
        The result record (the same contract as a local ``run_bench``), with an ``agent`` section
        naming the job and bundle ids.

    Raises:
        BundleError: a bundle folder is invalid.
        AgentError: the agent is unreachable, refuses the token or a bundle, or the job fails.
    """
    if not bundle_dirs:
        raise UsageError("name at least one bundle to measure")
    client = AgentClient(url, token)
    limits = client.device().get("limits", {})
    max_upload = limits.get("max_upload_bytes")
    uploaded: dict[Path, str] = {}

    def upload(path: Path) -> str:
        key = Path(path).resolve()
        if key not in uploaded:
            info = client.upload_bundle(Path(path), on_progress, max_upload)
            uploaded[key] = str(info["id"])
        return uploaded[key]

    bundle_ids = [upload(Path(p)) for p in bundle_dirs]
    baseline_id = upload(Path(baseline)) if baseline is not None else None
    job = client.submit(bundle_ids, baseline_id, batch_sizes, config, options=options)
    client.wait(job["id"], on_progress, poll_s=poll_s, timeout_s=timeout_s)
    return client.result(job["id"])
