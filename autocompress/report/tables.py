"""The trial table: as data (one row per trial, plan flattened, for CSV / parquet via pandas) and
as HTML (front table; every trial, sortable and filterable in the page, a click showing the full
plan and the command that exports it).

Every string from the study is escaped; JSON embedded in the page escapes ``<``, ``>`` and ``&``
so no value can close its ``<script>`` element.
"""

from __future__ import annotations

import json
import shlex
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from autocompress.errors import AutocompressError
from autocompress.report.analysis import best_within
from autocompress.report.collect import ReportInfo, TrialRow
from autocompress.report.quality import Quality
from autocompress.report.rows import exits_text, split_text, vocabulary_text
from autocompress.schema import legacy
from autocompress.store.storage import default_storage

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FORMATS",
    "export_command",
    "front_table",
    "refinement_table",
    "script_json",
    "trial_records",
    "trials_frame",
    "trials_table",
    "write_table",
]

#: File formats of the trial table, by the name ``report --format`` takes.
FORMATS = ("csv", "parquet")


def _fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def script_json(data: Any) -> str:
    """JSON safe to place inside ``<script type="application/json">`` (no ``</script>``, no ``<!--``)."""
    text = json.dumps(data, ensure_ascii=False, default=str)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


# ---------------------------------------------------------------------------------------- data
def trial_records(info: ReportInfo) -> list[dict[str, Any]]:
    """One flat record per trial: metrics, status, every profile's speedup, the plan by layer."""
    names = [str(p.get("name")) for p in info.profiles]
    for t in info.trials:
        names += [n for n in t.profile_latency if n not in names]
    n_layers = info.num_layers
    metric = legacy.config_metric(info.config)  # natural figures' columns are named for task.metric
    natural = any(t.natural is not None for t in info.trials)
    generation = any(t.prefill_speedup is not None or t.kv_cache_bytes is not None for t in info.trials)
    refined = any(t.refines is not None for t in info.trials)
    out = []
    for t in sorted(info.trials, key=lambda t: t.number):
        rec: dict[str, Any] = {
            "trial": t.number,
            "state": t.state,
            "on_front": t.on_front,
            "feasible": t.feasible,
            "baseline": t.baseline,
            **({"refines": t.refines, "recovery_scale": t.recovery_scale or 1.0} if refined else {}),
            "accuracy": t.accuracy,
            "accuracy_ci_low": t.accuracy_ci[0] if t.accuracy_ci else None,
            "accuracy_ci_high": t.accuracy_ci[1] if t.accuracy_ci else None,
            "accuracy_drop": t.accuracy_drop,
            "test_accuracy": t.test_accuracy,
        }
        if natural:  # a metric with its own unit (perplexity, KL): the figure in it, beside the relative %
            rec.update({
                metric: t.natural,
                f"{metric}_ci_low": t.natural_ci[0] if t.natural_ci else None,
                f"{metric}_ci_high": t.natural_ci[1] if t.natural_ci else None,
                f"teacher_{metric}": t.teacher_natural,
            })
        rec.update({
            "relative_latency": t.values[1] if t.values and len(t.values) > 1 else None,
            "speedup": t.speedup,
            "latency_kind": t.latency_kind if t.speedup is not None else None,
            "latency_ms": t.latency_ms,
            "teacher_latency_ms": t.baseline_ms,
            "latency_iqr_ms": t.latency_iqr_ms,
            "noisy": t.noisy,
        })
        if generation:  # a generation workload: prefill and decode apart, and the key/value cache
            rec.update(prefill_speedup=t.prefill_speedup, decode_speedup=t.decode_speedup,
                       kv_cache_bytes=t.kv_cache_bytes, teacher_kv_cache_bytes=t.teacher_kv_cache_bytes)
        rec.update(size_mb=t.size_mb, size_ratio=t.size_ratio)
        for name in names:
            f = t.profile_latency.get(name)
            rec[f"speedup_{name}"] = f.speedup if f else None
            rec[f"speedup_{name}_kind"] = f.kind if f else None
        rec.update(
            fidelity=t.fidelity,
            simulated=t.simulated,
            plan_summary=t.plan_summary,
            fail_reason=t.fail_reason,
            duration_s=t.duration_s,
            started=t.started,
            completed=t.completed,
            host=t.host,
        )
        plan = t.plan or {}
        layers = plan.get("layers") or []
        for i in range(n_layers):
            layer = layers[i] if i < len(layers) else {}
            for key in ("keep", "heads", "ffn", "bits"):
                rec[f"L{i}_{key}"] = layer.get(key)
        rec["embedding_bits"] = plan.get("embedding_bits")
        rec["head_bits"] = plan.get("head_bits")
        out.append(rec)
    return out


