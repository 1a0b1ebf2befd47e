"""Plotly figures of the search and its measurements, drawn from :class:`ReportInfo`: hypervolume
and the front's progress, parameter importance, and latency per device profile (measured against
predicted where both exist). Each returns ``None`` when it has nothing to draw; the page then
says why.
"""

from __future__ import annotations

from html import escape

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from autocompress.report.analysis import front_progress
from autocompress.report.collect import ReportInfo, TrialRow
from autocompress.report.figures import FRONT, TEMPLATE

__all__ = [
    "hypervolume_figure",
    "importance_figure",
    "predicted_vs_measured_figure",
    "profile_speedups_figure",
    "progress_figure",
]

_BUDGET_COLORS = ("#2ca02c", "#1f77b4", "#9467bd", "#8c564b")
_PROFILE_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")


def hypervolume_figure(info: ReportInfo) -> go.Figure | None:
    """Hypervolume of the feasible trials so far, after each complete trial (Optuna's hypervolume)."""
    h = info.hypervolume
    if h is None or not h.trials:
        return None
    fig = go.Figure(
        go.Scatter(
            x=h.trials, y=[100 * v for v in h.values], mode="lines+markers", line=dict(shape="hv", color=FRONT),
            name="hypervolume", hovertemplate="after trial %{x}: %{y:.2f}% of the reference box<extra></extra>",
        )
    )
    fig.update_layout(
        title="Hypervolume over trials",
        xaxis_title="trial number",
        yaxis_title="hypervolume (% of the reference box)",
        template=TEMPLATE,
        height=380,
        margin=dict(t=50, l=60, r=20),
    )
    return fig


def progress_figure(info: ReportInfo) -> go.Figure | None:
    """Best speedup within each accuracy budget, over the study's wall-clock time."""
    points = front_progress(info.trials, info.budgets)
    if not points:
        return None
    q = info.quality
    hours = points[-1].elapsed_s > 3 * 3600
    scale, unit = (3600.0, "hours") if hours else (60.0, "minutes")
    fig = go.Figure()
    for budget, color in zip(info.budgets, _BUDGET_COLORS):
        xs = [p.elapsed_s / scale for p in points if p.best[budget] is not None]
        ys = [p.best[budget] for p in points if p.best[budget] is not None]
        numbers = [p.trial for p in points if p.best[budget] is not None]
        if not xs:
            continue
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines+markers", line=dict(shape="hv", color=color), marker=dict(size=5),
                name=q.budget_words(budget), customdata=numbers,
                hovertemplate=f"{q.budget_words(budget) if q.own_unit else f'≤ {budget:g} pt'}: "
                f"%{{y:.2f}}× after trial %{{customdata}} (%{{x:.1f}} {unit})<extra></extra>",
            )
        )
    if not fig.data:
        return None
    kind = info.complete[0].latency_kind if info.complete else "measured"
    fig.update_layout(
        title=f"Best speedup within each {q.word} budget",
        xaxis_title=f"{unit} since the first trial started",
        yaxis_title=f"best speedup (×, {kind})",
        template=TEMPLATE,
        height=380,
        legend=dict(orientation="h", y=-0.25),
        margin=dict(t=50, l=60, r=20),
    )
    return fig


def importance_figure(info: ReportInfo, top: int = 12) -> go.Figure | None:
    """Per objective, the ``top`` parameters by importance (Optuna's PED-ANOVA), side by side."""
    scored = [imp for imp in info.importances if imp.scores]
    if not scored:
        return None
    rank: dict[str, float] = {}
    for imp in scored:
        for name, v in imp.scores.items():
            rank[name] = max(rank.get(name, 0.0), v)
    params = sorted(rank, key=lambda n: -rank[n])[:top][::-1]  # most important at the top
    fig = make_subplots(rows=1, cols=len(scored), shared_yaxes=True, subplot_titles=[imp.objective for imp in scored],
                        horizontal_spacing=0.04)
    for k, imp in enumerate(scored):
        fig.add_trace(
            go.Bar(
                x=[imp.scores.get(p, 0.0) for p in params], y=[escape(p) for p in params], orientation="h",
                marker_color=_PROFILE_COLORS[k % len(_PROFILE_COLORS)], name=imp.objective, showlegend=False,
                hovertemplate="%{y}: %{x:.3f}<extra>" + imp.objective + "</extra>",
            ),
            row=1, col=k + 1,
        )
        fig.update_xaxes(title_text="importance", range=[0, 1], row=1, col=k + 1)
    fig.update_layout(template=TEMPLATE, height=120 + 24 * len(params), margin=dict(t=40, l=90, r=20, b=40))
    return fig


def _spread(p_low: float | None, p_high: float | None, value: float) -> tuple[float, float]:
    if p_low is None or p_high is None:
        return 0.0, 0.0
    return max(0.0, p_high - value), max(0.0, value - p_low)


