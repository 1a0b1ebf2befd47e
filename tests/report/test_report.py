"""The report is built from the database alone: every section with real data, escaped strings,
clear messages for studies with nothing to show, and the trial table as CSV / parquet."""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import replace
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import run_cli
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs

from autocompress import study as st
from autocompress.report import collect, render_html, trials_frame, write_report
from autocompress.report.analysis import BUDGETS, best_within
from autocompress.report.charts import (
    hypervolume_figure,
    importance_figure,
    predicted_vs_measured_figure,
    profile_speedups_figure,
    progress_figure,
)
from autocompress.report.figures import layer_heatmaps, pareto_3d_figure, pareto_figure
from report_studies import (
    LAYERS,
    T0,
    TEACHER_KV_BYTES,
    TEACHER_PPL,
    decoder_study,
    fill_realistic,
    new_study,
    realistic_trial,
)

PLOTS = ("plot-speed", "plot-size", "plot-3d", "plot-layers", "plot-hv", "plot-progress", "plot-importance",
         "plot-profiles", "plot-pred")


def _section(html: str, key: str) -> str:
    return html.split(f'<section id="{key}">')[1].split("</section>")[0]


def _front_table(html: str) -> dict[int, dict[str, str]]:
    """The Pareto section's table as {trial number: {column header: cell text}} (``<br>`` read as a space)."""

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = []
            elif tag == "br" and self.cell is not None:
                self.cell.append(" ")

        def handle_endtag(self, tag: str) -> None:
            if tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append(" ".join("".join(self.cell).split()))
                self.cell = None

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell.append(data)

    parser = Cells()
    parser.feed(_section(html, "pareto").split("<table>")[1].split("</table>")[0])
    head, *body = parser.rows
    return {int(row[0]): dict(zip(head, row, strict=True)) for row in body}