def trials_frame(info: ReportInfo) -> pd.DataFrame:
    """The trial table as a pandas DataFrame (one row per trial)."""
    import pandas as pd

    records = trial_records(info)
    if not records:
        return pd.DataFrame(columns=["trial", "state", "accuracy", "speedup", "size_mb", "plan_summary"])
    frame = pd.DataFrame.from_records(records)
    for col in ("started", "completed"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def write_table(info: ReportInfo, path: Path, fmt: str) -> Path:
    """Write the trial table as ``fmt`` ('csv' or 'parquet') to ``path``."""
    if fmt not in FORMATS:
        raise AutocompressError(f"unknown table format '{fmt}'; available: {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise AutocompressError("writing parquet needs pyarrow: pip install pyarrow (or use --format csv)") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(info)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def export_command(info: ReportInfo, trial: int) -> str:
    """The shell command that rebuilds and exports ``trial``'s model."""
    name = info.study_name
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.") or "study"
    cmd = f"autocompress export {shlex.quote(name)} --trial {trial} -o {shlex.quote(f'exports/{safe}-trial-{trial}')}"
    if info.storage and info.storage != default_storage(name):
        cmd += f" --storage {shlex.quote(info.storage)}"
    return cmd


# ---------------------------------------------------------------------------------------- HTML
def _weight_only(plan: dict[str, Any] | None) -> bool:
    """The plan's 8- and 4-bit Linears keep their activations in 16 bits (weight-only int8 / int4, both real)."""
    return (plan or {}).get("weight_scheme") == "weight_only"


def _layer_cell(layer: dict[str, Any], weight_only: bool = False) -> str:
    """One layer of a plan in a table cell: what it keeps, e.g. 'h50 f75 int8', 'kv50 w4' or 'full'."""
    if not layer.get("keep", True):
        return '<td class="layer cell-drop">dropped</td>'
    heads, kv, ffn, bits = layer.get("heads", 1), layer.get("kv", 1), layer.get("ffn", 1), layer.get("bits", 32)
    parts = [f"h{heads:.0%}" if heads < 1 else "", f"kv{kv:.0%}" if kv < 1 else "", f"f{ffn:.0%}" if ffn < 1 else ""]
    if weight_only and bits in (8, 4):
        parts.append(f"w{bits}")
    else:
        parts.append("" if bits == 32 else ("int8" if bits == 8 else f"{bits}b*"))
    text = " ".join(p for p in parts if p) or "full"
    return f'<td class="layer">{escape(text)}</td>'


def quality_cell(q: Quality, t: TrialRow) -> str:
    """A trial's metric with its interval, in the metric's own unit: '91.20 [89.3, 93.1]', '23.4 [22.7, 24.1]'."""
    if not q.own_unit:
        ci = f" <span class='muted'>[{t.accuracy_ci[0]:.1f}, {t.accuracy_ci[1]:.1f}]</span>" if t.accuracy_ci else ""
        return f"{_fmt(t.accuracy)}{ci}"
    ci = f" <span class='muted'>[{q.number(t.natural_ci[0])}, {q.number(t.natural_ci[1])}]</span>" if t.natural_ci else ""
    return f"{q.number(q.natural(t.accuracy, t.natural))}{ci}"


def generation_note(info: ReportInfo) -> str:
    """What a generation workload's figures mean ('' for a study without one)."""
    tokens = (info.profiles or [{}])[0].get("new_tokens") or 0
    if not any(t.prefill_speedup is not None or t.kv_cache_bytes is not None for t in info.trials):
        return ""
    return (
        f"Generation: the speedup is end to end, the prompt's forward pass (prefill) and then {tokens or 'the'} new "
        "tokens one at a time with the key/value cache (decode), relative to the teacher in the same rounds; "
        "prefill = the teacher's time to the first token over the candidate's, decode = the same per generated token. "
        "KV cache = bytes of the cached keys and values at the workload's full length."
    )


def _megabytes(b: int | None) -> str:
    return "—" if b is None else f"{b / 1e6:.2f}"


def refinement_table(info: ReportInfo) -> str:
    """The refinements (front members built again with a longer recovery): each one's figures before
    and after, and the best candidate at each budget before refinement and after it; empty when the
    study refined nothing."""
    refined = info.refinements
    if not refined:
        return ""
    q = info.quality
    by_number = {t.number: t for t in info.trials}
    budgets = []
    for budget in info.budgets:
        before, after = best_within(info.unrefined, budget), best_within(info.trials, budget)
        if before is None and after is None:
            continue

        def said(t: TrialRow | None) -> str:
            return "none" if t is None else f"trial {t.number} {_fmt(t.speedup, '.2f', '×')}"
        budgets.append(f"{escape(q.budget_words(budget))}: {said(before)} → <b>{said(after)}</b>")
    rows = []
    for t in refined:
        old = by_number.get(t.refines) if t.refines is not None else None
        epochs = f"{_fmt(old.recovery_epochs if old else None, '.3g')} → {_fmt(t.recovery_epochs, '.3g')}"
        was = q.versus(old.accuracy, old.accuracy_drop) if old else "—"
        front = ("yes" if t.on_front else "no")
        rows.append(
            f"<tr><td>{t.number}</td><td>{t.refines}</td><td class='l'>{escape(t.plan_summary)}</td>"
            f"<td>{_fmt(t.speedup, '.2f', '×')}</td><td>{epochs}</td><td>{escape(was)}</td>"
            f"<td><b>{escape(q.versus(t.accuracy, t.accuracy_drop))}</b></td><td>{front}</td>"
            f"<td>{_fmt(t.duration_s, '.0f')}</td></tr>"
        )
    return (
        "<h3>Refinement</h3><p>After the trials, front members were built again from the teacher with a longer "
        f"distillation ({len(refined)} refinement{'s' if len(refined) != 1 else ''}, the most promising first; each is "
        "a trial of its own, with the latency of the trial it rebuilt, and exports as itself). Fastest within each "
        "budget, before refinement → after: " + "; ".join(budgets) + ".</p>"
        f"<div class='scroll'><table style='width:auto'><thead><tr><th>trial</th><th>refines trial</th><th>plan</th>"
        f"<th>speedup</th><th>epochs</th><th>{escape(q.versus_column)} before</th><th>after</th><th>on the front</th>"
        "<th>seconds</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


def front_table(info: ReportInfo) -> str:
    """The front members with their metrics, every profile's speedup and their per-layer plans; a
    generation workload's prefill and decode speedups and key/value cache besides."""
    front = info.front
    if not front:
        return '<p class="muted">No completed trial yet, so there is no front.</p>'
    q = info.quality
    n_layers = max(len((t.plan or {}).get("layers", [])) for t in front)
    head = "".join(f"<th>L{i}</th>" for i in range(n_layers))
    others = info.profiles[1:]
    other_head = "".join(
        f"<th title='{escape(str(p.get('description', '')))}'>speedup on {escape(str(p.get('name')))}"
        f"<br><span class='muted'>({escape(str(p.get('kind', 'measured')))})</span></th>"
        for p in others
    )
    generation = any(t.prefill_speedup is not None or t.kv_cache_bytes is not None for t in front)
    gen_head = ""
    if generation:
        teacher_kv = next((t.teacher_kv_cache_bytes for t in front if t.teacher_kv_cache_bytes), None)
        gen_head = (
            "<th>prefill speedup<br><span class='muted'>(time to first token)</span></th>"
            "<th>decode speedup<br><span class='muted'>(per new token)</span></th>"
            "<th>KV cache MB" + (f"<br><span class='muted'>(teacher {_megabytes(teacher_kv)})</span>" if teacher_kv else "")
            + "</th>"
        )
    rows = []
    for t in front:
        layers = (t.plan or {}).get("layers", [])
        cells = "".join(_layer_cell(layer, _weight_only(t.plan)) for layer in layers) + "<td></td>" * (n_layers - len(layers))
        other_cells = "".join(f"<td>{_fmt(t.profile_speedups.get(str(p.get('name'))), '.2f', '×')}</td>" for p in others)
        gen_cells = (
            f"<td>{_fmt(t.prefill_speedup, '.2f', '×')}</td><td>{_fmt(t.decode_speedup, '.2f', '×')}</td>"
            f"<td>{_megabytes(t.kv_cache_bytes)}</td>" if generation else ""
        )
        label = escape(t.baseline) if t.baseline else ""
        noisy = ' <span class="warn" title="latency spread stayed high">noisy</span>' if t.noisy else ""
        sim = ' <span class="warn" title="low-bit layers are simulated">sim</span>' if t.simulated else ""
        rows.append(
            f"<tr><td>{t.number}</td><td class='l'>{label}</td><td>{quality_cell(q, t)}</td>"
            f"<td>{escape(q.versus(t.accuracy, t.accuracy_drop))}</td><td>{_fmt(t.speedup, '.2f', '×')}{noisy}{sim}</td>"
            f"<td>{_fmt(t.latency_ms, '.1f')}</td>{gen_cells}{other_cells}<td>{_fmt(t.size_mb, '.1f')}</td>{cells}</tr>"
        )
    kind = front[0].latency_kind
    exiting = [(t.number, text) for t in front if t.exits and (text := exits_text(t.exits))]
    exit_note = "" if not exiting else (
        "<p><b>Where inputs exit</b> (eval split; latency is the mean over the task's own inputs at batch 1, "
        "each stopping at its exit): " + "; ".join(f"trial {n}: {escape(text)}" for n, text in exiting) + ".</p>")
    gen_note = f"<p class='muted'>{escape(generation_note(info))}</p>" if generation else ""
    return (
        f"<div class='scroll'><table><thead><tr><th>trial</th><th>baseline</th><th>{escape(q.column)}</th>"
        f"<th>{escape(q.versus_column)}</th><th>speedup<br><span class='muted'>({escape(kind)})</span></th>"
        f"<th>latency ms</th>{gen_head}{other_head}<th>size MB</th>{head}</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div><p class='muted'>Per layer: h = attention heads kept, "
        + ("kv = key/value groups kept, " if any("kv" in layer for t in front for layer in (t.plan or {}).get("layers", []))
           else "")
        + "f = FFN neurons kept "
        "(omitted when all are), int8 = real int8 kernels, "
        + ("w8/w4 = weight-only int8/int4 (real kernels, 16-bit activations), " if any(_weight_only(t.plan) for t in front)
           else "")
        + "4b*/2b* = simulated bit-widths (accuracy and size only), full = untouched. "
        "Measured = timed on this host interleaved with the teacher; predicted = cost model calibrated on this "
        "host, scaled to the profile's device figures (never a measurement).</p>" + gen_note + exit_note
    )


def _num_td(v: float | None, spec: str, suffix: str = "", extra: str = "") -> str:
    return f"<td data-v='{'' if v is None else repr(float(v))}'>{_fmt(v, spec, suffix)}{extra}</td>"


def _details(info: ReportInfo, t: TrialRow, q: Quality) -> dict[str, Any]:
    """What clicking a trial's row shows: its full plan, its figures (``q``: the metric in words) and
    the export command."""
    facts: dict[str, Any] = {"state": t.state}
    if t.plan_summary:
        facts["plan"] = t.plan_summary
    if t.fail_reason:
        facts["reason"] = t.fail_reason
    if t.accuracy is not None and not q.own_unit:
        facts[info.metric] = f"{t.accuracy:.2f} %" + (
            f" (95 % CI {t.accuracy_ci[0]:.1f}–{t.accuracy_ci[1]:.1f})" if t.accuracy_ci else ""
        )
    elif t.accuracy is not None:
        facts[q.label] = q.describe(t.accuracy, t.natural, t.natural_ci).removeprefix(f"{q.label} ")
    for name, f in t.profile_latency.items():
        spread = f" (spread {f.speedup_low:.2f}–{f.speedup_high:.2f})" if f.speedup_low and f.speedup_high else ""
        facts[f"speedup on {name}"] = f"{f.speedup:.2f}× {f.kind}{spread}" + (" — noisy" if f.noisy else "")
    if t.prefill_speedup is not None:
        facts["prefill (time to first token)"] = f"{t.prefill_speedup:.2f}× the teacher's speed"
    if t.decode_speedup is not None:
        facts["decode (per new token)"] = f"{t.decode_speedup:.2f}× the teacher's speed"
    if t.kv_cache_bytes is not None:
        facts["KV cache"] = f"{t.kv_cache_bytes / 1e6:.2f} MB" + (
            f" (teacher {t.teacher_kv_cache_bytes / 1e6:.2f} MB)" if t.teacher_kv_cache_bytes else "")
    if t.exits and (text := exits_text(t.exits)):
        facts["exits"] = text
    if t.vocabulary and (text := vocabulary_text(t.vocabulary)):
        facts["vocabulary"] = text
    if t.size_mb is not None:
        facts["size"] = f"{t.size_mb:.2f} MB" + (f" ({split_text(t.size_split)})" if t.size_split else "")
    if t.host:
        facts["host"] = t.host
    if t.params:
        facts["parameters"] = t.params
    plan = yaml.safe_dump(t.plan, sort_keys=False, default_flow_style=None, width=100) if t.plan else "(no plan stored)"
    if t.complete and t.plan:
        command = export_command(info, t.number)
    else:
        command = "(only complete trials are exported)"
    return {
        "title": f"trial {t.number}" + (f" — baseline {t.baseline}" if t.baseline else ""),
        "plan": plan,
        "facts": yaml.safe_dump(facts, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100),
        "command": command,
    }


#: what the table's "rung · latency" column means
RUNGS_NOTE = (
    "Rungs: cheap = built without recovery, metric on the eval subset (in italics, marked \"subset\"); "
    "short = after the short distillation, metric on the subset; full = fully recovered, metric on the whole eval "
    "split. Latency: predicted = this host's calibrated cost model; measured = timed against the teacher, "
    "interleaved. Only full trials with measured latency can be on the front or exported."
)


def _metric_td(t: TrialRow, q: Quality) -> str:
    """The metric cell (in the metric's own unit): the eval split's figure, or a stopped trial's
    subset figure, marked as such."""
    if t.accuracy is None and t.screened is not None:
        title = f"on the eval subset at the {t.fidelity} rung, not the whole eval split"
        screened = q.natural(t.screened)
        if not q.own_unit or screened is None:  # a share, or a metric whose teacher figure the study lacks
            key, text = t.screened, (f"{t.screened:.2f}" if not q.own_unit else q.versus(t.screened))
        else:
            key, text = screened, q.number(screened)
        return f"<td data-v='{key:.4f}' class='muted' title='{escape(title)}'><i>{escape(text)} subset</i></td>"
    if not q.own_unit:
        return _num_td(t.accuracy, ".2f")
    v = q.natural(t.accuracy, t.natural)
    return f"<td data-v='{'' if v is None else repr(float(v))}'>{q.number(v)}</td>"


def _ci_text(t: TrialRow, q: Quality) -> str:
    if q.own_unit:
        return f"{q.number(t.natural_ci[0])}–{q.number(t.natural_ci[1])}" if t.natural_ci else ""
    return f"{t.accuracy_ci[0]:.1f}–{t.accuracy_ci[1]:.1f}" if t.accuracy_ci else ""


def _versus_td(t: TrialRow, q: Quality) -> str:
    """How far from the teacher (sorted by the drop in points, which orders any metric's distance)."""
    if not q.own_unit:
        return _num_td(t.accuracy_drop, "+.2f")
    v = t.accuracy_drop
    return f"<td data-v='{'' if v is None else repr(float(v))}'>{escape(q.versus(t.accuracy, v))}</td>"


def _speedup_td(t: TrialRow, kind: str) -> str:
    """The speedup cell, marked where the row's latency is not of the column's kind (a predicted one)."""
    if t.speedup is None or t.latency_kind == kind:
        return _num_td(t.speedup, ".2f", "×")
    title = f"{t.latency_kind}, not {kind}"
    return f"<td data-v='{t.speedup:.4f}' class='muted' title='{escape(title)}'><i>{t.speedup:.2f}× {escape(t.latency_kind)}</i></td>"


def _rung_td(t: TrialRow) -> str:
    if not t.fidelity:
        return "<td class='l'></td>"
    return f"<td class='l'>{escape(t.fidelity)} · {escape(t.latency_kind)}</td>"


def trials_table(info: ReportInfo) -> str:
    """Every trial: sortable (click a header), filterable, a click on a row shows its details."""
    if not info.trials:
        return '<p class="muted">The study has no trials yet.</p>'
    others = [str(p.get("name")) for p in info.profiles[1:]]
    star = ' <span title="on the Pareto front">★</span>'
    kind = next((t.latency_kind for t in info.complete), "measured")
    q = info.quality
    rows = []
    for t in sorted(info.trials, key=lambda t: t.number):
        flags = "".join(
            f' <span class="{cls} flag" title="{title}">{word}</span>'
            for cond, cls, title, word in (
                (t.noisy, "warn", "the latency ratio's interval stayed wider than the profile's limit", "noisy"),
                (t.simulated, "warn", "low-bit layers simulated", "sim"),
                (t.complete and not t.feasible, "warn", f"over the {q.word} budget", "infeasible"),
            )
            if cond
        )
        ci = _ci_text(t, q)
        other = "".join(_num_td(t.profile_speedups.get(n), ".2f", "×") for n in others)
        rows.append(
            f"<tr data-trial='{t.number}' data-state='{escape(t.state)}' data-front='{int(t.on_front)}' tabindex='0'>"
            f"<td data-v='{t.number}'>{t.number}{star if t.on_front else ''}</td>"
            f"<td class='l'>{escape(t.state.lower())}{flags}</td><td class='l'>{escape(t.baseline or '')}</td>"
            f"{_metric_td(t, q)}<td class='l muted ci'>{ci}</td>{_versus_td(t, q)}"
            f"{_speedup_td(t, kind)}{_num_td(t.latency_ms, '.2f')}{other}{_num_td(t.size_mb, '.2f')}"
            f"{_rung_td(t)}{_num_td(t.duration_s, '.0f')}"
            f"<td class='l plan'>{escape(t.plan_summary)}</td><td class='l reason'>{escape(t.fail_reason or '')}</td></tr>"
        )
    other_head = "".join(f"<th>on {escape(n)}</th>" for n in others)
    details = {str(t.number): _details(info, t, q) for t in info.trials}
    return f"""
<div class="controls">
  <input id="trial-filter" type="search" placeholder="filter: any text in a row (e.g. int8, fail, baseline)" size="48">
  <select id="trial-state" aria-label="which trials">
    <option value="all">all trials</option><option value="front">Pareto front</option>
    <option value="COMPLETE">complete</option><option value="PRUNED">stopped before the full fidelity</option>
    <option value="FAIL">failed</option><option value="RUNNING">running</option>
  </select>
  <span id="trial-count" class="muted"></span>
  <span class="muted">— ★ marks the Pareto front; click a header to sort, a row for its full plan and export command</span>
</div>
<p class="muted">{escape(RUNGS_NOTE)}</p>
<div class="scroll"><table id="trial-table" class="trials"><thead><tr>
<th>trial</th><th>state</th><th>baseline</th><th>{escape(q.column)}</th><th>95 % CI</th>
<th>{escape(q.versus_column)}</th><th>speedup ({escape(kind)})</th><th>latency ms</th>{other_head}<th>size MB</th><th>rung · latency</th>
<th>seconds</th><th>plan</th><th>failure / prune reason</th>
</tr></thead><tbody>
{"".join(rows)}
</tbody></table></div>
<script type="application/json" id="trial-data">{script_json(details)}</script>
<script>{TABLE_JS}</script>
"""


# Written by hand: a few lines of sorting, filtering and row details need no library.
TABLE_JS = """
(function () {
  var data = JSON.parse(document.getElementById('trial-data').textContent);
  var table = document.getElementById('trial-table');
  var body = table.tBodies[0];
  var filter = document.getElementById('trial-filter');
  var state = document.getElementById('trial-state');
  var count = document.getElementById('trial-count');
  function closeDetails() {
    Array.prototype.slice.call(body.querySelectorAll('tr.detail')).forEach(function (r) { r.remove(); });
  }
  function rows() { return Array.prototype.slice.call(body.rows).filter(function (r) { return !r.classList.contains('detail'); }); }
  function apply() {
    closeDetails();
    var q = filter.value.trim().toLowerCase(), s = state.value, shown = 0, all = rows();
    all.forEach(function (r) {
      var ok = (!q || r.textContent.toLowerCase().indexOf(q) >= 0) &&
        (s === 'all' || (s === 'front' ? r.dataset.front === '1' : r.dataset.state === s));
      r.hidden = !ok;
      if (ok) shown += 1;
    });
    count.textContent = shown + ' of ' + all.length + ' trials shown';
  }
  filter.addEventListener('input', apply);
  state.addEventListener('change', apply);
  table.tHead.addEventListener('click', function (e) {
    var th = e.target.closest('th');
    if (!th) return;
    var i = th.cellIndex, asc = th.dataset.dir !== 'asc';
    Array.prototype.forEach.call(table.tHead.querySelectorAll('th'), function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? 'asc' : 'desc';
    closeDetails();
    function key(r) {
      var c = r.cells[i], v = c.dataset.v;
      if (v !== undefined) return v === '' ? null : parseFloat(v);
      var t = c.textContent.trim().toLowerCase();
      return t === '' ? null : t;
    }
    rows().sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null) return y === null ? 0 : 1;
      if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    }).forEach(function (r) { body.appendChild(r); });
  });
  function block(label, text, cls) {
    var div = document.createElement('div');
    var h = document.createElement('h4');
    h.textContent = label;
    var pre = document.createElement('pre');
    pre.textContent = text;
    if (cls) pre.className = cls;
    div.appendChild(h);
    div.appendChild(pre);
    return div;
  }
  function toggle(r) {
    var open = r.nextElementSibling && r.nextElementSibling.classList.contains('detail');
    closeDetails();
    if (open) return;
    var d = data[r.dataset.trial];
    if (!d) return;
    var row = body.insertRow(r.sectionRowIndex + 1);
    row.className = 'detail';
    var cell = row.insertCell();
    cell.colSpan = r.cells.length;
    var title = document.createElement('h3');
    title.textContent = d.title;
    var grid = document.createElement('div');
    grid.className = 'detail-grid';
    grid.appendChild(block('plan', d.plan));
    grid.appendChild(block('figures', d.facts));
    cell.appendChild(title);
    cell.appendChild(block('export this model', d.command, 'command'));
    cell.appendChild(grid);
  }
  body.addEventListener('click', function (e) {
    var r = e.target.closest('tr');
    if (r && !r.classList.contains('detail')) toggle(r);
  });
  body.addEventListener('keydown', function (e) {
    var r = e.target.closest('tr');
    if (r && e.key === 'Enter' && !r.classList.contains('detail')) toggle(r);
  });
  apply();
})();
"""
