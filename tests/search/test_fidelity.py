"""The rungs: a candidate goes on only while it could still move the front."""

from __future__ import annotations

import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from autocompress.store import record
from autocompress.schema.config import parse_config
from autocompress.tasks.evaluate import Metric
from autocompress.search.fidelity import Point, Standing, decide, staged, standing
from autocompress.schema.plan import CompressionPlan
from autocompress.store.facts import LatencyFigures, SizeFigures
from autocompress.store.record import TrialRecord
from conftest import tiny_config_dict

TEACHER = 90.0  # the teacher's task metric, in %
MARGIN = 0.5
RATIO, SIZE_MB = 0.5, 10.0  # the screened candidate's latency ratio and size
CHEAP = Metric(name="accuracy", value=0.612, ci_low=0.5, ci_high=0.7, n=50)

SHRUNK = CompressionPlan.uniform(4, heads=0.5, keep=[0, 2])
INT8_ONLY = CompressionPlan.uniform(4, bits=8)
NOTHING = Standing((), (), ())


def _cfg(tiny_model_dir, tiny_csv, *, enabled: bool = True, epochs: float = 1.0, max_drop: float | None = None, **fid):
    return parse_config(
        tiny_config_dict(
            tiny_model_dir, tiny_csv, recovery={"epochs": epochs}, fidelity={"enabled": enabled, "margin": MARGIN, **fid},
            objectives={"max_accuracy_drop": max_drop},
        )
    )


@pytest.fixture(scope="module")
def cfg(tiny_model_dir, tiny_csv):
    return _cfg(tiny_model_dir, tiny_csv)


def _full(number: int, metric: float, ratio: float, size_mb: float) -> Point:
    return Point(metric, ratio, size_mb, number)


def _gate(cfg, *full: Point, rung="cheap", at=CHEAP, recovers=True, peers=(), gains=(), tolerance=0.0):
    return decide(cfg, rung, TEACHER, at, RATIO, SIZE_MB, recovers=recovers, known=Standing(tuple(full), tuple(peers), tuple(gains)),
                  tolerance=tolerance)


@pytest.mark.parametrize(
    "values",
    [(95.0, 0.4, 8.0), (TEACHER - MARGIN, RATIO, SIZE_MB)],
    ids=["better-everywhere", "exactly-at-the-limits"],
)
def test_a_faster_smaller_near_teacher_trial_stops_the_candidate_before_recovery(cfg, values):
    gate = _gate(cfg, _full(7, *values))
    assert gate.promote is False
    assert gate.blocker == 7
    assert "trial 7" in gate.reason and "before recovery" in gate.reason
    assert "61.2%" in gate.reason  # the cheap score it was stopped on


@pytest.mark.parametrize(
    "values",
    [
        (95.0, RATIO + 0.01, SIZE_MB),  # slower
        (95.0, RATIO, SIZE_MB + 0.1),  # bigger
        (TEACHER - MARGIN - 0.1, 0.1, 1.0),  # faster and smaller, but further from the teacher than the margin
    ],
    ids=["slower", "bigger", "less-accurate"],
)
def test_a_trial_that_loses_on_one_objective_does_not_stop_it(cfg, values):
    gate = _gate(cfg, _full(3, *values))
    assert gate.promote is True
    assert gate.blocker is None and gate.reason == ""


def test_the_blocker_is_the_trial_that_dominates_not_the_first_one(cfg):
    gate = _gate(cfg, _full(0, 95.0, 0.9, 30.0), _full(1, 80.0, 0.2, 2.0), _full(2, 89.9, 0.45, 9.0))
    assert gate.promote is False and gate.blocker == 2
    assert _gate(cfg).promote is True  # nothing finished yet


def test_a_predicted_latency_is_dominated_only_by_a_clearly_faster_trial(cfg):
    near = _full(5, 95.0, RATIO * 0.95, SIZE_MB)  # 5 % faster: within the cost model's 10 % error
    assert _gate(cfg, near, tolerance=0.10).promote is True
    assert _gate(cfg, near, tolerance=0.0).promote is False
    assert _gate(cfg, _full(6, 95.0, RATIO * 0.85, SIZE_MB), tolerance=0.10).promote is False