def _trial_data(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="trial-data">(.*?)</script>', html, re.S)
    assert block, "the trial details are embedded in the page"
    return json.loads(block.group(1))


@pytest.fixture(scope="module")
def realistic_db(tmp_path_factory) -> Path:
    """A SQLite file holding a finished 40-trial study with MiniLM-like figures (built once)."""
    d = tmp_path_factory.mktemp("realistic")
    fill_realistic(new_study(d))
    return d / "study.db"


@pytest.fixture
def realistic(realistic_db, tmp_path) -> optuna.Study:
    """A private copy of the realistic study (tests may add trials to it)."""
    shutil.copy(realistic_db, tmp_path / "study.db")
    return optuna.load_study(study_name="synthetic", storage=f"sqlite:///{tmp_path / 'study.db'}")



# ------------------------------------------------------------------------ the tiny real study
def test_report_from_database_contains_front_and_baselines(finished, tmp_path):
    study = st.load("rep", st.open_storage(finished, must_exist=True))  # no model needed
    info = collect(study)
    assert len(info.complete) == 6
    assert {t.number for t in info.front} == {t.number for t in study.best_trials}
    html = write_report(info, tmp_path / "r.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html), "plotly.js is inlined: the page needs no network"
    page = html.replace(get_plotlyjs(), "")  # plotly.js itself names map-tile servers no figure here uses
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no resource is fetched from the network"
    front = _front_table(html)
    assert set(front) == {t.number for t in info.front}, "the front table lists exactly the front"
    assert {n: row["baseline"] for n, row in front.items()} == {t.number: t.baseline or "" for t in info.front}
    assert "half_depth" in html and "teacher accuracy" in html
    for plot in PLOTS:
        assert f'id="{plot}"' in html, f"{plot} is drawn from the tiny study's data"


def test_every_profile_is_shown_and_predicted_figures_are_labelled(finished):
    study = st.load("rep", st.open_storage(finished, must_exist=True))
    info = collect(study)
    assert [p["name"] for p in info.profiles] == ["test", "rpi4"]
    for t in info.complete:
        assert set(t.profile_speedups) == {"test", "rpi4"}
        assert t.latency_kind == "measured"
        assert t.profile_latency["rpi4"].kind == "predicted"
    html = render_html(info)
    assert "<th>speedup<br><span class='muted'>(measured)</span></th>" in html
    assert "speedup on rpi4<br><span class='muted'>(predicted)</span></th>" in html
    front = _front_table(html)
    assert set(front) == {t.number for t in info.front}
    for t in info.front:
        assert front[t.number]["speedup on rpi4 (predicted)"] == f"{t.profile_speedups['rpi4']:.2f}×"
        assert front[t.number]["speedup (measured)"].split()[0] == f"{t.speedup:.2f}×"
    summary = _section(html, "summary")
    assert "test (objective): 1 thread(s), batch 1, sequence 16 (random token ids) — measured on cpu in PyTorch" in summary
    assert "rpi4 (reported): 4 thread(s), batch 1, sequence 128 (random token ids) — PREDICTED for Arm Cortex-A72" in summary
    assert "PREDICTED" not in summary.split("rpi4 (reported)")[0], "the measured profile is not called predicted"


def test_measured_latency_is_set_against_the_cost_models_prediction(finished):
    """Where the study has a calibrated cost model, each trial also stores its prediction for the
    measured profile, and the report plots one against the other with both spreads."""
    info = collect(st.load("rep", st.open_storage(finished, must_exist=True)))
    measured = [t.profile_latency["test"] for t in info.complete]
    assert all(f.host_prediction and f.host_prediction > 0 for f in measured)
    assert all(f.speedup_low <= f.speedup <= f.speedup_high for f in measured), "the IQR brackets the median"
    fig = predicted_vs_measured_figure(info)
    points = fig.data[0]
    assert len(points.x) == len(info.complete)
    flat = [v for pair in sorted(zip(points.x, points.y)) for v in pair]
    assert flat == pytest.approx([v for pair in sorted((f.speedup, f.host_prediction) for f in measured) for v in pair])
    assert points.error_x.array is not None and points.error_y.array is not None
    rpi4 = info.complete[0].profile_latency["rpi4"]
    assert rpi4.fit_error is not None and rpi4.speedup_low < rpi4.speedup < rpi4.speedup_high


def test_a_predicted_objective_is_labelled_in_the_table_and_axis(finished):
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
    # plotly writes "×" as is (with orjson installed) or as a JSON escape (without)
    assert any(f"speedup over the teacher on rpi4 ({x}, predicted)" in html for x in ("×", "\\u00d7"))
    assert "rpi4 (objective): 4 thread(s)" in html and "speedup on rpi4" not in _section(html, "pareto")


# ------------------------------------------------------------------------ a realistic study
def test_every_section_shows_the_studys_data(realistic):
    info = collect(realistic)
    html = render_html(info)
    for plot in PLOTS:
        assert f'id="{plot}"' in html
    summary = _section(html, "summary")
    assert "<b>40</b> complete, 1 stopped before the full fidelity, 1 failed, 0 running" in summary
    assert "40 complete trials targeted" in summary
    assert "accuracy 74.00%, latency 29.0 ms" in summary and "size 90.9 MB" in summary
    assert "teacher fine-tuning 3.1 min" in summary
    for budget in BUDGETS:
        best = best_within(info.trials, budget)
        brute = max(
            (t for t in info.complete if t.feasible and t.accuracy_drop <= budget), key=lambda t: t.speedup, default=None
        )
        assert (best and best.number) == (brute and brute.number)
        if best:
            assert f"<tr><td>≤ {budget:g}</td><td>{best.number}" in summary
            assert f"<b>{best.speedup:.2f}×</b>" in summary
    # one heatmap per front member, its cells the plan's layers
    heat = layer_heatmaps(info)
    assert len(heat.data) == len(info.front) >= 3
    for trace, t in zip(heat.data, info.front):
        assert len(trace.x) == LAYERS
        kept_row = trace.text[0]
        assert [c == "dropped" for c in kept_row] == [not layer["keep"] for layer in t.plan["layers"]]
    # baselines labelled, simulated candidates marked
    speed = pareto_figure(info, "speedup", "s", "x")
    labels = next(d for d in speed.data if d.mode == "text")
    assert set(labels.text) == {"teacher", "int8", "prune50", "half_depth"}
    front = next(d for d in speed.data if d.name == "Pareto front")
    assert "diamond-open" in front.marker.symbol and "star" in front.marker.symbol
    assert len(pareto_3d_figure(info).data[1].x) == len(info.front)
    assert {d.name for d in importance_figure(info).data} == {"accuracy", "latency", "size"}
    assert [d.name for d in profile_speedups_figure(info).data] == ["cpu-2t (measured)", "rpi4 (predicted)"]
    assert len(progress_figure(info).data) >= 1
    assert "the reference point: accuracy 0 %" in _section(html, "progress")


def test_hypervolume_is_optunas(realistic):
    """The page's hypervolume history is Optuna's, scaled to the reference box it states."""
    info = collect(realistic)
    h = info.hypervolume
    ref = list(h.reference)
    fig = optuna.visualization.plot_hypervolume_history(realistic, reference_point=ref)
    theirs = dict(zip(fig.data[0].x, fig.data[0].y))
    box = 100.0 * ref[1] * ref[2]
    assert h.trials and all(v2 >= v1 for v1, v2 in zip(h.values, h.values[1:])), "it never shrinks"
    for number, value in zip(h.trials, h.values):
        assert value * box == pytest.approx(theirs[number], rel=1e-9)
    assert hypervolume_figure(info) is not None


def test_user_strings_are_escaped_everywhere(tmp_path):
    evil = "<script>alert(1)</script>"
    study = new_study(tmp_path, name=evil)
    t = realistic_trial(random.Random(0), 0, baseline="<img src=x onerror=alert(2)>")
    t.set_user_attr("plan_summary", "</script><!-- 6/6 layers")
    study.add_trial(t)
    failed = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "<b>boom</b></script>"})
    study.add_trial(failed)
    html = render_html(collect(study))
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<b>boom</b>" not in html and "&lt;b&gt;boom&lt;/b&gt;" in html
    assert "<!-- 6/6" not in html and "</script><!--" not in html
    data = re.search(r'id="trial-data">(.*?)</script>', html, re.S).group(1)
    assert "<" not in data and "\\u003c/script\\u003e\\u003c!--" in data, "embedded JSON cannot close its script"
    assert json.loads(data)["0"]["command"].startswith("autocompress export '<script>alert(1)</script>' --trial 0")


