"""One self-contained, offline HTML file: plotly's JavaScript inlined, every string escaped.

Sections: summary (with the best candidates at common accuracy budgets), the Pareto plots and the
front, where each front member's compression went, search progress, parameter importance,
latency per profile, and every trial. A section with nothing to show says why instead.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from autocompress.report.analysis import best_within
from autocompress.report.charts import (
    hypervolume_figure,
    importance_figure,
    predicted_vs_measured_figure,
    profile_speedups_figure,
    progress_figure,
)
from autocompress.report.collect import ReportInfo, TrialRow
from autocompress.report.figures import layer_heatmaps, pareto_3d_figure, pareto_figure
from autocompress.report.tables import front_table, refinement_table, trials_table

__all__ = ["render_html", "write_report"]

#: Above this size the CLI says so (plotly's JavaScript alone is about 4.7 MB).
LARGE_REPORT_BYTES = 10 * 2**20

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1280px;color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
h3{font-size:1.05rem;margin:.4rem 0} h4{margin:.4rem 0 .2rem;font-size:.85rem;color:#555}
nav{font-size:.9rem;margin:.6rem 0 1rem} nav a{margin-right:.9rem;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;font-size:.85rem;width:100%} th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:right;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0;white-space:normal} td.l{text-align:left;white-space:normal} .muted{color:#777} .warn{color:#a15c00}
.note{background:#fff7e6;border-left:4px solid #e0a030;padding:.5rem .8rem;margin:.8rem 0}
.empty{background:#f6f6f6;border-left:4px solid #bbb;padding:.5rem .8rem;margin:.5rem 0;color:#555;align-self:start}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem} @media (max-width:900px){.grid{grid-template-columns:1fr}}
.cell-drop{background:#eee;color:#999} .scroll{overflow-x:auto}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem} dt{font-weight:600}
code,pre{background:#f4f4f4;padding:0 .2rem;font-size:.82rem} pre{padding:.5rem;white-space:pre-wrap;margin:0}
.controls{margin:.5rem 0;display:flex;gap:.6rem;align-items:center;flex-wrap:wrap}
table.trials th{cursor:pointer;user-select:none} table.trials th[data-dir=asc]::after{content:" ▲"}
table.trials th[data-dir=desc]::after{content:" ▼"} table.trials tbody tr:not(.detail):hover{background:#f3f7fc;cursor:pointer}
table.trials td.reason{min-width:10rem;font-size:.78rem} table.trials td.ci,.flag{font-size:.75rem}
td.layer{text-align:left;font-size:.75rem;white-space:normal;min-width:3.2rem} tr.detail td{text-align:left;background:#fbfbfb}
.detail-grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem} pre.command{background:#eef4ee}
"""


def _fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def _plot(fig: go.Figure | None, div_id: str, why_not: str) -> str:
    if fig is None:
        return f'<p class="empty">{why_not}</p>'
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})
    return f'<div class="plot">{body}</div>'


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _describe_profile(p: dict[str, Any], objective: bool) -> str:
    role = "objective" if objective else "reported"
    if p.get("inputs") == "task":
        shapes = f"the task's own eval texts at batch 1 and their real lengths ({p.get('task_samples', '?')} per round)"
    else:
        shapes = f"batch {p.get('batch_size', '?')}, sequence {p.get('seq_len', '?')} (random token ids)"
    if p.get("new_tokens"):
        shapes += f", then {p['new_tokens']} new tokens generated one at a time with the key/value cache"
    if p.get("kind") == "predicted":
        spec = p.get("spec") or {}
        how = f"PREDICTED for {spec.get('cpu', '?')} from a cost model calibrated on the measuring host"
    else:
        runtime = "in ONNX Runtime, each candidate exported to ONNX" if p.get("backend") == "onnxruntime" else "in PyTorch"
        how = f"measured on {p.get('device', 'cpu')} {runtime}, interleaved with the teacher"
    return f"{p.get('name', '?')} ({role}): {p.get('threads', '?')} thread(s), {shapes} — {how}"


