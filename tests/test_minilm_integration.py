"""A real study on the bundled MiniLM and tweets (minutes on 2 cores): run with `pytest -m slow`."""

from __future__ import annotations

import pytest

from autocompress import study as st
from autocompress.schema.config import parse_config
from autocompress.search.workbench import prepare
from autocompress.report import collect, render_html

pytestmark = pytest.mark.slow


def test_minilm_study_finds_faster_candidates(tmp_path):
    cfg = parse_config(
        {
            "name": "minilm-it",
            "model": {"source": "bundled:all-MiniLM-L6-v2"},
            "task": {"source": "bundled:tweets", "train_size": 600, "eval_size": 300, "max_length": 48},
            "teacher": {"epochs": 1.0, "learning_rate": 8.0e-5},
            "recovery": {"epochs": 0.0},
            "profile": {"threads": 2, "seq_len": 128, "repeats": 10, "max_repeats": 40},
            "search": {"trials": 6, "sampler": "random"},
        }
    )
    bench = prepare(cfg, tmp_path / "cache")
    assert bench.arch.num_layers == 6 and bench.arch.num_heads == 12
    assert bench.teacher.eval_accuracy.value > 0.45  # three classes: clearly above chance
    url = f"sqlite:///{tmp_path / 'it.db'}"
    study = st.create_or_load(cfg, st.open_storage(url), "minilm-it", bench)
    assert st.run(study, bench, n_trials=6).completed == 6
    speedups = {t.user_attrs.get("baseline"): t.user_attrs["speedup"] for t in study.best_trials + study.trials if t.values}
    assert speedups["int8"] > 1.2
    assert speedups["half_depth"] > 1.5
    assert 0.85 < speedups["teacher"] < 1.15  # the teacher against itself: no false speedup
    html = render_html(collect(study))
    assert "half_depth" in html

    # resume reuses the cached teacher instead of fine-tuning again
    again = prepare(cfg, tmp_path / "cache")
    assert again.teacher.from_cache and again.teacher.fine_tune_seconds == 0.0
    assert again.teacher.eval_accuracy == bench.teacher.eval_accuracy