def test_clicking_a_trial_shows_its_plan_and_export_command(realistic):
    info = collect(realistic, "postgresql://me:secret@db.example.org/ac")
    data = _trial_data(render_html(info))
    assert set(data) == {str(t.number) for t in info.trials}
    first = data["5"]
    assert "layers:" in first["plan"] and "keep:" in first["plan"] and "bits:" in first["plan"]
    assert first["command"] == (
        "autocompress export synthetic --trial 5 -o exports/synthetic-trial-5 "
        "--storage 'postgresql://me:***@db.example.org/ac'"
    )
    failed = next(t for t in info.trials if t.state == "FAIL")
    assert "out of memory" in data[str(failed.number)]["facts"]
    assert "only complete trials" in data[str(failed.number)]["command"]


# ------------------------------------------------------------------------ studies with little to show
def test_an_empty_study_renders_with_a_message(tmp_path):
    html = render_html(collect(new_study(tmp_path, config={}, teacher={})))
    assert "This study has no trials yet" in html
    assert "No completed trials yet: nothing to plot" in html
    assert "Plotly.newPlot" not in html
    assert "needs at least 4 complete trials (this study has 0)" in html


def test_a_study_with_only_failed_trials_says_why(tmp_path):
    study = new_study(tmp_path)
    for reason in ("PlanError: keeps no layer", "PlanError: keeps no layer", "LatencyError: out of memory"):
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": reason}))
    html = render_html(collect(study))
    assert "All 3 trials failed" in html and "PlanError: keeps no layer (2×)" in html
    assert "Plotly.newPlot" not in html
    assert html.count("<tr data-trial=") == 3, "the failed trials are listed with their reasons"


def test_a_running_study_is_reported_as_a_snapshot(realistic):
    realistic.ask()
    html = render_html(collect(realistic))
    assert "The study is still running (1 trial in progress)" in html
    assert "data-state='RUNNING'" in html and 'id="plot-speed"' in html


