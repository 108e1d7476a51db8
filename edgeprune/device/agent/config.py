"""Configuration of the device agent: one frozen dataclass, filled from CLI options, a TOML file
and the environment, plus the bearer-token loader.

The configuration is frozen because the HTTP handlers, the job thread and the worker launcher all
read it concurrently; nothing may change it after start-up. The token is kept out of ``repr`` so
that it never lands in a log line or a traceback.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import UsageError

TOKEN_ENV = "EDGEPRUNE_AGENT_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_UPLOAD_MB = 256
DEFAULT_JOB_TIMEOUT_S = 1800.0
MIN_TOKEN_CHARS = 16
WORKER_MODULE = "edgeprune.device.agent.worker"
MAKE_TOKEN_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"

# Keys a TOML config file may hold (see device/agent.example.toml).
_FILE_KEYS = {
    "host",
    "port",
    "store",
    "token_file",
    "max_upload_mb",
    "job_timeout_s",
    "worker_command",
}


def default_store() -> Path:
    """Where the agent keeps its database and bundles when ``--store`` is not given."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edgeprune" / "agent"


def default_worker_command() -> tuple[str, ...]:
    """The measurement subprocess: this interpreter running the worker module."""
    return (sys.executable, "-m", WORKER_MODULE)


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to run.

    Attributes:
        store: folder for the SQLite database, uploaded bundles and job scratch space.
        token: the bearer token every request must carry (hidden from ``repr``).
        host: address to bind; loopback unless the operator explicitly opens it up.
        port: TCP port to bind.
        max_upload_bytes: uploads larger than this are refused with 413 while streaming.
        max_unpacked_bytes: an archive may unpack to at most this much (guards against gzip bombs).
        job_timeout_s: a measurement subprocess running longer than this is killed and its job failed.
        worker_command: argv prefix that starts the measurement subprocess; the agent appends
            ``--job-dir DIR``. Replaceable so an operator can wrap it (``nice``, ``taskset``) or
            point it at another interpreter that carries TensorRT.
        poll_interval_s: how often the job thread checks the subprocess and its progress file.
    """

    store: Path
    token: str = field(repr=False)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB << 20
    max_unpacked_bytes: int = 0
    job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S
    worker_command: tuple[str, ...] = field(default_factory=default_worker_command)
    poll_interval_s: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", Path(self.store))
        object.__setattr__(self, "worker_command", tuple(self.worker_command))
        if not is_valid_token(self.token):
            raise UsageError(f"the agent token must be printable ASCII without spaces; {MAKE_TOKEN_HINT}")
        if len(self.token) < MIN_TOKEN_CHARS:
            raise UsageError(f"the agent token is shorter than {MIN_TOKEN_CHARS} characters; {MAKE_TOKEN_HINT}")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port {self.port} is not between 0 and 65535")
        if self.max_upload_bytes <= 0:
            raise UsageError("the upload limit must be positive (--max-upload-mb)")
        if self.max_unpacked_bytes <= 0:
            # Model weights barely compress, so four times the archive is a generous ceiling.
            object.__setattr__(self, "max_unpacked_bytes", 4 * self.max_upload_bytes)
        if self.job_timeout_s <= 0:
            raise UsageError("the job timeout must be positive (job_timeout_s)")
        if not self.worker_command:
            raise UsageError("worker_command must name a program")

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.store / "agent.sqlite3"

    @property
    def bundles_dir(self) -> Path:
        """Content-addressed bundle folders: ``bundles/<sha256 of the archive>/``."""
        return self.store / "bundles"

    @property
    def jobs_dir(self) -> Path:
        """Per-job scratch folders (request, progress and result files of the subprocess)."""
        return self.store / "jobs"

    @property
    def tmp_dir(self) -> Path:
        """Uploads in flight and half-extracted bundles; emptied at start-up."""
        return self.store / "tmp"


def read_token_file(path: Path) -> str:
    """Read a bearer token from a file (surrounding whitespace stripped).

    Raises:
        UsageError: the file is missing, unreadable or empty.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as err:
        raise UsageError(f"token file {path} does not exist; {MAKE_TOKEN_HINT} > {path}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read token file {path}: {err}") from err
    if not text:
        raise UsageError(f"token file {path} is empty; {MAKE_TOKEN_HINT} > {path}")
    if not is_valid_token(text):
        raise UsageError(
            f"token file {path} must hold just the token, one line of printable characters without spaces "
            "(is it the right file?)"
        )
    return text


