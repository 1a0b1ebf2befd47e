"""Plotly figures of the trade-off, drawn from :class:`ReportInfo` (plain data in, figures out):
accuracy against speed and size, the three objectives together, and where each front member's
compression went, layer by layer.

Strings that come from the study (baseline names, plan summaries) are escaped: plotly renders a
subset of HTML in its text.
"""

from __future__ import annotations

import math
from html import escape

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from autocompress.report.analysis import pareto_mask
from autocompress.report.collect import ReportInfo, TrialRow
from autocompress.report.quality import Quality

__all__ = ["layer_heatmaps", "pareto_3d_figure", "pareto_figure"]

FRONT = "#d62728"
DOMINATED = "rgba(120,120,120,0.35)"
INFEASIBLE = "rgba(120,120,120,0.2)"
TEMPLATE = "plotly_white"


def _quality_lines(t: TrialRow, q: Quality) -> list[str]:
    """The tooltip's lines on the trial's metric: a share with its drop, or the metric in its own unit."""
    if t.accuracy is None:
        return []
    if not q.own_unit:
        return [
            f"{q.label} {t.accuracy:.2f}%" + (f" [{t.accuracy_ci[0]:.1f}, {t.accuracy_ci[1]:.1f}]" if t.accuracy_ci else ""),
            f"drop {t.accuracy_drop:+.2f} pt" if t.accuracy_drop is not None else "",
        ]
    return [escape(q.describe(t.accuracy, t.natural, t.natural_ci), quote=False)]


def hover(t: TrialRow, q: Quality) -> str:
    """What a point's tooltip says about its trial."""
    generation = ", ".join(x for x in (
        f"prefill {t.prefill_speedup:.2f}×" if t.prefill_speedup is not None else "",
        f"decode {t.decode_speedup:.2f}×" if t.decode_speedup is not None else "",
        f"KV cache {t.kv_cache_bytes / 1e6:.2f} MB" if t.kv_cache_bytes is not None else "") if x)
    parts = [
        f"<b>trial {t.number}</b>" + (f" — baseline <b>{escape(t.baseline)}</b>" if t.baseline else ""),
        escape(t.plan_summary),
        *_quality_lines(t, q),
        f"speedup {t.speedup:.2f}× ({t.latency_kind})" + (f", {t.latency_ms:.1f} ms" if t.latency_ms else "")
        if t.speedup else "no latency figure",
        generation,
        f"size {t.size_mb:.1f} MB" if t.size_mb is not None else "",
    ]
    if t.refines is not None:
        parts.append(f"refines trial {t.refines}: {t.recovery_scale or 1:g}× its recovery, latency of trial {t.refines}")
    if t.on_front:
        parts.append(f"on the Pareto front ({q.word}, latency, size)")
    if not t.feasible:
        parts.append(f"<i>infeasible: loses more than the {q.word} budget</i>")
    if t.noisy:
        parts.append("<i>latency noisy: spread above the profile's limit</i>")
    if t.simulated:
        parts.append("<i>simulated low-bit layers: accuracy and size only, speed not measured for them</i>")
    return "<br>".join(p for p in parts if p)


def _symbol(t: TrialRow) -> str:
    if t.baseline:
        return "star"
    return "diamond-open" if t.simulated else "circle"


def _outlined(marker: dict, members: list[TrialRow]) -> dict:
    """``marker`` with a dark outline on the uniform baselines, so a faded one is still seen."""
    line = marker.get("line") or {}
    return {
        **marker,
        "line": dict(
            color=["#333" if t.baseline else line.get("color", "rgba(0,0,0,0)") for t in members],
            width=[max(1.2, line.get("width", 0)) if t.baseline else line.get("width", 0) for t in members],
        ),
    }


def _legend_only(fig: go.Figure, name: str, symbol: str, scene: bool = False) -> None:
    """A legend entry explaining a marker symbol (no data)."""
    marker = dict(symbol=symbol, color="#555", size=10, line=dict(width=1, color="#555"))
    if scene:
        fig.add_trace(go.Scatter3d(x=[None], y=[None], z=[None], mode="markers", marker=marker, name=name))
    else:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker=marker, name=name, hoverinfo="skip"))


def _y(t: TrialRow, q: Quality) -> float | None:
    """The trial's plotted quality: a share's %, or the metric in its own unit (perplexity)."""
    return q.natural(t.accuracy, t.natural)


