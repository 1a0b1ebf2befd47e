"""The report is built from the database alone and shows the front."""

from __future__ import annotations

import re
from dataclasses import replace

import optuna
import pytest

from autocompress import study as st
from autocompress.objective import OBJECTIVES
from autocompress.report import collect, render_html, write_report


def test_report_from_database_contains_front_and_baselines(finished, tmp_path):
    study = st.load("rep", st.open_storage(finished, must_exist=True))  # no model needed
    info = collect(study)
    assert len(info.complete) == 6
    front = {t.number for t in info.front}
    assert front == {t.number for t in study.best_trials}
    path = write_report(info, tmp_path / "r.html")
    html = path.read_text()
    assert "Pareto front" in html
    assert "Plotly.newPlot" in html
    assert not re.search(r"<script[^>]*\bsrc=", html), "plotly.js is inlined: the page needs no network"
    for t in info.front:
        assert re.search(rf"<tr><td>{t.number}</td>", html), f"front member {t.number} in the table"
    assert "half_depth" in html and "teacher accuracy" in html


def test_report_escapes_user_strings_and_handles_empty_study(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'e.db'}")
    name = "<script>alert(1)</script>"
    study = optuna.create_study(study_name=name, storage=storage, directions=[d for _, d in OBJECTIVES])
    html = render_html(collect(study))
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "No completed trials yet" in html
    failed = study.ask()
    failed.set_user_attr("fail_reason", "<b>boom</b>")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    html = render_html(collect(study))
    assert "&lt;b&gt;boom&lt;/b&gt;" in html and "<b>boom</b>" not in html


def test_report_shows_every_profile_and_labels_predicted_figures(finished):
    study = st.load("rep", st.open_storage(finished, must_exist=True))
    info = collect(study)
    assert [p["name"] for p in info.profiles] == ["test", "rpi4"]
    for t in info.complete:
        assert set(t.profile_speedups) == {"test", "rpi4"}
        assert t.latency_kind == "measured"
    html = render_html(info)
    # the front table: the objective's speedup, then a column for the reported, predicted profile
    assert "<th>speedup<br><span class='muted'>(measured)</span></th>" in html
    assert "speedup on rpi4<br><span class='muted'>(predicted)</span></th>" in html
    for t in info.front:
        row = re.search(rf"<tr><td>{t.number}</td>.*?</tr>", html)
        assert row, f"front member {t.number} in the table"
        assert f"<td>{t.profile_speedups['rpi4']:.2f}×</td>" in row.group(0), "its predicted rpi4 speedup is shown"
    # the summary says which figures were timed here and which are predictions, and for what device
    summary = html.split("<h2>Summary</h2>")[1].split("<h2>")[0]
    assert "test (objective): 1 thread(s), batch 1, sequence 16 — measured on cpu" in summary
    assert "rpi4 (reported): 4 thread(s), batch 1, sequence 128 — PREDICTED for Arm Cortex-A72" in summary
    assert "PREDICTED" not in summary.split("rpi4 (reported)")[0], "the measured profile is not called predicted"


def test_a_predicted_objective_is_labelled_in_the_table_and_axis(finished, tmp_path):
    """A study whose objective is predicted says so wherever its speedups appear."""
    study = st.load("rep", st.open_storage(finished, must_exist=True))
    info = collect(study)
    rpi4 = info.profiles[1]
    swapped = replace(
        info,
        config={**info.config, "profile": rpi4, "report_profiles": []},
        trials=[replace(t, latency_kind="predicted", speedup=t.profile_speedups.get("rpi4")) for t in info.trials],
    )
    html = render_html(swapped)
    assert "<th>speedup<br><span class='muted'>(predicted)</span></th>" in html
    assert "speedup over the teacher on rpi4 (×, predicted)" in html
    assert "rpi4 (objective): 4 thread(s)" in html and "speedup on rpi4" not in html
