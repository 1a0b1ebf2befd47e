"""Plotly figures drawn from :class:`ReportInfo` (plain data in, figures out)."""

from __future__ import annotations

import plotly.graph_objects as go

from autocompress.report.collect import ReportInfo, TrialRow

__all__ = ["pareto_figure"]


def _hover(t: TrialRow) -> str:
    from html import escape

    parts = [
        f"trial {t.number}" + (f" — baseline <b>{escape(t.baseline)}</b>" if t.baseline else ""),
        escape(t.plan_summary),
        f"accuracy {t.accuracy:.2f}%" + (f" [{t.accuracy_ci[0]:.1f}, {t.accuracy_ci[1]:.1f}]" if t.accuracy_ci else ""),
        f"speedup {t.speedup:.2f}× ({t.latency_ms:.1f} ms)" if t.speedup and t.latency_ms else "",
        f"size {t.size_mb:.1f} MB" if t.size_mb is not None else "",
    ]
    if t.simulated:
        parts.append("<i>low-bit layers simulated: speed not measured for them</i>")
    return "<br>".join(p for p in parts if p)


def pareto_figure(info: ReportInfo, x: str, title: str, x_title: str) -> go.Figure:
    """Accuracy against ``x`` ('speedup' or 'size_mb'): front highlighted, others faded, baselines labelled."""
    fig = go.Figure()
    rows = info.complete
    groups = (
        ("dominated", [t for t in rows if not t.on_front], dict(color="rgba(120,120,120,0.35)", size=8)),
        ("Pareto front", [t for t in rows if t.on_front], dict(color="#d62728", size=11, line=dict(width=1, color="black"))),
    )
    for name, members, marker in groups:
        if not members:
            continue
        members = sorted(members, key=lambda t: getattr(t, x) or 0)
        symbols = ["diamond-open" if t.simulated else ("star" if t.baseline else "circle") for t in members]
        fig.add_trace(
            go.Scatter(
                x=[getattr(t, x) for t in members],
                y=[t.accuracy for t in members],
                mode="markers+lines" if name == "Pareto front" and x == "speedup" else "markers",
                line=dict(dash="dot", width=1) if name == "Pareto front" else None,
                marker=dict(symbol=symbols, **marker),
                name=name,
                text=[_hover(t) for t in members],
                hoverinfo="text",
            )
        )
    base = [t for t in rows if t.baseline]
    if base:
        fig.add_trace(
            go.Scatter(
                x=[getattr(t, x) for t in base],
                y=[t.accuracy for t in base],
                mode="text",
                text=[t.baseline for t in base],
                textposition="top center",
                name="uniform baselines",
                hoverinfo="skip",
            )
        )
    teacher_acc = (info.teacher.get("accuracy") or {}).get("value")
    if teacher_acc is not None:
        fig.add_hline(y=100 * teacher_acc, line_dash="dash", line_color="#1f77b4", annotation_text="teacher accuracy")
    fig.update_layout(
        title=title,
        xaxis_title=x_title,
        yaxis_title="accuracy on the eval split (%)",
        template="plotly_white",
        height=480,
        legend=dict(orientation="h", y=-0.2),
    )
    return fig
