"""report.html is self-contained, states provenance and labels estimates."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

from edgeprune.report import write_report
from edgeprune.report.plots import PLOTS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")


def html_of(paths: dict[str, Path]) -> str:
    return paths["html"].read_text(encoding="utf-8")


def test_report_files_exist(rendered: dict[str, Path]) -> None:
    for key in ("html", "json", "csv"):
        assert rendered[key].is_file() and rendered[key].stat().st_size > 0
    assert rendered["html"].name == "report.html"


def test_nothing_is_fetched_from_a_network(rendered: dict[str, Path]) -> None:
    html = html_of(rendered)
    fetches = re.findall(r"""(?:src|href|srcset|action)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert fetches == []
    assert "@import" not in html and "url(" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()


def test_every_image_is_an_embedded_png(rendered: dict[str, Path]) -> None:
    sources = IMG_SRC.findall(html_of(rendered))
    assert len(sources) == len(PLOTS)
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True)[:8] == PNG_SIGNATURE


def test_provenance_is_stated(rendered: dict[str, Path]) -> None:
    html = html_of(rendered)
    for fact in (
        "NVIDIA Jetson Orin Nano Developer Kit",
        "R36 (release)",
        "onnxruntime",
        "1.18.0",
        "CPUExecutionProvider",
        "perf_counter_ns",
        "schedutil",
        "2023-11-14 22:13:20 UTC",
    ):
        assert fact in html, fact
    assert "Provenance" in html and "synthetic record for tests" in html


def test_estimates_are_labelled(rendered: dict[str, Path]) -> None:
    html = html_of(rendered)
    assert "theoretical speedup (estimate)" in html
    assert "effective MACs (estimate)" in html
    assert html.count('class="estimate"') >= 2


def test_skipped_figures_say_why(rendered_minimal: dict[str, Path]) -> None:
    html = html_of(rendered_minimal)
    assert "Not shown: no per-layer profile" in html
    assert "Not shown: power was not measured" in html
    assert "No figure is estimated in its place" in html
    assert len(IMG_SRC.findall(html)) == 3


def test_record_text_is_escaped_and_stale_figures_removed(tmp_path: Path, minimal_record: dict[str, Any]) -> None:
    # One rendering for both checks: matplotlib is the slow part of these tests.
    stale = tmp_path / "power.png"
    stale.write_bytes(PNG_SIGNATURE)
    data = copy.deepcopy(minimal_record)
    data["variants"][1]["name"] = "<script>alert(1)</script>"
    html = html_of(write_report([data], tmp_path))
    assert "<script>" not in html and "&lt;script&gt;" in html
    # A figure left from an earlier report over other records would be misleading beside this one.
    assert not stale.exists()
