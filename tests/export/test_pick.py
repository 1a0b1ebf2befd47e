"""Picking in a perplexity study: budgets given as perplexity (above the teacher's, or outright),
answers that speak of perplexity, and a perplexity budget refused where a study measures a share."""

from __future__ import annotations

import optuna
import pytest

from autocompress.errors import ExportError
from autocompress.export import parse_pick, pick_trial
from autocompress.schema.plan import CompressionPlan

TEACHER_PPL = 20.0




def _perplexity_study() -> optuna.Study:
    """Five complete trials with known perplexities (one over the study's own 20 % budget)."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], study_name="llm")
    study.set_user_attr("config", {"task": {"kind": "causal-lm", "metric": "perplexity"},
                                   "objectives": {"max_perplexity_increase": 20}})
    study.set_user_attr("teacher", {"metric": {"name": "perplexity", "value": 1.0, "ci_low": 1.0, "ci_high": 1.0,
                                               "n": 50, "natural": TEACHER_PPL}})
    plan = CompressionPlan.uniform(2).to_dict()
    rows = [  # number: (perplexity, ratio, MB, ms)
        (20.0, 1.00, 90.0, 300.0),
        (20.8, 0.70, 60.0, 210.0),  # +4 %
        (21.8, 0.50, 50.0, 150.0),  # +9 %
        (23.6, 0.40, 45.0, 120.0),  # +18 %
        (30.0, 0.20, 20.0, 60.0),  # +50 %: over the study's budget
    ]
    budget = 100 - 100 / 1.2
    for ppl, ratio, mb, ms in rows:
        percent = 100 * TEACHER_PPL / ppl
        metric = {"name": "perplexity", "value": percent / 100, "ci_low": percent / 100, "ci_high": percent / 100,
                  "n": 50, "natural": ppl, "teacher_natural": TEACHER_PPL}
        study.add_trial(optuna.trial.create_trial(
            values=[percent, ratio, mb], constraints={"accuracy_drop": 100 - percent - budget},
            user_attrs={"plan": plan, "fidelity": "full", "metric": metric, "accuracy_drop": 100 - percent,
                        "speedup": 1 / ratio, "latency": {"candidate_ms": ms, "kind": "measured"}},
        ))
    return study


@pytest.mark.parametrize(
    ("expr", "number"),
    [
        ("fastest", 3),
        ("fastest with perplexity <= +5%", 1),
        ("fastest with perplexity <= 10 %", 2),
        ("Fastest  with perplexity <=+10%", 2),
        ("fastest perplexity <= +20 % and under 55 MB", 3),
        ("fastest with perplexity <= 22", 2),
        ("smallest with perplexity <= 21", 1),
        ("most accurate", 0),
        ("most accurate under 200 ms", 2),
        ("fastest with accuracy drop <= 5", 1),  # points of the first objective: +4 % is 3.8, +9 % is 8.3
    ],
)
def test_a_perplexity_budget_picks_within_that_perplexity(expr, number):
    assert pick_trial(_perplexity_study(), expr).number == number


def test_nothing_within_a_perplexity_budget_names_the_nearest_by_their_perplexity():
    with pytest.raises(ExportError) as info:
        pick_trial(_perplexity_study(), "fastest with perplexity <= +1% and under 100 ms")
    message = str(info.value)
    assert "no trial of 'llm' is 'fastest with perplexity <= +1 % and under 100 ms'" in message
    assert "perplexity 20.8 (+4.0 % vs the teacher's 20.0)" in message and "nearest: trial" in message
    assert "drop" not in message and "trial 4" not in message


def test_a_perplexity_budget_is_refused_for_a_study_that_measures_a_share():
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], study_name="clf")
    study.set_user_attr("config", {"task": {"metric": "macro_f1"}})
    with pytest.raises(ExportError, match="study 'clf' measures macro-F1, not perplexity: .*'with accuracy drop <= X'"):
        pick_trial(study, "fastest with perplexity <= +10%")


@pytest.mark.parametrize("expr", ["fastest with perplexity < 10%", "fastest with perplexity <= ten %",
                                  "fastest with perplexity <= +10", "fastest with perplexity drop <= 1"])
def test_a_malformed_perplexity_budget_shows_the_grammar(expr):
    with pytest.raises(ExportError, match="cannot read the pick expression.*'with perplexity <= \\+X%'"):
        parse_pick(expr)


def test_one_perplexity_limit_per_expression():
    with pytest.raises(ExportError, match="limits perplexity twice"):
        parse_pick("fastest with perplexity <= +10% and perplexity <= 22")
    assert parse_pick("smallest with perplexity <= +10%").describe() == "smallest with perplexity <= +10 %"
    assert parse_pick("smallest with perplexity <= 22.5").describe() == "smallest with perplexity <= 22.5"