def _status(info: ReportInfo) -> str:
    """A banner for a study that is running, empty, or has nothing complete."""
    notes = []
    running = info.count("RUNNING")
    if running:
        notes.append(
            f"The study is still running ({running} trial{'s' if running > 1 else ''} in progress): this report is "
            "a snapshot. Write it again when the study has finished."
        )
    if not info.trials:
        notes.append("This study has no trials yet. Run or resume it, then write the report again.")
    elif not info.complete:
        failed = [t for t in info.trials if t.state == "FAIL"]
        if failed and len(failed) == len(info.trials):
            reasons = Counter(t.fail_reason or "no reason recorded" for t in failed).most_common(3)
            listed = "; ".join(f"{escape(r)} ({n}×)" for r, n in reasons)
            which = "The only trial" if len(failed) == 1 else f"All {len(failed)} trials"
            notes.append(f"{which} failed, so there is nothing to plot. Most common reasons: {listed}.")
        else:
            notes.append("No trial has completed yet, so there is nothing to plot; the table below lists the trials so far.")
    missing = [t.number for t in info.complete if t.speedup is None or t.size_mb is None]
    if missing:
        listed = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
        notes.append(
            f"{len(missing)} complete trial(s) lack a latency or size figure (trials {listed}); "
            "they are left out of the plots that need it."
        )
    return "".join(f'<p class="note">{n}</p>' for n in notes)


def _budget_table(info: ReportInfo) -> str:
    """The fastest and the smallest candidate within each budget (accuracy drop; perplexity above
    the teacher's; ...), in the metric's own terms."""
    if not info.complete:
        return ""
    q = info.quality

    def who(t: TrialRow) -> str:
        return f"{t.number}" + (f" <span class='muted'>({escape(t.baseline)})</span>" if t.baseline else "")

    def its(t: TrialRow) -> str:  # the fastest trial's quality: its drop (points) or its own figure
        if not q.own_unit:
            return _fmt(t.accuracy_drop, '+.2f')
        return escape(f"{q.number(q.natural(t.accuracy, t.natural))} ({q.versus(t.accuracy, t.accuracy_drop)})")

    rows = []
    for budget in info.budgets:
        fast = best_within(info.trials, budget, "speedup")
        small = best_within(info.trials, budget, "size_mb")
        cell = escape(q.budget_cell(budget))
        if fast is None:
            rows.append(f"<tr><td>{cell}</td><td class='l muted' colspan='6'>no trial within this budget</td></tr>")
            continue
        rows.append(
            f"<tr><td>{cell}</td><td>{who(fast)}</td><td><b>{_fmt(fast.speedup, '.2f', '×')}</b></td>"
            f"<td>{its(fast)}</td><td>{_fmt(fast.size_mb, '.1f')}</td>"
            f"<td>{who(small) if small else '—'}</td><td><b>{_fmt(small.size_mb if small else None, '.1f')}</b>"
            f" <span class='muted'>({_fmt(small.speedup if small else None, '.2f', '×')})</span></td></tr>"
        )
    kind = info.complete[0].latency_kind
    own = q.scale.max_drop
    if q.own_unit:
        teacher = f" ({escape(q.teacher)})" if q.teacher else ""
        note = (f"{escape(q.label.capitalize())} is on the eval split, against the teacher's on the same examples"
                f"{teacher}" + (f"; this study's own budget is {escape(q.budget_words(own))}" if own is not None else "")
                + ". Compare it with each trial's 95 % interval: differences inside it are sampling noise, not claims.")
    else:
        note = ("Drops are below the teacher on the eval split; compare them with each trial's confidence "
                "interval: differences inside it are sampling noise, not claims.")
    return (
        f"<h3>Best candidates at common budgets</h3><table style='width:auto'><thead><tr><th>{escape(q.budget_column)}</th>"
        f"<th>fastest: trial</th><th>speedup ({escape(kind)})</th><th>{'its ' + escape(q.label) if q.own_unit else 'its drop'}</th>"
        "<th>its size MB</th><th>smallest: trial</th><th>size MB (speedup)</th></tr></thead><tbody>" + "".join(rows)
        + f"</tbody></table><p class='muted'>{note}</p>"
    )