def test_a_plan_recovery_will_not_change_is_judged_on_its_interval(cfg):
    # no recovery: the subset's 70 % (top of the interval) is the best it can do
    assert _gate(cfg, _full(1, 71.0, 0.4, 8.0), recovers=False).promote is False
    assert _gate(cfg, _full(1, 69.0, 0.4, 8.0), recovers=False).promote is True


def test_after_the_short_distillation_the_measured_gain_sets_the_hope(cfg):
    short = Metric(name="accuracy", value=0.84, ci_low=0.82, ci_high=0.86, n=500)
    trial = _full(2, 88.5, 0.4, 8.0)
    # before two gains are measured: the top of the interval (86) + short_gain (3) = 89 > 88.5
    assert _gate(cfg, trial, rung="short", at=short).promote is True
    assert _gate(cfg, trial, rung="short", at=short, gains=(5.0,)).promote is True  # one gain is not enough
    # measured gains of at most 2 pt: 88 at best, and trial 2 already has 88.5
    gate = _gate(cfg, trial, rung="short", at=short, gains=(1.0, 2.0))
    assert gate.promote is False and gate.blocker == 2 and "after the short distillation" in gate.reason


def test_a_candidate_that_cannot_come_within_the_budget_is_stopped(tiny_model_dir, tiny_csv):
    budget = _cfg(tiny_model_dir, tiny_csv, max_drop=2.0)
    short = Metric(name="accuracy", value=0.80, ci_low=0.78, ci_high=0.82, n=500)  # 82 + 3 = 85 < 90 - 2
    gate = _gate(budget, rung="short", at=short)
    assert gate.promote is False and gate.blocker is None and "within 2 pt" in gate.reason
    hopeful = Metric(name="accuracy", value=0.84, ci_low=0.82, ci_high=0.86, n=500)  # 86 + 3 = 89 ≥ 88
    assert _gate(budget, rung="short", at=hopeful).promote is True
    # before recovery, a plan that will be distilled is never stopped for its unrecovered metric
    assert _gate(budget, rung="cheap", at=Metric(name="accuracy", value=0.3, ci_low=0.25, ci_high=0.35, n=500)).promote


def test_a_perplexity_budget_stop_speaks_perplexity(tiny_llama_dir, decoder_corpus):
    from conftest import tiny_decoder_config_dict

    cfg = parse_config(tiny_decoder_config_dict(tiny_llama_dir, decoder_corpus, objectives={"max_perplexity_increase": 10},
                                                fidelity={"enabled": True, "margin": MARGIN}))
    # 10 % more perplexity is 100/1.1 = 90.9 % of the teacher's quality: a drop of 9.1 pt from 100
    short = Metric(name="perplexity", value=0.70, ci_low=0.68, ci_high=0.72, n=200, natural=28.6, teacher_natural=20.0)
    gate = decide(cfg, "short", 100.0, short, RATIO, SIZE_MB, recovers=True, known=NOTHING)
    assert gate.promote is False
    assert "perplexity 28.6 (70.0% of the teacher's quality) on the subset" in gate.reason
    assert "at most 10 % above the teacher's" in gate.reason


def test_successive_halving_keeps_the_rungs_front_and_the_better_half(cfg):
    low = Metric(name="accuracy", value=0.50, ci_low=0.45, ci_high=0.55, n=500)
    better = [Point(60.0 + i, 0.4, 8.0, i) for i in range(5)]  # faster, smaller and more accurate: it is dominated
    gate = _gate(cfg, rung="short", at=low, peers=better)
    assert gate.promote is False and "best 3 of the 6" in gate.reason
    # of two, the best ceil(0.5 × 2) = 1 goes on: the other one, which dominates it
    assert _gate(cfg, rung="short", at=low, peers=better[:1]).promote is False
    assert _gate(cfg, rung="short", at=low).promote is True  # the first candidate at a rung always goes on


