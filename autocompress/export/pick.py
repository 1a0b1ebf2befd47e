"""Choosing the trial to ship: by number, or by a budget sentence such as "fastest with accuracy drop <= 1".

The grammar is deliberately tiny and strict (a typo is an error that shows the grammar, never a
guess)::

    EXPR       := GOAL [CONSTRAINT] ("and" CONSTRAINT)*
    GOAL       := "fastest" | "smallest" | "most accurate"
    CONSTRAINT := ["with"] "accuracy drop" "<=" X ["pt"]   points of the study's metric below the teacher
                | ["with"] "perplexity" "<=" ["+"] X "%"    perplexity at most X % above the teacher's
                | ["with"] "perplexity" "<=" X              perplexity at most X
                | "under" X "ms"                            the trial's latency on the study's profile
                | "under" X "MB"                            the trial's size
                | "at least" X ("×" | "x") "faster"         speedup over the teacher

The perplexity constraints are for studies whose ``task.metric`` is perplexity (for them "most
accurate" is the lowest perplexity, and an accuracy drop is in points of the first objective,
100 × the teacher's perplexity over the candidate's). Only complete, full-fidelity trials that meet
the study's own constraints (its budget) are candidates. "fastest" ranks by the latency ratio to
the teacher (the figure the study optimises, measured interleaved; for a generation workload, end
to end), "smallest" by size, "most accurate" by the study's metric.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.errors import ExportError
from autocompress.report.quality import Perplexity, Quality
from autocompress.store import record
from autocompress.study.listing import metric_scale

__all__ = ["GRAMMAR", "Budget", "parse_pick", "pick_trial", "exportable_trial"]

GRAMMAR = (
    "'fastest' | 'smallest' | 'most accurate', optionally followed by constraints joined with 'and': "
    "'with accuracy drop <= X', 'under X ms', 'under X MB', 'at least X× faster', and for a perplexity study "
    "'with perplexity <= +X%' (at most X % above the teacher's) or 'with perplexity <= X' "
    "(e.g. \"fastest with accuracy drop <= 1.0\", \"smallest under 10 ms and with accuracy drop <= 2\", "
    "\"fastest with perplexity <= +10%\")"
)

Goal = Literal["fastest", "smallest", "most accurate"]
_PERPLEXITY = {"max_increase", "max_perplexity"}  # one perplexity limit per expression
_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_CONSTRAINTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("max_drop", re.compile(rf"^(?:with )?accuracy drop <= ?{_NUM}(?: ?(?:pt|points?))?$")),
    ("max_increase", re.compile(rf"^(?:with )?perplexity <= ?\+? ?{_NUM} ?%$")),
    ("max_perplexity", re.compile(rf"^(?:with )?perplexity <= ?{_NUM}$")),
    ("max_ms", re.compile(rf"^under {_NUM} ?ms$")),
    ("max_mb", re.compile(rf"^under {_NUM} ?mb$")),
    ("min_speedup", re.compile(rf"^at least {_NUM} ?[×x] faster$")),
)


@dataclass(frozen=True)
class Budget:
    """A parsed pick expression: what to optimise among the trials within every given limit."""

    goal: Goal
    max_drop: float | None = None  # points of the study's metric below the teacher
    max_ms: float | None = None  # latency on the study's profile (as stored with the trial)
    max_mb: float | None = None  # size in MB
    min_speedup: float | None = None  # teacher latency / candidate latency
    max_increase: float | None = None  # perplexity studies: percent above the teacher's perplexity
    max_perplexity: float | None = None  # perplexity studies: the perplexity itself

    @property
    def on_perplexity(self) -> bool:
        """The budget limits perplexity (only a perplexity study can meet it)."""
        return self.max_increase is not None or self.max_perplexity is not None

    def describe(self) -> str:
        parts: list[str] = [self.goal]
        if self.max_drop is not None:
            parts.append(f"with accuracy drop <= {self.max_drop:g}")
        if self.max_increase is not None:
            parts.append(f"with perplexity <= +{self.max_increase:g} %")
        if self.max_perplexity is not None:
            parts.append(f"with perplexity <= {self.max_perplexity:g}")
        if self.max_ms is not None:
            parts.append(f"under {self.max_ms:g} ms")
        if self.max_mb is not None:
            parts.append(f"under {self.max_mb:g} MB")
        if self.min_speedup is not None:
            parts.append(f"at least {self.min_speedup:g}× faster")
        return parts[0] + (" " + " and ".join(parts[1:]) if len(parts) > 1 else "")


def parse_pick(expr: str) -> Budget:
    """Parse a pick expression (see the module docstring); raises :class:`ExportError` showing the grammar."""
    text = " ".join(expr.strip().lower().split())
    bad = ExportError(f"cannot read the pick expression {expr!r}; write {GRAMMAR}")
    goal = next((g for g in ("most accurate", "fastest", "smallest") if text == g or text.startswith(g + " ")), None)
    if goal is None:
        raise bad
    rest = text[len(goal):].strip()
    limits: dict[str, float] = {}
    if rest:
        for clause in re.split(r" and ", rest):
            for key, pattern in _CONSTRAINTS:
                m = pattern.match(clause.strip())
                if m:
                    break
            else:
                raise bad
            if key in limits:
                raise ExportError(f"the pick expression {expr!r} gives '{clause.strip()}' twice; give each limit once")
            if key in _PERPLEXITY and _PERPLEXITY & set(limits):
                raise ExportError(f"the pick expression {expr!r} limits perplexity twice; give one limit, either "
                                  "'perplexity <= +X%' (above the teacher's) or 'perplexity <= X'")
            limits[key] = float(m.group(1))
    return Budget(goal=goal, **limits)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ trials
def _figures(t: FrozenTrial, q: Quality) -> dict[str, float]:
    """The figures a budget talks about, read from the trial's record and its objective values."""
    r = record.read(t)
    fallback = 1.0 / t.values[1] if t.values[1] else math.nan
    natural = q.natural(t.values[0], r.metric.natural if r.metric is not None else None)
    return {
        "metric": t.values[0],
        "ratio": t.values[1],
        "size_mb": t.values[2],
        "drop": r.accuracy_drop if r.accuracy_drop is not None else math.nan,
        "ms": r.candidate_ms if r.candidate_ms is not None else math.nan,
        "speedup": r.speedup if r.speedup is not None else fallback,
        "natural": natural if natural is not None else math.nan,  # the metric in its own unit (perplexity)
        "increase": Perplexity.increase(t.values[0]),  # a perplexity study's: % above the teacher's perplexity
    }


