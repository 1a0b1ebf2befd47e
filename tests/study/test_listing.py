"""The study list and the best-so-far line say what a study's first objective measures: a
perplexity study speaks of perplexity against the teacher's, a classification study of its %."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from autocompress.report.quality import Quality
from autocompress.study.listing import best_so_far, list_studies, metric_scale, study_lines

TEACHER_PPL = 20.0


PLAN = {"schema_version": 1, "layers": [{"keep": True, "heads": 1.0, "ffn": 1.0, "bits": 32}] * 2}


def _study(storage: optuna.storages.BaseStorage, name: str, config: dict[str, Any], teacher: dict[str, Any]) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("config", config)
    study.set_user_attr("teacher", teacher)
    return study


def _perplexity_study(storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Three complete trials: perplexity 22, 21 and 25 (the last over the study's 10 % budget)."""
    study = _study(storage, "llm", {"task": {"kind": "causal-lm", "metric": "perplexity"},
                                     "objectives": {"max_perplexity_increase": 10}},
                   {"metric": {"name": "perplexity", "value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 50,
                               "natural": TEACHER_PPL, "teacher_natural": TEACHER_PPL}})
    for ppl, ratio in ((22.0, 0.5), (21.0, 0.8), (25.0, 0.3)):
        percent = 100 * TEACHER_PPL / ppl
        metric = {"name": "perplexity", "value": percent / 100, "ci_low": percent / 100 - 0.01,
                  "ci_high": percent / 100 + 0.01, "n": 50, "natural": ppl, "natural_low": ppl - 0.5,
                  "natural_high": ppl + 0.5, "teacher_natural": TEACHER_PPL}
        study.add_trial(optuna.trial.create_trial(
            values=[percent, ratio, 10.0], constraints={"accuracy_drop": 100 - percent - (100 - 100 / 1.1)},
            user_attrs={"plan": PLAN, "fidelity": "full", "metric": metric, "accuracy_drop": 100 - percent,
                        "speedup": 1 / ratio, "latency": {"ratio": ratio, "kind": "measured"}}))
    return study


def _accuracy_study(storage: optuna.storages.BaseStorage) -> optuna.Study:
    study = _study(storage, "clf", {"task": {"metric": "accuracy"}, "objectives": {"max_accuracy_drop": 2}},
                   {"metric": {"name": "accuracy", "value": 0.9, "ci_low": 0.88, "ci_high": 0.92, "n": 500}})
    for acc, ratio in ((89.5, 0.6), (86.0, 0.3)):
        study.add_trial(optuna.trial.create_trial(
            values=[acc, ratio, 10.0], constraints={"accuracy_drop": 90 - acc - 2},
            user_attrs={"plan": PLAN, "fidelity": "full", "accuracy_drop": 90 - acc, "speedup": 1 / ratio,
                        "metric": {"name": "accuracy", "value": acc / 100, "ci_low": acc / 100 - 0.02,
                                   "ci_high": acc / 100 + 0.02, "n": 500}}))
    return study


@pytest.fixture
def storage(tmp_path: Path) -> tuple[optuna.storages.BaseStorage, str]:
    url = f"sqlite:///{tmp_path / 'list.db'}"
    storage = optuna.storages.RDBStorage(url)
    _perplexity_study(storage)
    _accuracy_study(storage)
    return storage, url


def test_the_study_list_speaks_of_a_perplexity_studys_perplexity(storage):
    lines = {line.summary.name: line for line in study_lines(*storage)}
    llm = lines["llm"]
    assert llm.scale.metric == "perplexity" and llm.scale.teacher_natural == TEACHER_PPL
    assert llm.scale.max_drop == pytest.approx(100 - 100 / 1.1), "the budget in points of the first objective"
    assert llm.best_natural == 21.0, "the best trial is the one with the lowest perplexity"
    words = Quality(llm.scale).describe(llm.summary.best_accuracy, llm.best_natural)
    assert words == "perplexity 21.0 (+5.0 % vs the teacher's 20.0)"
    assert llm.summary.best_speedup == pytest.approx(2.0), "the trial over the budget is not counted"


def test_a_classification_studys_line_is_its_percent_as_before(storage):
    lines = {line.summary.name: line for line in study_lines(*storage)}
    clf = lines["clf"]
    assert clf.scale.metric == "accuracy" and clf.scale.teacher_natural is None and clf.best_natural is None
    assert Quality(clf.scale).describe(clf.summary.best_accuracy) == "accuracy 89.50 %"
    assert list_studies(*storage) == [line.summary for line in study_lines(*storage)]
    assert clf.summary.best_accuracy == 89.5 and clf.summary.best_speedup == pytest.approx(1 / 0.6)


def test_best_so_far_carries_the_metrics_own_unit(storage):
    storage_, _ = storage
    llm = optuna.load_study(study_name="llm", storage=storage_)
    best = best_so_far(llm, metric_scale(llm).max_drop)
    assert best.metric == "perplexity" and best.best_natural == 21.0
    assert Quality(best.scale).describe(best.best_percent, best.best_natural).startswith("perplexity 21.0 (+5.0 %")
    assert best.fastest_within == pytest.approx(2.0)
    clf = best_so_far(optuna.load_study(study_name="clf", storage=storage_), 1.0)
    assert clf.metric == "accuracy" and clf.best_percent == 89.5 and clf.best_natural is None
    assert clf.fastest_within == pytest.approx(1 / 0.6)