def profile_speedups_figure(info: ReportInfo) -> go.Figure | None:
    """Each front member's speedup on every profile; error bars are the measurement's IQR
    (measured) or the cost model's fit error (predicted); predicted bars are hatched."""
    members = [t for t in info.front if t.profile_latency]
    names = [p.get("name") for p in info.profiles if any(p.get("name") in t.profile_latency for t in members)]
    if not members or not names:
        return None
    fig = go.Figure()
    labels = [f"{t.number}" + (f" {escape(t.baseline)}" if t.baseline else "") for t in members]
    for k, name in enumerate(names):
        figs = [t.profile_latency.get(name) for t in members]
        kind = next((f.kind for f in figs if f), "measured")
        ys = [f.speedup if f else None for f in figs]
        plus_minus = [_spread(f.speedup_low, f.speedup_high, f.speedup) if f else (0.0, 0.0) for f in figs]
        fig.add_trace(
            go.Bar(
                x=labels, y=ys, name=f"{escape(str(name))} ({kind})",
                marker=dict(color=_PROFILE_COLORS[k % len(_PROFILE_COLORS)],
                            pattern=dict(shape="/" if kind == "predicted" else "")),
                error_y=dict(type="data", symmetric=False, array=[p for p, _ in plus_minus],
                             arrayminus=[m for _, m in plus_minus], thickness=1.2, width=3),
                hovertemplate="trial %{x}: %{y:.2f}×<extra>" + escape(str(name)) + f" ({kind})</extra>",
            )
        )
    fig.add_hline(y=1.0, line_dash="dash", line_color="#888", annotation_text="teacher")
    fig.update_layout(
        title="Front members on every profile",
        xaxis_title="trial (front members, fastest on the objective's profile first)",
        yaxis_title="speedup over the teacher (×)",
        barmode="group",
        template=TEMPLATE,
        height=420,
        legend=dict(orientation="h", y=-0.3),
        margin=dict(t=50, l=60, r=20),
    )
    return fig


def _host_pairs(info: ReportInfo) -> dict[str, list[tuple[TrialRow, float]]]:
    """Per measured profile, the complete trials that also carry the cost model's host prediction."""
    out: dict[str, list[tuple[TrialRow, float]]] = {}
    for t in info.complete:
        for name, f in t.profile_latency.items():
            if f.kind == "measured" and f.host_prediction is not None:
                out.setdefault(name, []).append((t, f.host_prediction))
    for items in out.values():
        items.sort(key=lambda item: bool(item[0].baseline))  # the legend shows the first point's symbol
    return out


def predicted_vs_measured_figure(info: ReportInfo) -> go.Figure | None:
    """Measured speedup (IQR as error bars) against the cost model's prediction for the same host
    and profile (its fit error as error bars); the diagonal is a perfect prediction."""
    pairs = _host_pairs(info)
    if not pairs:
        return None
    fig = go.Figure()
    lo, hi = float("inf"), 0.0
    for k, (name, items) in enumerate(sorted(pairs.items())):
        figs = [t.profile_latency[name] for t, _ in items]
        xs = [f.speedup for f in figs]
        ys = [p for _, p in items]
        xerr = [_spread(f.speedup_low, f.speedup_high, f.speedup) for f in figs]
        yerr = [f.fit_error * p if f.fit_error is not None else 0.0 for f, p in zip(figs, ys)]
        lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="markers", name=f"{escape(name)}",
                marker=dict(size=8, color=_PROFILE_COLORS[k % len(_PROFILE_COLORS)],
                            symbol=["star" if t.baseline else "circle" for t, _ in items]),
                error_x=dict(type="data", symmetric=False, array=[p for p, _ in xerr], arrayminus=[m for _, m in xerr],
                             thickness=1, width=2),
                error_y=dict(type="data", array=yerr, thickness=1, width=2),
                text=[f"trial {t.number}" + (f" ({escape(t.baseline)})" if t.baseline else "") for t, _ in items],
                hovertemplate="%{text}: measured %{x:.2f}×, predicted %{y:.2f}×<extra>" + escape(name) + "</extra>",
            )
        )
    pad = 0.05 * (hi - lo or 1.0)
    fig.add_trace(
        go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines", line=dict(dash="dash", color="#888"),
                   name="prediction = measurement", hoverinfo="skip")
    )
    fig.update_layout(
        title="Cost model vs measurement (same host)",
        xaxis_title="measured speedup (×; error bars: interquartile range of the rounds)",
        yaxis_title="predicted speedup (×; error bars: median fit error)",
        template=TEMPLATE,
        height=420,
        legend=dict(orientation="h", y=-0.25),
        margin=dict(t=50, l=60, r=20),
    )
    return fig
