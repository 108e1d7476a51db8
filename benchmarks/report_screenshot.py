"""Render a report.html to a PNG with headless Chromium, to look at a report without a desktop.

Usage::

    python benchmarks/report_screenshot.py runs/demo/report/report.html [report.png] \
        [--width 1280] [--height 5000]

Uses Debian's ``chromium`` package (``apt-get install chromium``) when it is on PATH; exits 2 with a
one-line reason when it is not. Chromium runs with networking features off and a throw-away profile,
so the screenshot also shows whether the report is truly self-contained: anything it tried to fetch
would be missing from the picture.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 5000, timeout_s: float = 120.0) -> Path:
    """Render ``html`` at ``width`` x ``height`` CSS pixels into ``png``.

    Raises:
        FileNotFoundError: no Chromium-family browser is installed.
        RuntimeError: the browser failed or wrote no file.
    """
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH: install Debian's chromium package (apt-get install chromium)")
    png = png.resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeprune-shot-") as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=10000",
            f"--screenshot={png}",
            html.resolve().as_uri(),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the report.html to render")
    parser.add_argument("png", type=Path, nargs="?", help="output PNG (default: beside the HTML)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=5000)
    args = parser.parse_args(argv)
    if not args.html.is_file():
        print(f"error: {args.html}: no such file", file=sys.stderr)
        return 2
    out = args.png or args.html.with_name(args.html.stem + "-screenshot.png")
    try:
        path = screenshot(args.html, out, args.width, args.height)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