def is_valid_token(token: str) -> bool:
    """A token must fit an HTTP header: printable ASCII, no whitespace."""
    return bool(token) and all("!" <= char <= "~" for char in token)


def token_file_is_shared(path: Path) -> bool:
    """True when other users may read the token file (worth a warning, as for an ssh key)."""
    try:
        return bool(Path(path).stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def load_token(token_file: Path | None, environ: Mapping[str, str] | None = None) -> str:
    """The bearer token: from ``token_file`` if given, else from ``$EDGEPRUNE_AGENT_TOKEN``.

    Raises:
        UsageError: neither source gives a token; the message says how to make one.
    """
    env = os.environ if environ is None else environ
    if token_file is not None:
        return read_token_file(token_file)
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        return token
    raise UsageError(f"the agent needs a bearer token: pass --token-file FILE or set {TOKEN_ENV}; {MAKE_TOKEN_HINT}")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read an agent TOML file (the keys of device/agent.example.toml, at the top level).

    Raises:
        UsageError: the file is missing, not TOML, or holds a key the agent does not know.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise UsageError(f"config file {path} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read config file {path}: {err}") from err
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10 (JetPack 6): the same parser, as a package
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config file {path} is not valid TOML: {err}") from err
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise UsageError(f"config file {path} has unknown keys {unknown}; known: {sorted(_FILE_KEYS)}")
    return data


def build_config(
    *,
    config_file: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    store: Path | None = None,
    token_file: Path | None = None,
    max_upload_mb: float | None = None,
    job_timeout_s: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Merge the sources into one config: CLI options win over the file, the file over defaults.

    The token comes from ``token_file`` (the option), else ``$EDGEPRUNE_AGENT_TOKEN``, else the
    file's ``token_file``, so that a systemd ``Environment=`` can override a shipped config.

    Raises:
        UsageError: a value is invalid or no token is available.
    """
    env = os.environ if environ is None else environ
    data = load_config_file(config_file) if config_file is not None else {}

    def pick(cli: Any, key: str, default: Any) -> Any:
        return cli if cli is not None else data.get(key, default)

    if token_file is None and not env.get(TOKEN_ENV, "").strip() and data.get("token_file"):
        token_file = Path(str(data["token_file"])).expanduser()
    token = load_token(token_file, env)
    if token_file is not None and token_file_is_shared(token_file):
        logging.getLogger("edgeprune.agent").warning(
            "token file %s is readable by every user; restrict it: chmod 600 %s", token_file, token_file
        )
    worker = data.get("worker_command")
    if worker is not None and (not isinstance(worker, list) or not all(isinstance(w, str) for w in worker)):
        raise UsageError("config key worker_command must be a list of strings")
    try:
        upload_mb = float(pick(max_upload_mb, "max_upload_mb", DEFAULT_MAX_UPLOAD_MB))
        return AgentConfig(
            store=Path(str(pick(store, "store", default_store()))).expanduser(),
            token=token,
            host=str(pick(host, "host", DEFAULT_HOST)),
            port=int(pick(port, "port", DEFAULT_PORT)),
            max_upload_bytes=int(upload_mb * (1 << 20)),
            job_timeout_s=float(pick(job_timeout_s, "job_timeout_s", DEFAULT_JOB_TIMEOUT_S)),
            worker_command=tuple(worker) if worker else default_worker_command(),
        )
    except (TypeError, ValueError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"invalid agent setting: {err}") from err