def _summary(info: ReportInfo) -> str:
    cfg = info.config
    model = (cfg.get("model") or {}).get("source", "?")
    task = cfg.get("task") or {}
    complete = info.complete
    noisy = sum(t.noisy for t in complete)
    starts = [t.started for t in info.trials if t.started]
    ends = [t.completed for t in info.trials if t.completed]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    compute = sum(t.duration_s or 0.0 for t in info.trials)
    fine_tune = info.teacher.fine_tune_seconds
    budget = f"{info.target_trials} complete trials targeted; " if info.target_trials else ""
    q = info.quality
    quality = q.teacher if q.teacher else f"{info.metric} {_fmt(info.teacher_accuracy)}%"
    tokens = (info.profiles or [{}])[0].get("new_tokens")
    generation = f"; end to end: the prompt, then {tokens} new tokens" if tokens else ""
    teacher_kv = next((t.teacher_kv_cache_bytes for t in complete if t.teacher_kv_cache_bytes), None)
    kv = f", key/value cache {teacher_kv / 1e6:.2f} MB" if teacher_kv else ""
    items = {
        "model": escape(str(model)),
        "task": escape(
            f"{task.get('source', '?')} — train {task.get('train_size', '?')}, eval {task.get('eval_size', '?')}, "
            f"max {task.get('max_length', '?')} tokens; objective: {info.metric}"
        ),
        "device profiles": "<br>".join(escape(_describe_profile(p, i == 0)) for i, p in enumerate(info.profiles)) or "—",
        "hosts": escape(", ".join(sorted({t.host for t in complete if t.host})) or "—"),
        "trials": f"{budget}<b>{len(complete)}</b> complete, {info.count('PRUNED')} stopped before the full fidelity, "
        f"{info.count('FAIL')} failed, {info.count('RUNNING')} running; {noisy} with a noisy latency; "
        f"{len(info.front)} on the Pareto front",
        "time spent": f"{_duration(wall)} wall clock from the first trial's start to the last one's end; "
        f"{_duration(compute)} in trials"
        + (f"; teacher fine-tuning {_duration(fine_tune)}" if isinstance(fine_tune, (int, float)) else ""),
        "teacher (baseline)": f"{escape(quality)}, latency "
        f"{_fmt(info.teacher_ms, '.1f')} ms (median of its interleaved rounds{generation}), "
        f"size {_fmt(info.teacher_size_mb, '.1f')} MB{kv}",
    }
    if info.storage:
        items["storage"] = f"<code>{escape(info.storage)}</code>"
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items.items()) + "</dl>" + _budget_table(info)


def _pareto(info: ReportInfo) -> str:
    if not info.complete:
        return '<p class="empty">No completed trials yet: nothing to plot. Run or resume the study, then write the report again.</p>'
    kind = next((t.latency_kind for t in info.complete), "measured")
    first = (info.profiles or [{}])[0]
    profile = first.get("name", "?")
    q = info.quality
    what = q.label.capitalize() if q.own_unit else "Accuracy"
    tokens = first.get("new_tokens")
    speed_title = f"{what} vs end-to-end speed" if tokens else f"{what} vs speed"
    workload = f"; the prompt, then {tokens} new tokens" if tokens else ""
    speed = pareto_figure(
        info, "speedup", speed_title, f"speedup over the teacher on {escape(str(profile))} (×, {kind}{workload})"
    )
    size = pareto_figure(info, "size_mb", f"{what} vs size", "model size (MB: model.safetensors as export writes it)")
    lower = (f" {escape(q.label.capitalize())} is plotted itself, lower is better: its axis is reversed, so that up "
             "is better in every view." if q.own_unit else "")
    return (
        f'<div class="grid">{_plot(speed, "plot-speed", "")}{_plot(size, "plot-size", "")}</div>'
        "<p class='muted'>Red: the Pareto front over all three objectives (a red point that looks beaten in one view "
        f"wins on the third objective); grey: dominated; faint: over the {escape(q.word)} budget. Stars are the uniform "
        "baselines, open diamonds candidates whose 4/2-bit layers are simulated (their speed is not measured). "
        f"Error bars: 95 % bootstrap interval of the {escape(q.word)}.{lower}</p>"
        + _plot(pareto_3d_figure(info), "plot-3d", "")
        + "<h3>Front members</h3>" + front_table(info)
        + refinement_table(info)
    )


def _layers(info: ReportInfo) -> str:
    fig = layer_heatmaps(info)
    plans = [t.plan or {} for t in info.front]
    kv = "its key/value groups, " if any("kv" in layer for plan in plans for layer in plan.get("layers", [])) else ""
    weight_only = "; w8/w4 = weight-only int8/int4, real" if any(
        plan.get("weight_scheme") == "weight_only" for plan in plans) else ""
    note = (
        "<p class='muted'>One map per front member, fastest first. Columns are the base model's layers; rows say how "
        f"much the plan keeps of each: the layer itself, its attention heads, {kv}its FFN neurons and its weight bits "
        f"(32 = float; 8 = int8; 4/2 = simulated{weight_only}). Dark cells are where the compression went.</p>"
    )
    return _plot(fig, "plot-layers", "No front member carries a plan yet.") + (note if fig else "")