def test_trials_missing_an_objective_record_are_left_out_with_a_note(tmp_path):
    """Complete trials whose latency and size records are missing (e.g. written by an older
    version): the plots fall back to the objective values and say which trials lack figures."""
    study = fill_realistic(new_study(tmp_path), n=8)
    bare = optuna.trial.create_trial(values=[70.0, 0.5, 60.0], user_attrs={})
    bare.datetime_start, bare.datetime_complete = T0, T0
    study.add_trial(bare)
    info = collect(study)
    row = info.trials[-1]
    assert row.speedup == pytest.approx(2.0) and row.size_mb == 60.0 and row.plan is None
    no_size = replace(row, size_mb=None, speedup=None, number=99)
    html = render_html(replace(info, trials=[*info.trials, no_size]))
    assert "1 complete trial(s) lack a latency or size figure (trials 99)" in html
    assert 'id="plot-speed"' in html and 'id="plot-layers"' in html


def test_importance_explains_when_it_cannot_be_computed(tmp_path):
    study = new_study(tmp_path)
    for k in range(3):
        study.add_trial(realistic_trial(random.Random(k), k))
    html = render_html(collect(study))
    assert "needs at least 4 complete trials (this study has 3)" in _section(html, "importance")
    (tmp_path / "one").mkdir()
    one = new_study(tmp_path / "one")
    dist = {"depth": optuna.distributions.IntDistribution(1, 6)}
    for k in range(5):
        one.add_trial(optuna.trial.create_trial(values=[70.0 + k, 1.0 - k / 10, 50.0], params={"depth": k + 1},
                                                distributions=dist))
    html = render_html(collect(one))
    assert "needs at least two parameters that vary between trials (varying: depth)" in html


# ------------------------------------------------------------------------ the trial table as data
def test_trial_table_as_csv_and_parquet(realistic, tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    info = collect(realistic)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "report", "synthetic", "--storage", url, "--format", "csv")
    assert code == 0, err
    csv = pd.read_csv(tmp_path / "studies" / "synthetic.csv")
    assert list(csv.columns) == list(trials_frame(info).columns)
    assert len(csv) == len(info.trials) == 42 and list(csv["trial"]) == [t.number for t in info.trials]
    for i in range(LAYERS):
        assert {f"L{i}_keep", f"L{i}_heads", f"L{i}_ffn", f"L{i}_bits"} <= set(csv.columns)
    assert {"speedup_cpu-2t", "speedup_rpi4", "fail_reason", "fidelity", "state", "on_front"} <= set(csv.columns)
    row = csv.set_index("trial").loc[5]
    t = info.trials[5]
    assert row["accuracy"] == pytest.approx(t.accuracy) and row["speedup"] == pytest.approx(t.speedup)
    assert [row[f"L{i}_heads"] for i in range(LAYERS)] == [layer["heads"] for layer in t.plan["layers"]]
    assert csv.set_index("trial").loc[40, "fail_reason"] == "LatencyError: out of memory"
    assert int(csv["on_front"].sum()) == len(info.front)

    code, out, err = run_cli(capsys, "report", "synthetic", "--storage", url, "--format", "parquet", "-o", "t.parquet")
    assert code == 0, err
    parquet = pd.read_parquet(tmp_path / "t.parquet")
    expected = trials_frame(info)
    assert list(parquet.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(parquet.reset_index(drop=True), expected, check_dtype=False)

    code, _, err = run_cli(capsys, "report", "synthetic", "--storage", url, "--format", "xlsx")
    assert code == 2 and "unknown report format 'xlsx'; available: html, csv, parquet" in err


def test_a_postgresql_study_reports_like_its_sqlite_copy(realistic, realistic_db, pg_url):
    """Anyone who reaches the database can write the report: PostgreSQL gives what SQLite gives."""
    optuna.copy_study(from_study_name="synthetic", from_storage=f"sqlite:///{realistic_db}", to_storage=pg_url)
    shared = st.load("synthetic", st.open_storage(pg_url, must_exist=True))
    here, there = collect(realistic), collect(shared, pg_url)
    pd.testing.assert_frame_equal(trials_frame(there), trials_frame(here))
    assert there.hypervolume == here.hypervolume and there.storage == pg_url
    assert 'id="plot-speed"' in render_html(there)


def test_a_stopped_candidates_figures_are_marked_subset_and_predicted(tmp_path):
    from autocompress.tasks.evaluate import Metric
    from autocompress.schema.plan import CompressionPlan
    from autocompress.store.facts import LatencyFigures, SizeFigures
    from autocompress.store.record import TrialRecord
    from autocompress.report.tables import trials_table

    study = new_study(tmp_path)
    rng = random.Random(0)
    study.add_trial(realistic_trial(rng, 0))
    plan = CompressionPlan.uniform(LAYERS, keep=[0, 2])
    screen = LatencyFigures(ratio=0.4, speedup=2.5, kind="predicted", profile="cpu-2t", candidate_ms=3.0, baseline_ms=7.5)
    rec = TrialRecord(plan=plan, plan_summary=plan.describe(), fidelity="short",
                      cheap_accuracy=Metric(name="accuracy", value=0.4, ci_low=0.35, ci_high=0.45, n=500),
                      short_accuracy=Metric(name="accuracy", value=0.61, ci_low=0.57, ci_high=0.65, n=500),
                      screen=screen, latency=screen, speedup=2.5, size=SizeFigures(megabytes=50.0),
                      prune_reason="stopped after the short distillation: …")
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=rec.to_attrs(), params={}, distributions={}))
    html = trials_table(collect(study))
    row = re.search(r"<tr data-trial='1'.*?</tr>", html).group(0)
    assert "<i>61.00 subset</i>" in row and "<i>2.50× predicted</i>" in row and "short · predicted" in row
    first = re.search(r"<tr data-trial='0'.*?</tr>", html).group(0)
    assert "subset" not in first and "full · measured" in first