def _y_interval(t: TrialRow, q: Quality) -> tuple[float, float] | None:
    return t.natural_ci if q.own_unit else t.accuracy_ci


def _teacher_y(info: ReportInfo, q: Quality) -> float | None:
    return q.teacher_natural if q.own_unit else info.teacher_accuracy


def _accuracy_range(info: ReportInfo, rows: list[TrialRow]) -> list[float] | None:
    """A y range around the feasible trials and the teacher, so that one collapsed candidate far
    over the budget does not squash the front (double-click the plot to see it); for a metric of
    its own unit (lower is better) the range runs downwards, as its axis is reversed."""
    q = info.quality
    sign = -1.0 if q.own_unit else 1.0  # work in "higher is better"
    ys = [sign * v for t in rows if t.feasible for v in (_y(t, q), *(_y_interval(t, q) or ())) if v is not None]
    teacher = _teacher_y(info, q)
    if teacher is not None:
        ys.append(sign * teacher)
    if not ys or not any((y := _y(t, q)) is not None and sign * y < min(ys) for t in rows):
        return None
    pad = 0.08 * ((max(ys) - min(ys)) or 1.0)
    return [sign * (min(ys) - pad), sign * (max(ys) + pad)]


def pareto_figure(info: ReportInfo, x: str, title: str, x_title: str) -> go.Figure:
    """Accuracy against ``x`` ('speedup' or 'size_mb').

    The 3-objective front is highlighted (red), dominated trials faded, trials over the accuracy
    budget fainter still; stars are the uniform baselines (labelled), open diamonds candidates with
    simulated low-bit layers; the dotted line joins the trials no other beats in this view.
    """
    fig = go.Figure()
    q = info.quality
    rows = [t for t in info.complete if getattr(t, x) is not None and _y(t, q) is not None]
    groups = (
        (f"over the {q.word} budget", [t for t in rows if not t.feasible], dict(color=INFEASIBLE, size=7)),
        ("dominated", [t for t in rows if t.feasible and not t.on_front], dict(color=DOMINATED, size=8)),
        ("Pareto front", [t for t in rows if t.on_front], dict(color=FRONT, size=11, line=dict(width=1, color="black"))),
    )
    for name, members, marker in groups:
        if not members:
            continue
        error = None
        if name == "Pareto front" and any(_y_interval(t, q) for t in members):
            ys, cis = [_y(t, q) for t in members], [_y_interval(t, q) for t in members]
            error = dict(
                type="data", symmetric=False, thickness=1, width=3, color="rgba(214,39,40,0.5)",
                array=[ci[1] - y if ci else 0 for y, ci in zip(ys, cis)],
                arrayminus=[y - ci[0] if ci else 0 for y, ci in zip(ys, cis)],
            )
        fig.add_trace(
            go.Scatter(
                x=[getattr(t, x) for t in members],
                y=[_y(t, q) for t in members],
                mode="markers",
                marker=dict(symbol=[_symbol(t) for t in members], **_outlined(marker, members)),
                error_y=error,
                name=name,
                text=[hover(t, q) for t in members],
                hoverinfo="text",
            )
        )
    # the trade-off in this view: trials no other feasible trial beats on both axes
    feasible = [t for t in rows if t.feasible]
    mask = pareto_mask([(getattr(t, x), t.accuracy) for t in feasible], [x == "speedup", True])
    line = sorted((t for t, on in zip(feasible, mask) if on), key=lambda t: getattr(t, x))
    if len(line) > 1:
        fig.add_trace(
            go.Scatter(
                x=[getattr(t, x) for t in line], y=[_y(t, q) for t in line], mode="lines",
                line=dict(dash="dot", width=1, color=FRONT), name="best trade-off in this view", hoverinfo="skip",
            )
        )
    if any(t.refines is not None for t in rows):  # the same trade-off as it stood before refinement
        unrefined = [t for t in feasible if t.refines is None]
        mask = pareto_mask([(getattr(t, x), t.accuracy) for t in unrefined], [x == "speedup", True])
        old = sorted((t for t, on in zip(unrefined, mask) if on), key=lambda t: getattr(t, x))
        if old:
            fig.add_trace(
                go.Scatter(
                    x=[getattr(t, x) for t in old], y=[_y(t, q) for t in old], mode="lines",
                    line=dict(dash="dash", width=1, color=DOMINATED), name="trade-off before refinement",
                    hoverinfo="skip",
                )
            )
    base = [t for t in rows if t.baseline]
    if base:
        fig.add_trace(
            go.Scatter(
                x=[getattr(t, x) for t in base],
                y=[_y(t, q) for t in base],
                mode="text",
                text=[escape(t.baseline or "") for t in base],
                textposition="top center",
                textfont=dict(size=11, color="#333"),
                name="uniform baselines (labels)",
                hoverinfo="skip",
                showlegend=False,
            )
        )
        _legend_only(fig, "uniform baseline", "star")
    if any(t.simulated for t in rows):
        _legend_only(fig, "simulated low-bit layers", "diamond-open")
    xs = [getattr(t, x) for t in rows]
    teacher = _teacher_y(info, q)
    if teacher is not None and xs:
        fig.add_trace(
            go.Scatter(
                x=[min(xs), max(xs)], y=[teacher] * 2, mode="lines", name=f"teacher {q.label}",
                line=dict(dash="dash", color="#1f77b4", width=1), hoverinfo="skip",
            )
        )
    y_range = _accuracy_range(info, rows)
    if q.own_unit and y_range is None:
        fig.update_yaxes(autorange="reversed")  # lower is better: up is better, as in every other view
    if y_range is not None:  # for a metric of its own unit the range runs downwards: the axis is reversed
        hidden = sum((y := _y(t, q)) is not None and (y > y_range[0] if q.own_unit else y < y_range[0]) for t in rows)
        fig.update_yaxes(range=y_range)
        fig.add_annotation(
            text=f"{hidden} trial(s) far over the {q.word} budget lie below (double-click to show all)",
            xref="paper", yref="paper", x=1, y=0, xanchor="right", yanchor="bottom", showarrow=False,
            font=dict(size=10, color="#777"),
        )
    fig.update_layout(
        title=title,
        xaxis_title=x_title,
        yaxis_title=q.axis,
        template=TEMPLATE,
        height=500,
        legend=dict(orientation="h", y=-0.22),
        margin=dict(t=50, l=60, r=20),
    )
    return fig