def test_a_candidate_on_the_rungs_front_always_goes_on(cfg):
    at = Metric(name="accuracy", value=0.50, ci_low=0.45, ci_high=0.55, n=500)
    slower = [Point(60.0 + i, 0.9, 8.0, i) for i in range(9)]  # more accurate but slower: the candidate is not dominated
    assert _gate(cfg, rung="short", at=at, peers=slower).promote is True


def test_keep_fraction_is_read_from_the_config(tiny_model_dir, tiny_csv):
    at = Metric(name="accuracy", value=0.50, ci_low=0.45, ci_high=0.55, n=500)
    better = [Point(60.0 + i, 0.4, 8.0, i) for i in range(3)]  # 4 candidates; the new one is last
    assert _gate(_cfg(tiny_model_dir, tiny_csv, keep_fraction=1.0), at=at, peers=better, rung="short").promote is True
    assert _gate(_cfg(tiny_model_dir, tiny_csv, keep_fraction=0.5), at=at, peers=better, rung="short").promote is False


def _trial(number: int, state: TrialState, rec: TrialRecord, values=None) -> FrozenTrial:
    t = create_trial(state=state, values=values, params={}, distributions={}, user_attrs=rec.to_attrs())
    t.number = number
    return t


def test_standing_reads_full_trials_peers_at_the_rung_and_gains():
    plan = SHRUNK.to_dict()
    m = lambda v: Metric(name="accuracy", value=v, ci_low=v - 0.02, ci_high=v + 0.02, n=500)  # noqa: E731
    screen = LatencyFigures(ratio=0.5, kind="predicted")
    size = SizeFigures(megabytes=10.0)
    full = TrialRecord(plan=SHRUNK, fidelity="full", cheap_accuracy=m(0.4), short_accuracy=m(0.8), screen=screen, size=size,
                       latency=LatencyFigures(ratio=0.52, kind="measured"))
    stopped = TrialRecord(plan=SHRUNK, fidelity="cheap", cheap_accuracy=m(0.3), screen=screen, size=size, latency=screen)
    repeat = full.with_(same_plan_as=0)
    trials = [
        _trial(0, TrialState.COMPLETE, full, values=[83.0, 0.52, 10.0]),
        _trial(1, TrialState.PRUNED, stopped),
        _trial(2, TrialState.COMPLETE, repeat, values=[83.0, 0.52, 10.0]),
        _trial(3, TrialState.PRUNED, stopped),  # the candidate itself
    ]
    cheap = standing(trials, "cheap", number=3)
    assert [p.number for p in cheap.full] == [0]
    assert [(p.number, p.percent, p.ratio) for p in cheap.peers] == [(0, 40.0, 0.5), (1, 30.0, 0.5)]
    assert cheap.gains == pytest.approx((3.0,))
    assert cheap.stopped_in_a_row == 1  # trial 1 (the candidate itself is not counted)
    short = standing(trials, "short", number=3)
    assert [p.number for p in short.peers] == [0]
    assert plan  # the plan rides along in the record


def test_a_plan_is_screened_when_it_needs_recovery_or_quantises(cfg):
    assert staged(cfg, SHRUNK) is True
    assert staged(cfg, INT8_ONLY) is True


def test_nothing_is_screened_when_fidelity_is_disabled(tiny_model_dir, tiny_csv):
    assert staged(_cfg(tiny_model_dir, tiny_csv, enabled=False), SHRUNK) is False
    assert staged(_cfg(tiny_model_dir, tiny_csv, enabled=False), INT8_ONLY) is False


def test_a_plan_that_changes_nothing_goes_straight_to_the_full_fidelity(tiny_model_dir, tiny_csv, cfg):
    no_recovery = _cfg(tiny_model_dir, tiny_csv, epochs=0.0)
    assert staged(no_recovery, SHRUNK) is False  # nothing to recover
    assert staged(no_recovery, INT8_ONLY) is False  # no cost model to screen with: timed once, in full
    assert staged(cfg, CompressionPlan.uniform(4)) is False


