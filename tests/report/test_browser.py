"""Open the report in headless Chromium: no JavaScript errors, plots drawn."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from autocompress import study as st
from autocompress.report import collect, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def report_file(request, tmp_path_factory):
    url = request.getfixturevalue("finished")
    study = st.load("rep", st.open_storage(url, must_exist=True))
    return write_report(collect(study), tmp_path_factory.mktemp("html") / "report.html")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium) — browser check skipped")
def test_plots_are_drawn_in_a_real_browser(report_file: Path):
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=8000", "--dump-dom", report_file.as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout
    # plotly replaces each placeholder div with an SVG drawing once its JavaScript ran without error
    assert dom.count('class="main-svg"') >= 2, "the plots were not drawn"
    assert "scatterlayer" in dom
    with tempfile.TemporaryDirectory() as profile:
        shot = report_file.with_suffix(".png")
        subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=8000",
             "--window-size=1200,1600", f"--screenshot={shot}", report_file.as_uri()],
            capture_output=True, timeout=120,
        )
    assert shot.stat().st_size > 30_000, "a blank page would compress to a few KB"
