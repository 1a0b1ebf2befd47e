"""Warm starts: an earlier study's front is queued first, what does not fit is skipped with the reason."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from autocompress import study as st
from autocompress.cli import main
from autocompress.schema.config import parse_config
from autocompress.errors import ConfigError, StudyNotFoundError
from autocompress.search.workbench import prepare
from autocompress.schema.plan import CompressionPlan
from conftest import tiny_config_dict

INT8 = CompressionPlan.uniform(4, bits=8)  # a seeded baseline: every study has it already
MIXED = CompressionPlan.model_validate(  # per-layer values no shared schedule can give
    {"layers": [{"heads": 0.5, "bits": 8}, {"ffn": 0.5}, {}, {"heads": 0.5, "ffn": 0.5, "bits": 8}]}
)
FOUR_BIT = CompressionPlan.uniform(4, bits=4)  # outside the tiny space's bit-widths


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def bench(tiny_model_dir, tiny_csv, cache):
    return prepare(parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, teacher={"epochs": 10.0})), cache)


def _trial(plan: CompressionPlan, values: list[float], drop_over_budget: float, fidelity: str = "full"):
    return optuna.trial.create_trial(
        values=values,
        params={"x": 0.0},
        distributions={"x": FloatDistribution(0.0, 1.0)},
        user_attrs={"plan": plan.to_dict(), "fidelity": fidelity},
        system_attrs={"constraints:accuracy_drop": drop_over_budget},
    )


@pytest.fixture
def source(bench, tmp_path) -> str:
    """Storage URL of a finished study 'src' whose front holds INT8, MIXED and FOUR_BIT."""
    url = f"sqlite:///{tmp_path / 'src.db'}"
    study = st.create_or_load(bench.config, st.open_storage(url), "src")
    study.add_trial(_trial(INT8, [80.0, 0.5, 50.0], -1.0))  # 0
    study.add_trial(_trial(MIXED, [79.0, 0.4, 45.0], -1.0))  # 1
    study.add_trial(_trial(FOUR_BIT, [78.0, 0.3, 30.0], -1.0))  # 2
    study.add_trial(_trial(CompressionPlan.uniform(4, heads=0.5), [70.0, 0.1, 10.0], 2.0))  # 3: infeasible
    study.add_trial(_trial(CompressionPlan.uniform(4, ffn=0.5), [75.0, 0.6, 60.0], -1.0))  # 4: dominated by 0
    return url


def test_front_plans_are_queued_and_run_as_they_were(bench, source, tmp_path):
    src = st.open_warm_start_source("src", source, bench.config)
    study = st.create_or_load(bench.config, st.open_storage(f"sqlite:///{tmp_path / 'dst.db'}"), "dst", bench)
    ws = st.warm_start(study, src, bench)
    assert ws.enqueued == (1,) and ws.present == (0,), "the int8 baseline is already queued here"
    assert list(ws.skipped) == [2] and "bit-width 4 is not among" in ws.skipped[2]
    st.run(study, bench, n_trials=5)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    warm = [t for t in done if "warm_start" in t.user_attrs]
    assert [t.user_attrs["warm_start"] for t in warm] == ["src#1"]
    assert CompressionPlan.from_dict(warm[0].user_attrs["plan"]) == MIXED
    assert warm[0].user_attrs["sampler"] == "enqueued"
    again = st.warm_start(study, src, bench)
    assert again.enqueued == () and again.present == (0, 1), "a second warm start queues nothing twice"


def test_plans_the_space_cannot_express_are_skipped_with_the_reason(bench, source, tmp_path, tiny_model_dir, tiny_csv):
    shared = parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, teacher={"epochs": 10.0},
                                           space={"schedule": "shared"}))
    bench_shared = prepare(shared, bench.teacher.cache.parent)
    study = st.create_or_load(shared, st.open_storage(f"sqlite:///{tmp_path / 'sh.db'}"), "sh", bench_shared)
    ws = st.warm_start(study, st.open_warm_start_source("src", source, shared), bench_shared)
    assert ws.enqueued == () and ws.present == (0,)
    assert "kept layers differ" in ws.skipped[1] and "bit-width 4" in ws.skipped[2]


def test_a_missing_study_or_another_base_model_is_refused(bench, source, tmp_path):
    with pytest.raises(StudyNotFoundError, match="no study named 'ghost'; studies here: src"):
        st.open_warm_start_source("ghost", source, bench.config)
    with pytest.raises(StudyNotFoundError, match="no study database"):
        st.open_warm_start_source("src", f"sqlite:///{tmp_path / 'none.db'}", bench.config)
    other = bench.config.model_copy(update={"model": bench.config.model.model_copy(update={"source": "bundled:all-MiniLM-L6-v2"})})
    st.create_or_load(other, st.open_storage(source), "minilm")
    with pytest.raises(ConfigError, match="it compresses bundled:all-MiniLM-L6-v2, this study"):
        st.open_warm_start_source("minilm", source, bench.config)


def _cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    return info.value.code or 0, capsys.readouterr().err


def test_cli_warm_start_prints_what_it_queued_and_refuses_in_one_line(
    bench, source, cache, tmp_path, tiny_model_dir, tiny_csv, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    cfg = tiny_config_dict(tiny_model_dir, tiny_csv, teacher={"epochs": 10.0}, search={"trials": 5, "sampler": "random"})
    Path("space.yaml").write_text(yaml.safe_dump(cfg))
    code, err = _cli(capsys, "run", "space.yaml", "--study", "ghostly", "--warm-start", "ghost",
                     "--warm-start-storage", source, "--cache-dir", str(cache))
    assert code == 2 and err.startswith("error:") and "no study named 'ghost'" in err
    assert not Path("studies/ghostly.db").exists(), "a refused warm start creates nothing"
    code, err = _cli(capsys, "run", "space.yaml", "--sampler", "nsga", "--cache-dir", str(cache))
    assert code == 2 and "Did you mean 'nsga2'" in err
    code, err = _cli(capsys, "run", "space.yaml", "--study", "warm", "--sampler", "tpe", "--warm-start", "src",
                     "--warm-start-storage", source, "--cache-dir", str(cache))
    assert code == 0, err
    assert "sampler tpe" in err
    assert "warm start from 'src': 1 front plans queued, 1 already here, 1 skipped\n" in err
    assert "skipped trial 2: layer 0: bit-width 4 is not among this space's choices [32, 8]" in err
    study = st.load("warm", st.open_storage("sqlite:///studies/warm.db", must_exist=True))
    samplers = [t.user_attrs.get("sampler") for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert samplers == ["enqueued"] * 5, "4 baselines and 1 warm-started plan"
