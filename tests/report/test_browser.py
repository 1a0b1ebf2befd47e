"""Open reports in headless Chromium: no JavaScript errors, every plot drawn, the trial table
sorts, filters and opens a trial's details, and the page is not blank."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autocompress import study as st
from autocompress.report import collect, write_report
from report_studies import fill_realistic, new_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-unsafe-swiftshader",  # software WebGL for the 3-D plot on a machine without a GPU
    "--enable-logging=stderr", "--v=0",
]
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found (apt-get install chromium) — browser checks skipped"
)

# Runs before anything else on the page: records uncaught errors where --dump-dom shows them.
ERRORS = """<script>window.__errors = [];
function __keep(m) { window.__errors.push(String(m)); document.documentElement.setAttribute('data-errors', JSON.stringify(window.__errors)); }
window.addEventListener('error', function (e) { __keep(e.message); });
window.addEventListener('unhandledrejection', function (e) { __keep(e.reason); });</script>"""

# Runs once the page has loaded: sorts by speedup, filters, opens a trial; records what it saw.
INTERACT = """<script>window.addEventListener('load', function () { setTimeout(function () {
  var out = {}, table = document.getElementById('trial-table');
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var speed = heads.findIndex(function (h) { return h.textContent.indexOf('speedup') === 0; });
  heads[speed].click(); heads[speed].click();  // descending
  out.sorted = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[speed].dataset.v; });
  var filter = document.getElementById('trial-filter');
  filter.value = 'teacher'; filter.dispatchEvent(new Event('input'));
  out.visible = Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return !r.hidden; })
    .map(function (r) { return r.dataset.trial; });
  filter.value = ''; filter.dispatchEvent(new Event('input'));
  var row = table.querySelector('tbody tr[data-trial="5"]');
  row.click();
  var detail = row.nextElementSibling;
  out.detail = detail && detail.classList.contains('detail') ? detail.textContent : null;
  document.documentElement.setAttribute('data-check', JSON.stringify(out));
}, 300); });</script>"""

# Runs in a page that shows a screenshot: counts its white pixels and those of the front's colour.
PIXELS = """<script>window.addEventListener('load', function () {
  var shot = document.getElementById('shot'), canvas = document.createElement('canvas');
  canvas.width = shot.naturalWidth; canvas.height = shot.naturalHeight;
  var context = canvas.getContext('2d');
  context.drawImage(shot, 0, 0);
  var d = context.getImageData(0, 0, canvas.width, canvas.height).data, out = {white: 0, front: 0};
  for (var i = 0; i < d.length; i += 4) {
    if (d[i] > 245 && d[i + 1] > 245 && d[i + 2] > 245) out.white++;
    if (d[i] === 0xd6 && d[i + 1] === 0x27 && d[i + 2] === 0x28) out.front++;  // #d62728
  }
  out.width = canvas.width; out.height = canvas.height;
  document.documentElement.setAttribute('data-pixels', JSON.stringify(out));
}); </script>"""


def _pixels(png: Path) -> dict:
    """Width, height and pixel counts of a PNG, as Chromium decodes it (see PIXELS)."""
    page = png.with_suffix(".html")
    data = base64.b64encode(png.read_bytes()).decode()
    page.write_text(f'<html><head></head><body><img id="shot" src="data:image/png;base64,{data}"></body></html>')
    dom, log = _browse(page, PIXELS)
    _no_errors(dom, log)
    found = re.search(r'data-pixels="([^"]*)"', dom)
    assert found, "the screenshot was read"
    return json.loads(found.group(1).replace("&quot;", '"'))


def _browse(html: Path, extra: str = "", screenshot: Path | None = None) -> tuple[str, str]:
    """The page's DOM after its scripts ran, and Chromium's console log."""
    page = html.with_name(html.stem + "-probe.html")
    text = html.read_text(encoding="utf-8").replace("<head>", "<head>" + ERRORS, 1).replace("</body>", extra + "</body>")
    page.write_text(text, encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        args = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000"]
        if screenshot is not None:
            args += ["--window-size=1400,3000", f"--screenshot={screenshot}"]
        else:
            args += ["--dump-dom"]
        proc = subprocess.run([*args, page.as_uri()], capture_output=True, text=True, timeout=120)
    return proc.stdout, proc.stderr


def _no_errors(dom: str, log: str) -> None:
    errors = re.search(r'data-errors="([^"]*)"', dom)
    assert errors is None, f"JavaScript errors: {errors.group(1)}"
    uncaught = [line for line in log.splitlines() if "Uncaught" in line]
    assert not uncaught, f"JavaScript errors in the console: {uncaught}"


def _plots(html: str) -> list[str]:
    return re.findall(r'<div id="(plot-[a-z0-9-]+)" class="plotly-graph-div"', html)


def test_every_plot_of_a_real_study_is_drawn(finished, tmp_path):
    study = st.load("rep", st.open_storage(finished, must_exist=True))
    report = write_report(collect(study), tmp_path / "report.html")
    plots = _plots(report.read_text())
    assert len(plots) == 9
    dom, log = _browse(report)
    _no_errors(dom, log)
    for plot in plots:
        # plotly marks each placeholder once its figure is drawn
        assert re.search(rf'<div id="{plot}" class="plotly-graph-div js-plotly-plot"', dom), f"{plot} was not drawn"
    assert dom.count('class="main-svg"') >= 2 * len(plots) - 1 and "scatterlayer" in dom
    assert "gl-container" in dom, "the 3-D view drew through WebGL"
    shot = tmp_path / "report.png"
    _browse(report, screenshot=shot)
    pixels = _pixels(shot)
    assert (pixels["width"], pixels["height"]) == (1400, 3000), "a shot of the whole window"
    assert pixels["white"] < 0.97 * 1400 * 3000, f"the page shows text and plots, not white: {pixels}"
    assert pixels["front"] >= 50, f"the front's markers (#d62728) are drawn, not only the text: {pixels}"


def test_the_trial_table_sorts_filters_and_opens_a_trial(tmp_path):
    study = fill_realistic(new_study(tmp_path), n=12)
    report = write_report(collect(study), tmp_path / "report.html")
    dom, log = _browse(report, INTERACT)
    _no_errors(dom, log)
    check = re.search(r"data-check=\"([^\"]*)\"", dom)
    assert check, "the interaction script ran"
    seen = json.loads(check.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    speeds = [float(v) for v in seen["sorted"] if v]
    assert speeds == sorted(speeds, reverse=True) and len(speeds) == 12, "sorted by speedup, fastest first"
    assert seen["sorted"][-2:] == ["", ""], "trials without a speedup sort last"
    assert seen["visible"] == ["0"], "the filter keeps the rows that mention it"
    assert "autocompress export synthetic --trial 5" in seen["detail"] and "layers:" in seen["detail"]


def test_a_study_with_only_failed_trials_opens_cleanly(tmp_path):
    study = new_study(tmp_path)
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "boom"}))
    study.ask()  # and one still running
    report = write_report(collect(study), tmp_path / "report.html")
    dom, log = _browse(report)
    _no_errors(dom, log)
    assert "All 1 trials failed" not in dom and "still running" in dom
    assert "2 of 2 trials shown" in dom
