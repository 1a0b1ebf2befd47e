"""How a study's first objective reads to a person, in the metric's own unit.

The first objective is always "higher is better, in %". For a share (accuracy, macro-F1,
next-token accuracy) that percentage is the figure itself. A metric with a unit of its own keeps
that unit beside it (:class:`~autocompress.tasks.evaluate.Metric`'s ``natural``) and people think
in it: a perplexity study reads "perplexity 23.4 (+7.9 % vs the teacher's 21.7)" rather than
"92.7 %", and its budgets read "perplexity ≤ +10 %".

One :class:`Reading` per task metric, registered under the name ``task.metric`` gives
(:data:`READINGS`, which also holds the metric's label); :class:`Quality` binds a study's reading to
its :class:`~autocompress.study.listing.MetricScale` (the teacher's figure, the study's budget).
Pure functions of plain figures, shared by the report, the pick and the command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from autocompress.report.analysis import BUDGETS
from autocompress.study.listing import MetricScale

__all__ = ["METRIC_LABELS", "READINGS", "Divergence", "Perplexity", "Quality", "Reading", "Share"]


def _g(x: float) -> str:
    """A budget as a person writes it: 10, 0.5 (a conversion and its inverse leave no float dust)."""
    return f"{round(x, 6):g}"


@dataclass(frozen=True)
class Reading:
    """How one task metric reads. This base is a share in %, higher is better: the figure is the first
    objective itself, compared with the teacher in points, with budgets in points of drop."""

    label: str  # the metric as a reader says it ('accuracy', 'macro-F1', 'perplexity')

    #: the metric keeps a unit of its own: views show (and plot) that, not the relative %
    own_unit: ClassVar[bool] = False
    #: budgets the report names the best candidates at, in this reading's terms (see :meth:`points`)
    common_budgets: ClassVar[tuple[float, ...]] = BUDGETS

    @property
    def word(self) -> str:
        """What the first objective is called in running text ('over the accuracy budget'): a share's
        is 'accuracy', as studies have stored it whatever share they measure."""
        return "accuracy"

    @property
    def axis(self) -> str:
        """The title of a plot axis of :meth:`natural` (a metric with its own unit: lower is better, and
        the axis is reversed, so that up is better in every plot)."""
        return f"{self.label} on the eval split (%)"

    @property
    def objective(self) -> str:
        """The first objective itself (what the hypervolume counts), in words."""
        return self.label

    @property
    def objective_meaning(self) -> str:
        """What :attr:`objective` is, where it is not the metric itself ('' for a share)."""
        return ""

    # ------------------------------------------------------------------ figures
    def natural(self, percent: float | None, natural: float | None, teacher: float | None) -> float | None:
        """The figure in the metric's own unit: the stored ``natural``, or what ``percent`` (the first
        objective) implies given the teacher's figure; a share's is ``percent``."""
        return percent

    def number(self, v: float) -> str:
        """A figure in the metric's own unit, as a cell."""
        return f"{v:.2f}"

    def column(self) -> str:
        """The heading of the column that holds :meth:`number`."""
        return f"{self.label} %"

    #: the heading of the column that holds :meth:`versus`
    versus_column: ClassVar[str] = "drop (pt)"

    def versus(self, percent: float | None, drop: float | None) -> str:
        """How far from the teacher, as a cell (``drop``: points below it, as the trial stored)."""
        return "—" if drop is None else f"{drop:+.2f}"

    def words(self, percent: float, natural: float | None, teacher: float | None,
              interval: tuple[float, float] | None = None) -> str:
        """The figure in words (``interval``: its 95 % interval in the metric's own unit)."""
        return f"{self.label} {percent:.2f} %" + (f" [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else "")

    def _interval(self, interval: tuple[float, float] | None) -> str:
        return f" [{self.number(interval[0])}, {self.number(interval[1])}]" if interval else ""

    # ------------------------------------------------------------------ budgets
    def points(self, budget: float) -> float:
        """A budget in this reading's terms, as points of the first objective below the teacher."""
        return budget

    def budget_of(self, points: float) -> float:
        """The inverse of :meth:`points`."""
        return points

    def budget_column(self) -> str:
        """The heading of the column that holds :meth:`budget_cell`."""
        return "accuracy drop (pt)"

    def budget_cell(self, budget: float) -> str:
        return f"≤ {_g(budget)}"

    def budget_words(self, budget: float) -> str:
        return f"≤ {_g(budget)} pt drop"


class Share(Reading):
    """A share in %, higher is better (accuracy, macro-F1, next-token accuracy): :class:`Reading` as is."""


@dataclass(frozen=True)
class Perplexity(Reading):
    """Perplexity, lower is better. The first objective is 100 × the teacher's perplexity over the
    candidate's, so the increase over the teacher's is 100 / objective − 1 (no teacher figure needed)."""

    own_unit = True
    common_budgets = (5.0, 10.0, 20.0)  # percent above the teacher's perplexity

    @property
    def word(self) -> str:
        return self.label

    @property
    def axis(self) -> str:
        return f"{self.label} on the eval split (lower is better: the axis is reversed)"

    @property
    def objective(self) -> str:
        return f"relative {self.label}"

    @property
    def objective_meaning(self) -> str:
        return f"100 × the teacher's {self.label} over the candidate's: 100 % is as good as the teacher"

    @staticmethod
    def increase(percent: float) -> float:
        """Percent above the teacher's perplexity, for a first objective of ``percent``."""
        return 100.0 * (100.0 / percent - 1.0) if percent > 0 else math.inf

    def natural(self, percent: float | None, natural: float | None, teacher: float | None) -> float | None:
        if natural is not None:
            return natural
        if percent is None or teacher is None or percent <= 0:
            return None
        return teacher * 100.0 / percent

    def number(self, v: float) -> str:
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"

    def column(self) -> str:
        return self.label

    versus_column = "vs the teacher"

    def versus(self, percent: float | None, drop: float | None) -> str:
        return "—" if percent is None else f"{self.increase(percent):+.1f} %"

    def words(self, percent: float, natural: float | None, teacher: float | None,
              interval: tuple[float, float] | None = None) -> str:
        ppl = self.natural(percent, natural, teacher)
        head = f"{self.label} {self.number(ppl)}{self._interval(interval)} (" if ppl is not None else f"{self.label} ("
        against = f"the teacher's {self.number(teacher)}" if teacher is not None else "the teacher's"
        return f"{head}{self.increase(percent):+.1f} % vs {against})"

    def points(self, budget: float) -> float:  # as ObjectivesConfig.max_drop converts max_perplexity_increase
        return 100.0 - 100.0 / (1.0 + budget / 100.0)

    def budget_of(self, points: float) -> float:
        return 100.0 * (100.0 / (100.0 - points) - 1.0) if points < 100 else math.inf

    def budget_column(self) -> str:
        return f"{self.label} vs the teacher's"

    def budget_cell(self, budget: float) -> str:
        return f"≤ +{_g(budget)} %"

    def budget_words(self, budget: float) -> str:
        return f"{self.label} {self.budget_cell(budget)}"


@dataclass(frozen=True)
class Divergence(Reading):
    """A divergence from the teacher in nats (KL), lower is better, 0 for the teacher itself; the
    first objective is 100 × exp(−divergence)."""

    own_unit = True
    common_budgets = (0.01, 0.05, 0.1)  # nats

    @property
    def word(self) -> str:
        return self.label

    @property
    def axis(self) -> str:
        return f"{self.label} from the teacher, nats (lower is better: the axis is reversed)"

    @property
    def objective(self) -> str:
        return "relative quality"

    @property
    def objective_meaning(self) -> str:
        return f"100 × exp(−{self.label}): 100 % is the teacher's own distribution"

    def natural(self, percent: float | None, natural: float | None, teacher: float | None) -> float | None:
        if natural is not None:
            return natural
        return -math.log(percent / 100.0) if percent is not None and percent > 0 else None

    def number(self, v: float) -> str:
        return f"{v:.3g}"

    def column(self) -> str:
        return f"{self.label} (nats)"

    versus_column = "vs the teacher"

    def versus(self, percent: float | None, drop: float | None) -> str:
        nats = self.natural(percent, None, None)
        return "—" if nats is None else f"+{self.number(nats)} nats"

    def words(self, percent: float, natural: float | None, teacher: float | None,
              interval: tuple[float, float] | None = None) -> str:
        nats = self.natural(percent, natural, teacher)
        return (f"{self.label} {self.number(nats if nats is not None else math.inf)}{self._interval(interval)} "
                "nats from the teacher")

    def points(self, budget: float) -> float:
        return 100.0 - 100.0 * math.exp(-budget)

    def budget_of(self, points: float) -> float:
        return -math.log(1.0 - points / 100.0) if points < 100 else math.inf

    def budget_column(self) -> str:
        return f"{self.label} from the teacher"

    def budget_cell(self, budget: float) -> str:
        return f"≤ {_g(budget)} nats"

    def budget_words(self, budget: float) -> str:
        return f"{self.label} {self.budget_cell(budget)}"


#: How each task metric (``task.metric``) reads, with its label; a metric not listed reads as a share
#: under its own name.
READINGS: dict[str, Reading] = {
    "accuracy": Share("accuracy"),
    "macro_f1": Share("macro-F1"),
    "next_token_accuracy": Share("next-token accuracy"),
    "perplexity": Perplexity("perplexity"),
    "kl": Divergence("KL divergence"),
    "multiple_choice": Share("multiple-choice accuracy"),
    "multiple_choice_norm": Share("multiple-choice accuracy (per byte)"),
}

#: Labels of the task metrics the objective may maximise (``task.metric``).
METRIC_LABELS: dict[str, str] = {name: r.label for name, r in READINGS.items()}


@dataclass(frozen=True)
class Quality:
    """A study's first objective in words: its metric's :class:`Reading` bound to the study's scale."""

    scale: MetricScale

    @property
    def reading(self) -> Reading:
        return READINGS.get(self.scale.metric) or Share(self.scale.metric)

    @property
    def label(self) -> str:
        """The metric as a reader says it ('accuracy', 'macro-F1', 'perplexity')."""
        return self.reading.label

    @property
    def own_unit(self) -> bool:
        """The metric has a unit of its own (perplexity, nats), shown instead of the relative %."""
        return self.reading.own_unit

    @property
    def word(self) -> str:
        """The first objective in running text: 'accuracy' (any share, as studies store it), 'perplexity'."""
        return self.reading.word

    @property
    def axis(self) -> str:
        """A plot axis of :meth:`natural`; reverse the axis where :attr:`own_unit` (lower is better)."""
        return self.reading.axis

    @property
    def objective(self) -> str:
        """The first objective itself in words ('accuracy', 'relative perplexity')."""
        return self.reading.objective

    @property
    def objective_meaning(self) -> str:
        """What :attr:`objective` is where it is not the metric itself ('' for a share)."""
        return self.reading.objective_meaning

    @property
    def teacher_natural(self) -> float | None:
        """The teacher's figure in the metric's own unit (a divergence's is 0), where the study stores it."""
        return self.scale.teacher_natural

    # ------------------------------------------------------------------ one trial
    def natural(self, percent: float | None, natural: float | None = None) -> float | None:
        """A trial's figure in the metric's own unit (a share: its %); ``natural`` is what it stored."""
        return self.reading.natural(percent, natural, self.scale.teacher_natural)

    def number(self, v: float | None) -> str:
        """A figure in the metric's own unit as a cell ('—' for none): '91.20', '23.4', '0.042'."""
        return "—" if v is None else self.reading.number(v)

    def versus(self, percent: float | None, drop: float | None = None) -> str:
        """How far from the teacher, as a cell: '+1.20' (points), '+7.9 %' (perplexity)."""
        return self.reading.versus(percent, drop)

    def describe(self, percent: float | None, natural: float | None = None,
                 interval: tuple[float, float] | None = None) -> str:
        """A trial's quality in words: 'accuracy 91.20 %', 'perplexity 23.4 (+7.9 % vs the teacher's 21.7)';
        ``interval`` is its 95 % interval in the metric's own unit (a share's: in %)."""
        if percent is None:
            return f"{self.label} —"
        return self.reading.words(percent, natural, self.scale.teacher_natural, interval)

    @property
    def column(self) -> str:
        """The heading of the column that holds :meth:`number`: 'accuracy %', 'perplexity'."""
        return self.reading.column()

    @property
    def versus_column(self) -> str:
        """The heading of the column that holds :meth:`versus`: 'drop (pt)', 'vs the teacher'."""
        return self.reading.versus_column

    @property
    def teacher(self) -> str:
        """The teacher's figure in the metric's own unit in words ('perplexity 21.7'); '' for a share
        (its figure is the teacher's %) or when the study stores none."""
        if not self.own_unit or self.scale.teacher_natural is None:
            return ""
        return f"{self.label} {self.reading.number(self.scale.teacher_natural)}"

    # ------------------------------------------------------------------ budgets
    @property
    def budgets(self) -> tuple[float, ...]:
        """Budgets to name the best candidates at, as points of the first objective below the teacher:
        the metric's common ones and the study's own."""
        out = [self.reading.points(b) for b in self.reading.common_budgets]
        own = self.scale.max_drop
        if own is not None and not any(math.isclose(own, b, rel_tol=1e-9) for b in out):
            out.append(own)
        return tuple(sorted(out))

    @property
    def budget_column(self) -> str:
        """The heading of the column that holds :meth:`budget_cell`."""
        return self.reading.budget_column()

    def budget_cell(self, points: float) -> str:
        """A budget (points) as a cell: '≤ 1', '≤ +10 %', '≤ 0.05 nats'."""
        return self.reading.budget_cell(self.reading.budget_of(points))

    def budget_words(self, points: float) -> str:
        """A budget (points) in words: '≤ 1 pt drop', 'perplexity ≤ +10 %', 'KL divergence ≤ 0.05 nats'."""
        return self.reading.budget_words(self.reading.budget_of(points))