# ------------------------------------------------------------------------ a decoder (perplexity) study


@pytest.fixture
def decoder(tmp_path) -> optuna.Study:
    return decoder_study(tmp_path)


def _stored_metric(study: optuna.Study, number: int) -> dict:
    return study.trials[number].user_attrs["metric"]


def test_a_perplexity_study_speaks_of_perplexity_and_its_budgets(decoder):
    info = collect(decoder)
    html = render_html(info)
    summary = unescape(_section(html, "summary"))
    assert "objective: perplexity" in summary
    assert f"teacher (baseline)</dt><dd>perplexity {TEACHER_PPL:.1f}, latency" in summary
    assert "then 64 new tokens generated one at a time with the key/value cache" in summary
    # best within budget: perplexity at most 5, 10 (the study's own) and 20 % above the teacher's
    assert "<th>perplexity vs the teacher's</th>" in summary and "<th>its perplexity</th>" in summary
    for budget, limit in (("≤ +5 %", 1.05), ("≤ +10 %", 1.10), ("≤ +20 %", 1.20)):
        ok = [t for t in info.complete if t.feasible and t.natural <= limit * TEACHER_PPL * (1 + 1e-9)]
        best = max(ok, key=lambda t: t.speedup)
        assert f"<tr><td>{budget}</td><td>{best.number}" in summary
        assert f"{best.natural:.1f} (+{100 * (best.natural / TEACHER_PPL - 1):.1f} %)" in summary
    assert "this study's own budget is perplexity ≤ +10 %" in summary
    assert "accuracy" not in summary and "drop (pt)" not in summary


def test_a_perplexity_studys_front_shows_perplexity_prefill_decode_and_kv_cache(decoder):
    info = collect(decoder)
    front = _front_table(render_html(info))
    assert set(front) == {t.number for t in info.front} and len(front) >= 2
    for n, row in front.items():
        stored = _stored_metric(decoder, n)
        latency = decoder.trials[n].user_attrs["latency"]
        assert row["perplexity"] == (
            f"{stored['natural']:.1f} [{stored['natural_low']:.1f}, {stored['natural_high']:.1f}]")
        assert row["vs the teacher"] == f"{100 * (stored['natural'] / TEACHER_PPL - 1):+.1f} %"
        assert row["prefill speedup (time to first token)"] == f"{1 / latency['ttft_ratio']:.2f}×"
        assert row["decode speedup (per new token)"] == f"{1 / latency['tpot_ratio']:.2f}×"
        assert row[f"KV cache MB (teacher {TEACHER_KV_BYTES / 1e6:.2f})"] == f"{latency['kv_cache_bytes'] / 1e6:.2f}"
    int4 = front[9]  # weight-only int4 with half the key/value groups: both real, both said
    assert [int4[f"L{i}"] for i in range(6)] == ["kv50% w4"] * 6
    html = render_html(info)
    assert "w8/w4 = weight-only int8/int4 (real kernels" in html and "kv = key/value groups kept" in html
    assert "prefill = the teacher's time to the first token over the candidate's" in unescape(html)
    details = _trial_data(html)[str(info.front[0].number)]["facts"]
    assert "prefill (time to first token)" in details and "KV cache" in details and "vs the teacher's 21.7" in details