def pareto_3d_figure(info: ReportInfo) -> go.Figure:
    """The three objectives together: speedup × size × accuracy, the front in red."""
    q = info.quality
    rows = [t for t in info.complete if t.speedup is not None and t.size_mb is not None and _y(t, q) is not None]
    fig = go.Figure()
    for name, members, color, size in (
        ("other trials", [t for t in rows if not t.on_front], "rgba(90,90,90,0.55)", 5),
        ("Pareto front", [t for t in rows if t.on_front], FRONT, 6),
    ):
        if not members:
            continue
        fig.add_trace(
            go.Scatter3d(
                x=[t.speedup for t in members],
                y=[t.size_mb for t in members],
                z=[_y(t, q) for t in members],
                mode="markers+text",
                text=[escape(t.baseline or "") for t in members],
                textfont=dict(size=10),
                hovertext=[hover(t, q) for t in members],
                hoverinfo="text",
                marker=dict(
                    size=size, color=color, line=dict(width=0),
                    symbol=["diamond-open" if t.simulated else ("diamond" if t.baseline else "circle") for t in members],
                ),
                name=name,
            )
        )
    if any(t.baseline for t in rows):
        _legend_only(fig, "uniform baseline (labelled)", "diamond", scene=True)
    if any(t.simulated for t in rows):
        _legend_only(fig, "simulated low-bit layers", "diamond-open", scene=True)
    kind = rows[0].latency_kind if rows else "measured"
    z_range = _accuracy_range(info, rows)
    fig.update_layout(
        title="All three objectives",
        template=TEMPLATE,
        height=560,
        scene=dict(
            xaxis_title=f"speedup (×, {kind})", yaxis_title="size (MB)",
            zaxis=dict(title=q.label if q.own_unit else f"{q.label} (%)", range=z_range,
                       **({"autorange": "reversed"} if q.own_unit and z_range is None else {})),
            camera=dict(eye=dict(x=1.6, y=-1.6, z=0.9)),
        ),
        legend=dict(orientation="h", y=-0.05),
        margin=dict(t=50, l=0, r=0, b=0),
    )
    return fig