def _progress(info: ReportInfo) -> str:
    h = info.hypervolume
    hv = _plot(hypervolume_figure(info), "plot-hv", "No feasible complete trial yet: no hypervolume.")
    q = info.quality
    prog = _plot(progress_figure(info), "plot-progress", f"No complete trial within the {escape(q.word)} budgets yet.")
    ref = ""
    if h is not None:
        acc, lat, size = h.reference
        first = escape(q.objective if q.own_unit else info.metric)
        ref = (
            f"<p class='muted'>Hypervolume (Optuna's) of the feasible trials, as a share of the box between a perfect "
            f"model (100 % {first}, zero latency, zero size) and the reference point: {first} "
            f"{acc:g} %, latency {lat:.2f}× the teacher's, size {size:.2f} MB (10 % past the slowest and the largest "
            "trial, and never below the teacher). It only grows; flat stretches are trials that did not improve the "
            "front. The reference point is derived from this study, so compare hypervolumes within one report only."
            + (f" The first objective, {first}, is {escape(q.objective_meaning)}." if q.objective_meaning else "")
            + "</p>"
        )
    return f'<div class="grid">{hv}{prog}</div>{ref}'


def _importance(info: ReportInfo) -> str:
    fig = importance_figure(info)
    notes = "".join(
        f"<li><b>{escape(imp.objective)}</b>: {escape(imp.note)}</li>" for imp in info.importances if imp.note
    )
    text = (
        "<p class='muted'>How much each search parameter decides whether a trial is among the best on each objective "
        "(Optuna's PED-ANOVA evaluator on the complete trials; fractions summing to 1 per objective). With few trials "
        "these are rough.</p>"
    )
    if fig is None:
        return f'<p class="empty">Parameter importance is not available: </p><ul>{notes}</ul>' if notes else (
            '<p class="empty">No complete trials: no parameter importance.</p>'
        )
    return _plot(fig, "plot-importance", "") + text + (f"<ul class='muted'>{notes}</ul>" if notes else "")


def _latency(info: ReportInfo) -> str:
    bars = profile_speedups_figure(info)
    pairs = predicted_vs_measured_figure(info)
    drawn = [
        _plot(bars, "plot-profiles", "") if bars else "",
        _plot(pairs, "plot-pred", "") if pairs else "",
    ]
    missing = []
    if bars is None:
        missing.append("No front member has per-profile latency figures.")
    if pairs is None:
        missing.append(
            "No trial has both a measurement and a cost-model prediction for the same profile: trials store the "
            "prediction for a measured CPU profile only when the study also predicts a device (so a calibrated cost "
            "model exists) and the profile runs at the calibration's thread count."
        )
    plots = "".join(drawn)
    if bars is not None and pairs is not None:
        plots = f'<div class="grid">{plots}</div>'
    return (
        plots
        + "".join(f'<p class="empty">{m}</p>' for m in missing)
        + "<p class='muted'>Measured figures are timed on the study's host, interleaved with the teacher; their error "
        "bars are the interquartile range of the per-round ratio. Predicted figures come from the cost model fitted on "
        "this host's measurements and scaled to the device's figures; their error bars are the model's median fit "
        "error on this host (the error on the device itself is unknown). Hatched bars are predictions.</p>"
    )


_SECTIONS = (
    ("summary", "Summary", _summary),
    ("pareto", "Pareto front", _pareto),
    ("layers", "Where the compression went", _layers),
    ("progress", "Search progress", _progress),
    ("importance", "Parameter importance", _importance),
    ("latency", "Latency per profile", _latency),
    ("trials", "All trials", trials_table),
)


def render_html(info: ReportInfo) -> str:
    """The report as one HTML string (plotly.js inlined: no network access needed to view it)."""
    from plotly.offline import get_plotlyjs

    title = f"autocompress report — {info.study_name}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{key}">{label}</a>' for key, label, _ in _SECTIONS)
    body = []
    for key, label, build in _SECTIONS:
        body.append(f'<section id="{key}"><h2>{label}</h2>{build(info)}</section>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{escape(title)}</h1>
<p class="muted">written {stamp} from the study database</p>
<nav>{nav}</nav>
{_status(info)}
{"".join(body)}
</body></html>
"""


def write_report(info: ReportInfo, path: Path) -> Path:
    """Write :func:`render_html` to ``path`` (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(info), encoding="utf-8")
    return path