def test_a_sampler_is_told_a_stopped_candidate_as_an_infeasible_complete_trial():
    m = Metric(name="accuracy", value=0.6, ci_low=0.55, ci_high=0.65, n=500)
    rec = TrialRecord(plan=SHRUNK, fidelity="cheap", cheap_accuracy=m, latency=LatencyFigures(ratio=0.4, kind="predicted"),
                      size=SizeFigures(megabytes=9.0))
    stopped = _trial(4, TrialState.PRUNED, rec)
    told = record.told(stopped, TEACHER, 5.0)
    assert told is not None and told.state == TrialState.COMPLETE and told.number == 4
    assert told.values == [60.0, 0.4, 9.0]
    assert told.constraints == {record.DROP_CONSTRAINT: pytest.approx(TEACHER - 60.0 - 5.0)}
    near = _trial(5, TrialState.PRUNED, rec.with_(cheap_accuracy=Metric(name="accuracy", value=0.89, ci_low=0.87,
                                                                        ci_high=0.91, n=500)))
    assert record.told(near, TEACHER, 5.0).constraints[record.DROP_CONSTRAINT] == record.STOPPED_VIOLATION
    assert record.told(near, TEACHER, None).constraints == {}
    short = _trial(6, TrialState.PRUNED, rec.with_(fidelity="short", short_accuracy=Metric(name="accuracy", value=0.8,
                                                                                           ci_low=0.78, ci_high=0.82, n=500)))
    assert record.told(short, TEACHER, 5.0).values[0] == pytest.approx(80.0)  # the latest rung's figure
    assert record.told(_trial(7, TrialState.PRUNED, rec.with_(same_plan_as=4)), TEACHER, 5.0) is None
    assert record.told(_trial(8, TrialState.PRUNED, TrialRecord(prune_reason="not needed")), TEACHER, 5.0) is None


def test_after_patience_runs_out_the_next_candidate_goes_on(tiny_model_dir, tiny_csv):
    patient = _cfg(tiny_model_dir, tiny_csv, patience=3)
    blocker = _full(0, 95.0, 0.4, 8.0)
    assert decide(patient, "cheap", TEACHER, CHEAP, RATIO, SIZE_MB, recovers=True,
                  known=Standing((blocker,), (), (), stopped_in_a_row=2)).promote is False
    gate = decide(patient, "cheap", TEACHER, CHEAP, RATIO, SIZE_MB, recovers=True,
                  known=Standing((blocker,), (), (), stopped_in_a_row=3))
    assert gate.promote and "last 3 candidates" in gate.note


def test_before_recovery_a_deep_cut_is_ranked_only_against_cuts_as_deep(cfg):
    unrecovered = Metric(name="accuracy", value=0.40, ci_low=0.35, ci_high=0.45, n=500)  # a 2-layer student, before KD
    shallow = [Point(70.0 + i, 0.4, 8.0, i, layers=6, recovers=True) for i in range(5)]  # dominate it, but keep 6 layers
    assert decide(cfg, "cheap", TEACHER, unrecovered, RATIO, SIZE_MB, recovers=True, layers=2,
                  known=Standing((), tuple(shallow), ())).promote is True
    as_deep = [Point(50.0 + i, 0.4, 8.0, i, layers=2, recovers=True) for i in range(5)]
    assert decide(cfg, "cheap", TEACHER, unrecovered, RATIO, SIZE_MB, recovers=True, layers=2,
                  known=Standing((), tuple(as_deep), ())).promote is False
    # after the short distillation every candidate is ranked against every other
    short = decide(cfg, "short", TEACHER, unrecovered, RATIO, SIZE_MB, recovers=True, layers=2,
                   known=Standing((), tuple(shallow), ()))
    assert short.promote is False