def test_a_perplexity_study_plots_perplexity_lower_is_better(decoder):
    info = collect(decoder)
    speed = pareto_figure(info, "speedup", "s", "x")
    assert "perplexity" in speed.layout.yaxis.title.text and "lower is better" in speed.layout.yaxis.title.text
    front = next(d for d in speed.data if d.name == "Pareto front")
    assert sorted(front.y) == pytest.approx(sorted(_stored_metric(decoder, t.number)["natural"] for t in info.front))
    teacher = next(d for d in speed.data if d.name == "teacher perplexity")
    assert set(teacher.y) == {TEACHER_PPL}
    reversed_axis = speed.layout.yaxis.autorange == "reversed" or speed.layout.yaxis.range[0] > speed.layout.yaxis.range[1]
    assert reversed_axis, "lower perplexity is up, as higher accuracy is"
    assert "perplexity ≤ +10 %" in {d.name for d in progress_figure(info).data}
    assert pareto_3d_figure(info).layout.scene.zaxis.title.text == "perplexity"
    html = render_html(info)
    assert "Perplexity vs end-to-end speed" in html and "Perplexity vs size" in html
    progress = unescape(_section(html, "progress"))
    assert "the reference point: relative perplexity 0 %" in progress
    assert "relative perplexity, is 100 × the teacher's perplexity over the candidate's" in progress


def test_a_perplexity_studys_table_has_its_own_unit_and_the_generation_figures(decoder):
    info = collect(decoder)
    frame = trials_frame(info).set_index("trial")
    first = _stored_metric(decoder, 4)
    assert frame.loc[4, "perplexity"] == pytest.approx(first["natural"])
    assert frame.loc[4, "teacher_perplexity"] == pytest.approx(TEACHER_PPL)
    latency = decoder.trials[4].user_attrs["latency"]
    assert frame.loc[4, "prefill_speedup"] == pytest.approx(1 / latency["ttft_ratio"])
    assert frame.loc[4, "kv_cache_bytes"] == latency["kv_cache_bytes"]
    table = _section(render_html(info), "trials")
    row = re.search(r"<tr data-trial='4'.*?</tr>", table).group(0)
    assert f">{first['natural']:.1f}</td>" in row and "%" in row


def test_a_classification_report_has_no_decoder_figures(realistic):
    html = render_html(collect(realistic))
    for word in ("perplexity", "prefill", "decode speedup", "KV cache"):
        assert word not in html.replace(get_plotlyjs(), "")
    assert {"prefill_speedup", "kv_cache_bytes", "perplexity"}.isdisjoint(trials_frame(collect(realistic)).columns)


def test_a_refined_study_shows_its_front_before_and_after_refinement(refined_study):
    run, request, _ = refined_study
    info = collect(run.study)
    assert [t.number for t in info.refinements] == sorted(t.number for t in run.study.trials
                                                          if "refines" in t.user_attrs)
    assert all(t.refines is None for t in info.unrefined)
    page = render_html(info)
    assert "<h3>Refinement</h3>" in page and "before refinement → after" in page
    first = info.refinements[0]
    assert re.search(rf"<tr><td>{first.number}</td><td>{first.refines}</td>", page)
    speed = pareto_figure(info, "speedup", "t", "x")
    assert "trade-off before refinement" in [trace.name for trace in speed.data]
    frame = trials_frame(info)
    assert set(frame.loc[frame["trial"] == first.number, "refines"]) == {first.refines}


def test_a_study_without_refinements_shows_no_refinement_section(finished):
    info = collect(optuna.load_study(study_name="rep", storage=finished))
    assert not info.refinements and "<h3>Refinement</h3>" not in render_html(info)
    assert "trade-off before refinement" not in [t.name for t in pareto_figure(info, "speedup", "t", "x").data]