def _violation(f: dict[str, float], b: Budget) -> float:
    """How far a trial is from meeting the budget's limits, in relative terms (0 = it meets them)."""
    out = 0.0
    if b.max_drop is not None:
        out += max(0.0, f["drop"] - b.max_drop) / max(abs(b.max_drop), 1.0)
    if b.max_increase is not None:
        out += max(0.0, f["increase"] - b.max_increase) / max(b.max_increase, 1.0)
    if b.max_perplexity is not None:
        out += max(0.0, f["natural"] - b.max_perplexity) / b.max_perplexity if b.max_perplexity > 0 else math.inf
    if b.max_ms is not None:
        out += max(0.0, f["ms"] - b.max_ms) / b.max_ms if b.max_ms > 0 else math.inf
    if b.max_mb is not None:
        out += max(0.0, f["size_mb"] - b.max_mb) / b.max_mb if b.max_mb > 0 else math.inf
    if b.min_speedup is not None:
        out += max(0.0, b.min_speedup - f["speedup"]) / max(b.min_speedup, 1e-9)
    return math.inf if math.isnan(out) else out


def _rank(f: dict[str, float], goal: Goal) -> tuple[float, float, float]:
    if goal == "fastest":
        return f["ratio"], -f["metric"], f["size_mb"]
    if goal == "smallest":
        return f["size_mb"], f["ratio"], -f["metric"]
    return -f["metric"], f["ratio"], f["size_mb"]


def _line(t: FrozenTrial, f: dict[str, float], q: Quality) -> str:
    ms = f"{f['ms']:.1f} ms, " if not math.isnan(f["ms"]) else ""
    natural = None if math.isnan(f["natural"]) else f["natural"]
    quality = q.describe(f["metric"], natural) if q.own_unit else f"drop {f['drop']:+.2f} pt"
    return f"trial {t.number} ({quality}, {f['speedup']:.2f}× faster, {ms}{f['size_mb']:.1f} MB)"


def pick_trial(study: optuna.Study, expr: str) -> FrozenTrial:
    """The trial of ``study`` that best meets ``expr``; raises :class:`ExportError` naming the nearest
    three candidates when none qualifies (in the study metric's own unit: perplexity, ...)."""
    budget = parse_pick(expr)
    q = Quality(metric_scale(study))
    if budget.on_perplexity and not isinstance(q.reading, Perplexity):
        raise ExportError(
            f"study '{study.study_name}' measures {q.label}, not perplexity: give its budget as "
            "'with accuracy drop <= X' (points below the teacher)"
        )
    candidates = [t for t in study.get_trials(deepcopy=False) if record.is_full(t) and record.feasible(t)]
    if not candidates:
        raise ExportError(
            f"study '{study.study_name}' has no complete full-fidelity trial within its own constraints yet; "
            "run more trials first (autocompress resume)"
        )
    scored = [(t, _figures(t, q)) for t in candidates]
    within = [(t, f) for t, f in scored if _violation(f, budget) == 0.0]
    if within:
        return min(within, key=lambda tf: (*_rank(tf[1], budget.goal), tf[0].number))[0]
    nearest = sorted(scored, key=lambda tf: (_violation(tf[1], budget), *_rank(tf[1], budget.goal), tf[0].number))[:3]
    raise ExportError(
        f"no trial of '{study.study_name}' is '{budget.describe()}' (of {len(candidates)} candidates); nearest: "
        + "; ".join(_line(t, f, q) for t, f in nearest)
        + ". Relax the budget, or export one of them with --trial N"
    )


def exportable_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` of ``study`` if it has a full-fidelity model to export; otherwise says why not."""
    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        have = f"its trials are numbered 0–{max(t.number for t in trials)}" if trials else "it has no trials"
        raise ExportError(f"study '{study.study_name}' has no trial {number}; {have}")
    t = match[0]
    r = record.read(t)
    if t.state == TrialState.PRUNED and r.fidelity in ("cheap", "short"):
        when = "at the cheap fidelity, before recovery" if r.fidelity == "cheap" else "after the short distillation"
        raise ExportError(
            f"trial {number} was stopped {when} ({r.prune_reason or 'no reason stored'}); "
            "it has no recovered model to export — choose a complete trial"
        )
    if t.state != TrialState.COMPLETE:
        state = {
            TrialState.RUNNING: "is still running",
            TrialState.WAITING: "is waiting to run",
            TrialState.FAIL: "failed",
            TrialState.PRUNED: "was pruned",
        }.get(t.state, f"is {t.state.name.lower()}")
        raise ExportError(
            f"trial {number} {state}{f' ({r.reason})' if r.reason else ''}; only complete trials can be exported"
        )
    if r.plan is None:
        raise ExportError(f"trial {number} has no stored plan this version can read; it was not made by autocompress")
    if r.fidelity not in (None, "full"):
        raise ExportError(f"trial {number} was scored at the '{r.fidelity}' fidelity; only full-fidelity trials can be exported")
    return t
