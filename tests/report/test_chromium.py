"""Render report.html in headless Chromium and check that every figure actually loaded.

A PNG that Python can decode may still fail in a browser (a truncated data URI, a wrong MIME type),
so the browser itself is asked: a copy of the page gets a tiny script that, on ``load``, writes into
``document.title`` how many report images have a ``naturalWidth`` above zero, and Chromium's
``--dump-dom`` gives the title back. A deliberately broken control image proves the check can fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeprune.report.plots import PLOTS

CHROMIUM = shutil.which("chromium")

PROBE = """<img id="control" alt="control" src="data:image/png;base64,bm90IGEgcG5n">
<script>
window.addEventListener("load", function () {
  var plots = Array.from(document.querySelectorAll("img[data-plot]"));
  var ok = plots.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var control = document.getElementById("control").naturalWidth > 0 ? "control-loaded" : "control-broken";
  document.title = "loaded:" + ok + "/" + plots.length + ":" + control;
});
</script>
"""


def chromium_args(user_data_dir: Path) -> list[str]:
    """Headless flags that keep Chromium off the network and off the user's profile."""
    return [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={user_data_dir}",
        "--virtual-time-budget=10000",
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")
def test_every_plot_loads_in_chromium(tmp_path: Path, rendered: dict[str, Path]) -> None:
    page = tmp_path / "probe.html"
    html = rendered["html"].read_text(encoding="utf-8")
    assert html.count("</body>") == 1
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")

    result = subprocess.run(
        [*chromium_args(tmp_path / "profile"), "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r"<title>([^<]*)</title>", result.stdout)
    assert match is not None, "Chromium returned no DOM"
    assert match.group(1) == f"loaded:{len(PLOTS)}/{len(PLOTS)}:control-broken"
