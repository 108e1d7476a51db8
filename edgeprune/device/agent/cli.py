"""``edgeprune agent ...``: the on-device measurement service's command line.

It lives on the device side (no host package imported) so that ``python -m edgeprune.device.agent``
runs on a board with the device extra only; the host CLI mounts the same app as
``edgeprune agent``. Heavy imports (FastAPI, uvicorn, psutil) happen inside the command, so
``edgeprune --help`` stays fast on a host.
"""

# No `from __future__ import annotations`: typer reads the annotations at run time.

from pathlib import Path
from typing import Annotated

import typer

from edgeprune.errors import EdgepruneError

app = typer.Typer(no_args_is_help=True, help="The on-device measurement service.")


@app.callback()
def agent() -> None:
    """The on-device measurement service (a group, so `serve` keeps its name when run alone)."""


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1, this machine only).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8765).")] = None,
    store: Annotated[
        Path | None,
        typer.Option(help="Folder for the database, bundles and jobs (default ~/.local/share/edgeprune/agent)."),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the bearer token (else $EDGEPRUNE_AGENT_TOKEN).")
    ] = None,
    max_upload_mb: Annotated[
        float | None, typer.Option(help="Refuse bundle uploads larger than this (default 256).")
    ] = None,
    job_timeout_s: Annotated[
        float | None, typer.Option(help="Kill a measurement that runs longer than this (default 1800).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML file with the same settings (see device/agent.example.toml); options win."),
    ] = None,
) -> None:
    """Run the measurement service: one measurement at a time, each in its own subprocess.

    It binds 127.0.0.1 unless --host says otherwise. The token travels in clear text, so open the
    agent only on a trusted network, or reach it through an SSH tunnel.

    Example (on the device, then on the host):

        python -c 'import secrets; print(secrets.token_urlsafe(32))' > agent.token

        edgeprune agent serve --store ~/agent-store --token-file agent.token

        edgeprune bench bundle/ --agent http://jetson:8765 --token-file agent.token
    """
    from edgeprune.device.agent.config import build_config

    try:
        settings = build_config(
            config_file=config,
            host=host,
            port=port,
            store=store,
            token_file=token_file,
            max_upload_mb=max_upload_mb,
            job_timeout_s=job_timeout_s,
        )
        from edgeprune.device.agent.app import serve as run_server

        run_server(settings)
    except EdgepruneError as err:
        typer.secho(f"edgeprune agent: {err}", fg="red", err=True)
        raise typer.Exit(code=2) from err
    except ImportError as err:
        typer.secho(
            f"edgeprune agent: {err.name or err} is not installed: install it with `pip install 'edgeprune[device]'`",
            fg="red",
            err=True,
        )
        raise typer.Exit(code=2) from err


app.command("serve")(serve)


def serve_app(prog_name: str) -> None:
    """Run ``serve`` as a stand-alone program (``python -m edgeprune.device.agent``)."""
    single = typer.Typer(add_completion=False)
    single.command()(serve)
    single(prog_name=prog_name)