#: Rows of a per-layer heatmap: how much of each part of a layer the plan keeps (1 = all).
LAYER_ROWS = ("kept", "heads kept", "FFN kept", "bits")
#: The same for decoders whose plans keep part of the key/value groups.
KV_LAYER_ROWS = ("kept", "heads kept", "KV groups kept", "FFN kept", "bits")


def _layer_cells(layer: dict, kv: bool = False, weight_only: bool = False) -> tuple[list[float], list[str]]:
    """One layer's column: values in [0, 1] (1 = untouched) and their labels (with ``kv``, a row for
    the key/value groups kept after the heads; ``weight_only``: the plan's 8 and 4 bits are real
    weight-only kernels)."""
    if not layer.get("keep", True):
        return [0.0] * (5 if kv else 4), ["dropped"] + [""] * (4 if kv else 3)
    heads, ffn, bits = float(layer.get("heads", 1.0)), float(layer.get("ffn", 1.0)), int(layer.get("bits", 32))
    label = {32: "fp32", 8: "int8"}.get(bits, f"{bits}b sim")
    if weight_only and bits in (8, 4):
        label = f"w{bits}"
    if kv:
        groups = float(layer.get("kv", 1.0))
        return [1.0, heads, groups, ffn, bits / 32], ["kept", f"{heads:.0%}", f"{groups:.0%}", f"{ffn:.0%}", label]
    return [1.0, heads, ffn, bits / 32], ["kept", f"{heads:.0%}", f"{ffn:.0%}", label]


def layer_heatmaps(info: ReportInfo, columns: int = 3) -> go.Figure | None:
    """One small heatmap per front member: layers × (kept, heads kept, FFN kept, bits).

    Dark cells are where the compression went; a dropped layer is dark from top to bottom.
    ``None`` when no front member carries a plan.
    """
    members = [t for t in info.front if t.plan and t.plan.get("layers")]
    if not members:
        return None
    q = info.quality
    cols = min(columns, len(members))
    rows = math.ceil(len(members) / cols)
    titles = []
    for t in members:
        head = f"trial {t.number}" + (f" ({escape(t.baseline)})" if t.baseline else "")
        if q.own_unit:
            drop = f", {q.label} {q.versus(t.accuracy, t.accuracy_drop)}" if t.accuracy is not None else ""
        else:
            drop = f", {t.accuracy_drop:+.1f} pt" if t.accuracy_drop is not None else ""
        speed = f"{t.speedup:.2f}×" if t.speedup else "?×"
        titles.append(f"{head}: {speed}{drop}, {t.size_mb:.1f} MB" if t.size_mb is not None else f"{head}: {speed}{drop}")
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.06, vertical_spacing=0.5 / rows)
    kv = any("kv" in layer for t in members for layer in t.plan["layers"])  # stored where a plan keeps fewer
    names = KV_LAYER_ROWS if kv else LAYER_ROWS
    for k, t in enumerate(members):
        layers = t.plan["layers"]
        z = [[0.0] * len(layers) for _ in names]
        text = [[""] * len(layers) for _ in names]
        for j, layer in enumerate(layers):
            values, labels = _layer_cells(layer, kv, t.plan.get("weight_scheme") == "weight_only")
            for i in range(len(names)):
                z[i][j], text[i][j] = values[i], labels[i]
        fig.add_trace(
            go.Heatmap(
                z=z, x=[f"L{j}" for j in range(len(layers))], y=list(names), text=text,
                texttemplate="%{text}", textfont=dict(size=9), zmin=0, zmax=1,
                colorscale=[[0, "#7f1d1d"], [0.25, "#dc2626"], [0.5, "#fb923c"], [0.75, "#fde68a"], [1, "#f8fafc"]],
                showscale=k == 0, xgap=2, ygap=2,
                colorbar=dict(title="kept", tickvals=[0, 0.5, 1], ticktext=["none", "half", "all"], len=0.6),
                hovertemplate="%{x} %{y}: %{text}<extra>trial " + str(t.number) + "</extra>",
            ),
            row=k // cols + 1, col=k % cols + 1,
        )
    for axis in fig.select_yaxes():
        axis.update(autorange="reversed")
    fig.update_annotations(font_size=12)
    fig.update_layout(template=TEMPLATE, height=40 + 190 * rows, margin=dict(t=40, l=70, r=20, b=20))
    return fig
