"""One self-contained, offline HTML file: plotly's JavaScript inlined, every string escaped."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from autocompress.report.collect import ReportInfo, TrialRow
from autocompress.report.figures import pareto_figure

__all__ = ["render_html", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.6rem} h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;font-size:.85rem;width:100%} th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:right}
th{background:#f4f4f4} td.l{text-align:left} .muted{color:#777} .warn{color:#a15c00}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem} .cell-drop{background:#eee;color:#999}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem} dt{font-weight:600}
code{background:#f4f4f4;padding:0 .2rem}
"""


def _fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def _layer_cell(layer: dict[str, Any]) -> str:
    if not layer.get("keep", True):
        return '<td class="cell-drop">dropped</td>'
    bits = layer.get("bits", 32)
    b = "" if bits == 32 else (" int8" if bits == 8 else f" {bits}b*")
    return f'<td class="l">h {layer.get("heads", 1):.0%} · f {layer.get("ffn", 1):.0%}{b}</td>'


def _front_table(info: ReportInfo) -> str:
    front = info.front
    if not front:
        return '<p class="muted">No completed trial yet, so there is no front.</p>'
    n_layers = max(len((t.plan or {}).get("layers", [])) for t in front)
    head = "".join(f"<th>L{i}</th>" for i in range(n_layers))
    others = info.profiles[1:]
    other_head = "".join(
        f"<th title='{escape(p.get('description', ''))}'>speedup on {escape(p['name'])}"
        f"<br><span class='muted'>({escape(p.get('kind', 'measured'))})</span></th>"
        for p in others
    )
    rows = []
    for t in front:
        layers = (t.plan or {}).get("layers", [])
        cells = "".join(_layer_cell(layer) for layer in layers)
        other_cells = "".join(f"<td>{_fmt(t.profile_speedups.get(p['name']), '.2f', '×')}</td>" for p in others)
        ci = f" <span class='muted'>[{t.accuracy_ci[0]:.1f}, {t.accuracy_ci[1]:.1f}]</span>" if t.accuracy_ci else ""
        label = escape(t.baseline) if t.baseline else ""
        noisy = ' <span class="warn" title="latency spread stayed high">noisy</span>' if t.noisy else ""
        sim = ' <span class="warn" title="low-bit layers are simulated">sim</span>' if t.simulated else ""
        rows.append(
            f"<tr><td>{t.number}</td><td class='l'>{label}</td><td>{_fmt(t.accuracy)}{ci}</td>"
            f"<td>{_fmt(t.accuracy_drop, '+.2f')}</td><td>{_fmt(t.speedup, '.2f', '×')}{noisy}{sim}</td>"
            f"<td>{_fmt(t.latency_ms, '.1f')}</td>{other_cells}<td>{_fmt(t.size_mb, '.1f')}</td>{cells}</tr>"
        )
    kind = front[0].latency_kind
    return (
        "<table><thead><tr><th>trial</th><th>baseline</th><th>accuracy %</th><th>drop (pt)</th>"
        f"<th>speedup<br><span class='muted'>({escape(kind)})</span></th><th>latency ms</th>{other_head}"
        f"<th>size MB</th>{head}</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table><p class='muted'>h = attention heads kept, f = FFN neurons kept; "
        "int8 = real int8 kernels; 4b*/2b* = simulated bit-widths (accuracy and size only). "
        "Measured = timed on this host interleaved with the teacher; predicted = cost model calibrated on this "
        "host, scaled to the profile's device figures (never a measurement).</p>"
    )


