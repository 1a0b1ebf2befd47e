"""The fidelity gate: recovery is skipped only when a finished trial already beats what it could reach."""

from __future__ import annotations

import pytest
from optuna.trial import FrozenTrial, create_trial

from autocompress.config import parse_config
from autocompress.evaluate import Metric
from autocompress.fidelity import decide, staged
from autocompress.plan import CompressionPlan
from conftest import tiny_config_dict

TEACHER = 90.0  # the teacher's task metric, in %
MARGIN = 0.5
RATIO, SIZE_MB = 0.5, 10.0  # the screened candidate's latency ratio and size
CHEAP = Metric(name="accuracy", value=0.612, ci_low=0.5, ci_high=0.7, n=50)

SHRUNK = CompressionPlan.uniform(4, heads=0.5, keep=[0, 2])
INT8_ONLY = CompressionPlan.uniform(4, bits=8)


def _cfg(tiny_model_dir, tiny_csv, *, enabled: bool = True, epochs: float = 1.0):
    return parse_config(
        tiny_config_dict(
            tiny_model_dir, tiny_csv, recovery={"epochs": epochs}, fidelity={"enabled": enabled, "margin": MARGIN}
        )
    )


@pytest.fixture(scope="module")
def cfg(tiny_model_dir, tiny_csv):
    return _cfg(tiny_model_dir, tiny_csv)


def _done(number: int, metric: float, ratio: float, size_mb: float) -> FrozenTrial:
    t = create_trial(values=[metric, ratio, size_mb], params={}, distributions={})
    t.number = number
    return t


def _gate(cfg, *complete: FrozenTrial):
    return decide(cfg, TEACHER, list(complete), RATIO, SIZE_MB, CHEAP)


@pytest.mark.parametrize(
    "values",
    [(95.0, 0.4, 8.0), (TEACHER - MARGIN, RATIO, SIZE_MB)],
    ids=["better-everywhere", "exactly-at-the-limits"],
)
def test_a_faster_smaller_near_teacher_trial_stops_the_candidate(cfg, values):
    gate = _gate(cfg, _done(7, *values))
    assert gate.promote is False
    assert gate.blocker == 7
    assert "trial 7" in gate.reason
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
    gate = _gate(cfg, _done(3, *values))
    assert gate.promote is True
    assert gate.blocker is None and gate.reason == ""


def test_the_blocker_is_the_trial_that_dominates_not_the_first_one(cfg):
    gate = _gate(cfg, _done(0, 95.0, 0.9, 30.0), _done(1, 80.0, 0.2, 2.0), _done(2, 89.9, 0.45, 9.0))
    assert gate.promote is False and gate.blocker == 2
    assert _gate(cfg).promote is True  # nothing finished yet


def test_the_margin_is_read_from_the_config(tiny_model_dir, tiny_csv):
    wide = parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, recovery={"epochs": 1.0}, fidelity={"margin": 5.0}))
    near = _done(4, TEACHER - 3.0, 0.4, 8.0)
    assert _gate(wide, near).promote is False
    assert _gate(_cfg(tiny_model_dir, tiny_csv), near).promote is True


def test_a_plan_is_screened_when_it_needs_recovery_and_the_study_screens(cfg):
    assert staged(cfg, SHRUNK) is True


def test_nothing_is_screened_when_fidelity_is_disabled(tiny_model_dir, tiny_csv):
    assert staged(_cfg(tiny_model_dir, tiny_csv, enabled=False), SHRUNK) is False


def test_nothing_is_screened_when_the_study_does_not_recover(tiny_model_dir, tiny_csv):
    assert staged(_cfg(tiny_model_dir, tiny_csv, epochs=0.0), SHRUNK) is False


def test_a_plan_that_keeps_the_structure_is_not_screened(cfg):
    assert staged(cfg, INT8_ONLY) is False
    assert staged(cfg, CompressionPlan.uniform(4)) is False
