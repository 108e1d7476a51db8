"""The deployment kit refers only to things that exist: files it copies, extras it installs,
commands and options it runs, paths the other pieces agree on.

Docker and systemd are not available here, so these checks read the files; what they catch is
drift (a renamed option, a moved file, an extra that was dropped), which is how such kits break.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgeprune.device.agent.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    TOKEN_ENV,
    build_config,
    load_config_file,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile.jetson"
DEVICE = ROOT / "device"


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "a continuation line runs off the end of the Dockerfile"
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def cli_help(*command: str) -> str:
    from edgeprune.cli.main import app

    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def options_of(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith("--")]


# -- Dockerfile.jetson ---------------------------------------------------------------------------


def test_dockerfile_base_image_is_jetpack_6_with_tensorrt_10() -> None:
    froms = [args for word, args in dockerfile_instructions() if word == "FROM"]
    assert froms == ["nvcr.io/nvidia/l4t-jetpack:r36.4.0"]
    assert "TensorRT 10.3" in DOCKERFILE.read_text()


def test_dockerfile_copies_only_files_that_exist_and_all_that_pip_needs() -> None:
    copied: list[str] = []
    for word, args in dockerfile_instructions():
        if word == "COPY":
            parts = shlex.split(args)
            assert not any(p.startswith("--from") for p in parts)
            copied += parts[:-1]
    assert copied, "the Dockerfile copies nothing"
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    assert "pyproject.toml" in copied and "edgeprune" in copied
    assert pyproject()["project"]["readme"] in copied  # pip install needs the readme the metadata names


def test_dockerfile_installs_extras_that_exist() -> None:
    runs = " ".join(args for word, args in dockerfile_instructions() if word == "RUN")
    installs = re.findall(r"pip install [\"']?\.\[([a-z,]+)\][\"']?", runs)
    assert installs, "no `pip install .[extras]` of edgeprune"
    extras = {e for group in installs for e in group.split(",")}
    assert {"device", "trt"} <= extras
    assert extras <= set(pyproject()["project"]["optional-dependencies"])


def test_dockerfile_smoke_imports_name_real_modules() -> None:
    runs = " ".join(args for word, args in dockerfile_instructions() if word == "RUN")
    modules = [m.strip() for group in re.findall(r"import (edgeprune[\w., ]*)", runs) for m in group.split(",")]
    assert modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module


def test_dockerfile_entrypoint_is_the_agent_on_all_interfaces_with_real_options() -> None:
    instructions = dict(dockerfile_instructions())
    entry = exec_form(instructions["ENTRYPOINT"])
    cmd = exec_form(instructions["CMD"])
    assert entry[:3] == ["edgeprune", "agent", "serve"]
    assert entry[0] in pyproject()["project"]["scripts"]
    assert entry[entry.index("--host") + 1] == "0.0.0.0"
    help_text = cli_help("agent", "serve")
    for option in options_of(entry + cmd):
        assert option in help_text, f"{option} is not an option of `edgeprune agent serve`"
    runs = " ".join(args for word, args in dockerfile_instructions() if word == "RUN")
    assert "edgeprune agent serve --help" in runs  # the build fails early if the entry point is broken


def test_dockerfile_needs_a_token_and_bakes_none_in() -> None:
    text = DOCKERFILE.read_text()
    assert "REFUSES TO START WITHOUT A TOKEN" in text
    for word, args in dockerfile_instructions():
        assert TOKEN_ENV not in args or word not in ("ENV", "ARG"), f"{word} {args} bakes a token into the image"
    assert "--token-file" not in dict(dockerfile_instructions())["CMD"]  # the token comes at run time


def test_dockerfile_port_user_and_health_check_agree_with_the_agent(tmp_path: Path) -> None:
    instructions = dockerfile_instructions()
    assert ("EXPOSE", str(DEFAULT_PORT)) in instructions
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = next(args for word, args in instructions if word == "HEALTHCHECK")
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", health)
    assert url and int(url.group(1)) == DEFAULT_PORT

    test_client = pytest.importorskip("fastapi.testclient", reason="the agent needs edgeprune[device]")

    from edgeprune.device.agent.app import create_app
    from edgeprune.device.agent.config import AgentConfig

    app = create_app(AgentConfig(store=tmp_path / "store", token="t" * 32))
    with test_client.TestClient(app) as client:
        assert client.get(url.group(2)).status_code == 200  # and without a token


# -- device/ -------------------------------------------------------------------------------------


def test_device_folder_has_the_kit_and_the_readme_covers_it() -> None:
    expected = {"README.md", "setup.sh", "edgeprune-agent.service", "run-docker.sh", "agent.example.toml"}
    assert expected <= {p.name for p in DEVICE.iterdir()}
    readme = (DEVICE / "README.md").read_text()
    for name in expected - {"README.md"}:
        assert name in readme
    assert "Dockerfile.jetson" in readme


@pytest.mark.parametrize("script", ["setup.sh", "run-docker.sh"])
def test_shell_scripts_parse_and_are_executable(script: str) -> None:
    path = DEVICE / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in path.read_text()
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_run_docker_uses_the_nvidia_runtime_the_jtop_socket_and_the_built_image() -> None:
    text = (DEVICE / "run-docker.sh").read_text()
    assert "docker run" in text and "--runtime nvidia" in text
    assert "-v /run/jtop.sock:/run/jtop.sock" in text and "--group-add" in text
    image = re.search(r"EDGEPRUNE_IMAGE:-([^}]+)\}", text)
    assert image and f"-t {image.group(1)}" in DOCKERFILE.read_text()  # the tag the Dockerfile builds
    assert '-p "$BIND:$PORT:8765"' in text and "BIND=${EDGEPRUNE_BIND:-127.0.0.1}" in text
    after_image = text.split('"$IMAGE"', 1)[1]
    help_text = cli_help("agent", "serve")
    for option in re.findall(r"--[a-z][a-z-]+", after_image):
        assert option in help_text


def unit_entries() -> list[tuple[str, str, str]]:
    section, entries = "", []
    for line in (DEVICE / "edgeprune-agent.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def test_systemd_unit_restarts_on_failure_as_a_non_root_jtop_member() -> None:
    entries = unit_entries()
    service = {key: value for section, key, value in entries if section == "Service"}
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("root", "0") and service["User"]
    assert "jtop" in service["SupplementaryGroups"].split()
    assert service["KillMode"] == "mixed"  # the agent stops its measurement; leftovers are killed
    assert ("Install", "WantedBy", "multi-user.target") in entries


def test_systemd_unit_setup_script_and_config_agree_on_paths_and_options() -> None:
    service = {key: value for section, key, value in unit_entries() if section == "Service"}
    setup = (DEVICE / "setup.sh").read_text()
    argv = shlex.split(service["ExecStart"])
    program, command = argv[0], argv[1:3]
    assert command == ["agent", "serve"]
    venv = (
        re.search(r"^VENV=(.+)$", setup, re.M)
        .group(1)
        .replace("$PREFIX", re.search(r"^PREFIX=(.+)$", setup, re.M).group(1))
    )
    assert program == f"{venv}/bin/edgeprune"
    help_text = cli_help("agent", "serve")
    for option in options_of(argv):
        assert option in help_text
    conf_dir = re.search(r"^CONF_DIR=(.+)$", setup, re.M).group(1)
    assert argv[argv.index("--config") + 1] == f"{conf_dir}/agent.toml"
    assert re.search(r"^SERVICE_USER=(.+)$", setup, re.M).group(1) == service["User"]
    example = load_config_file(DEVICE / "agent.example.toml")
    assert example["store"] == f"/var/lib/{service['StateDirectory']}"
    assert example["token_file"] == f"{conf_dir}/agent.token"
    for rel in re.findall(r"\$REPO/([\w./-]+)", setup):
        assert (ROOT / rel).exists(), f"setup.sh uses {rel}, which does not exist"
    extras = re.search(r'pip install --quiet "\$REPO\[([a-z,]+)\]"', setup).group(1).split(",")
    assert set(extras) <= set(pyproject()["project"]["optional-dependencies"])


def test_example_config_loads_and_matches_the_defaults(tmp_path: Path) -> None:
    example = load_config_file(DEVICE / "agent.example.toml")
    assert example["host"] == DEFAULT_HOST and example["port"] == DEFAULT_PORT
    config = build_config(
        config_file=DEVICE / "agent.example.toml", store=tmp_path, environ={TOKEN_ENV: "example-token-0123456789"}
    )
    assert config.host == "127.0.0.1" and config.max_upload_bytes == example["max_upload_mb"] << 20
    # The commented-out worker_command is valid once uncommented.
    text = (DEVICE / "agent.example.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("# worker_command"))
    import tomllib

    command = tomllib.loads(line[2:])["worker_command"]
    assert command[-2:] == ["-m", "edgeprune.device.agent.worker"]
