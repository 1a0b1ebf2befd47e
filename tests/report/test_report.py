"""The report is built from the database alone and shows the front."""

from __future__ import annotations

import re

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
