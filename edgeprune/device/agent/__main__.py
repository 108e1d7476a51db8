"""``python -m edgeprune.device.agent [OPTIONS]``: the same as ``edgeprune agent serve [OPTIONS]``.

Useful where the ``edgeprune`` console script is not on PATH (a bare venv, a container entry
point), and for tests that start the real server in a subprocess.
"""

from edgeprune.device.agent.cli import serve_app

if __name__ == "__main__":
    serve_app(prog_name="python -m edgeprune.device.agent")