def _all_trials_table(info: ReportInfo) -> str:
    rows = []
    for t in sorted(info.trials, key=lambda t: t.number):
        reason = escape(t.fail_reason or "")
        rows.append(
            f"<tr><td>{t.number}</td><td class='l'>{escape(t.state)}</td><td class='l'>{escape(t.baseline or '')}</td>"
            f"<td>{_fmt(t.accuracy)}</td><td>{_fmt(t.speedup, '.2f', '×')}</td><td>{_fmt(t.size_mb, '.1f')}</td>"
            f"<td class='l'>{escape(t.plan_summary)}</td><td class='l'>{escape(t.fidelity or '')}</td><td class='l'>{reason}</td>"
            f"<td>{_fmt(t.duration_s, '.0f')}</td></tr>"
        )
    return (
        "<table><thead><tr><th>trial</th><th>state</th><th>baseline</th><th>accuracy %</th><th>speedup</th>"
        "<th>size MB</th><th>plan</th><th>fidelity</th><th>failure / prune reason</th><th>seconds</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _describe_profile(p: dict[str, Any], objective: bool) -> str:
    role = "objective" if objective else "reported"
    shapes = f"batch {p.get('batch_size', '?')}, sequence {p.get('seq_len', '?')}"
    if p.get("kind") == "predicted":
        spec = p.get("spec") or {}
        how = f"PREDICTED for {spec.get('cpu', '?')} from a cost model calibrated on the measuring host"
    else:
        how = f"measured on {p.get('device', 'cpu')}, interleaved with the teacher"
    return f"{p.get('name', '?')} ({role}): {p.get('threads', '?')} thread(s), {shapes} — {how}"


def _summary(info: ReportInfo) -> str:
    cfg = info.config
    model = (cfg.get("model") or {}).get("source", "?")
    task = cfg.get("task") or {}
    teacher = info.teacher
    acc = (teacher.get("accuracy") or {}).get("value")
    size = (teacher.get("size") or {}).get("megabytes")
    complete = info.complete
    base_ms = [t.baseline_ms for t in complete if t.baseline_ms]
    base_ms.sort()
    teacher_ms = base_ms[len(base_ms) // 2] if base_ms else None
    items = {
        "model": escape(str(model)),
        "task": escape(f"{task.get('source', '?')} — train {task.get('train_size', '?')}, eval {task.get('eval_size', '?')}, max {task.get('max_length', '?')} tokens"),
        "device profiles": "<br>".join(escape(_describe_profile(p, i == 0)) for i, p in enumerate(info.profiles)),
        "hosts": escape(", ".join(sorted({t.host for t in complete if t.host})) or "?"),
        "trials": f"{len(complete)} complete (full fidelity), {info.count('PRUNED')} stopped at the cheap fidelity, "
        f"{info.count('FAIL')} failed, {info.count('RUNNING')} running, "
        f"{len(info.front)} on the front",
        "teacher": f"accuracy {_fmt(None if acc is None else 100 * acc)}%, latency {_fmt(teacher_ms, '.1f')} ms, size {_fmt(size, '.1f')} MB",
    }
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items.items()) + "</dl>"


def render_html(info: ReportInfo) -> str:
    """The report as one HTML string (plotly.js inlined: no network access needed to view it)."""
    from plotly.offline import get_plotlyjs

    title = f"autocompress report — {info.study_name}"
    if info.complete:
        figs = [
            pareto_figure(
                info, "speedup", "Accuracy vs speed",
                f"speedup over the teacher on {(info.profiles or [{}])[0].get('name', '?')} (×, {info.complete[0].latency_kind})",
            ),
            pareto_figure(info, "size_mb", "Accuracy vs size", "model size (MB; simulated bits counted at their width)"),
        ]
        plots = "".join(
            f'<div class="plot">{fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{i}")}</div>'
            for i, fig in enumerate(figs)
        )
        plots = f'<div class="grid">{plots}</div>'
    else:
        plots = '<p class="muted">No completed trials yet: nothing to plot. Run or resume the study, then write the report again.</p>'
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{escape(title)}</h1>
<p class="muted">written {stamp} from the study database</p>
<h2>Summary</h2>{_summary(info)}
<h2>Pareto front</h2>{plots}
<h2>Front members and their per-layer plans</h2>{_front_table(info)}
<h2>All trials</h2>{_all_trials_table(info)}
</body></html>
"""


def write_report(info: ReportInfo, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(info), encoding="utf-8")
    return path
