"""The benchmark harness: results files merge, studies sample as real ones do, sizes are what export ships."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from autocompress.ops.size import model_size
from autocompress.schema.config import DepthSpace, SpaceConfig, parse_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search.samplers import OnePlanOnce, sampler_name
from conftest import tiny_bert, tiny_config_dict

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.append(str(BENCHMARKS))  # the scripts import their harness as a top-level module

import _common as harness  # noqa: E402

#: drops half the layers, prunes half the heads and neurons, and quantises what is left to int8
SHRUNK = CompressionPlan.uniform(4, heads=0.5, ffn=0.5, bits=8, keep=[0, 2])


def _script(name: str):
    """A benchmark script as a module (under a name of its own: ``search`` is a common word)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench(tiny_model_dir, tiny_csv, tmp_path_factory):
    cfg = parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, recovery={"epochs": 1.0, "learning_rate": 1e-3},
                                        fidelity={"enabled": False}))
    return harness.prepare(cfg, tmp_path_factory.mktemp("cache"))


# ------------------------------------------------------------------------------------------ results files
def test_writing_one_section_keeps_the_sections_other_scripts_wrote(tmp_path):
    path = tmp_path / "latency.json"
    path.write_text(json.dumps({"repeatability_cv": 0.015, "early_exit": {"met": True}, "studies": {"ratio": 1.1}}))
    harness.write_results(path, "task_lengths", {"plans": [1, 2]})
    harness.write_results(path, None, {"repeatability_cv": 0.02, "roofline": [3]})  # a script's main run
    data = json.loads(path.read_text())
    assert data["early_exit"] == {"met": True} and data["studies"] == {"ratio": 1.1}  # untouched
    assert data["repeatability_cv"] == 0.02 and data["roofline"] == [3]
    assert data["task_lengths"]["plans"] == [1, 2] and "date" in data["task_lengths"]  # stamped where it was measured


def test_a_write_that_fails_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "search.json"
    path.write_text(json.dumps({"samplers": {"gp": 1.0}}))

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(harness.os, "replace", fail)
    with pytest.raises(OSError):
        harness.write_results(path, "schedules", {"per_layer": 1.4})
    assert json.loads(path.read_text()) == {"samplers": {"gp": 1.0}}
    assert [p.name for p in tmp_path.iterdir()] == ["search.json"]  # nothing left beside it


# ------------------------------------------------------------------------------------------ sampling
def test_the_search_benchmark_samples_as_a_real_study_does_and_never_repeats_a_plan(bench):
    search = _script("search")
    space = SpaceConfig(heads=(1.0, 0.5), ffn=(1.0, 0.5), bits=(32, 8), schedule="shared",
                        depth=DepthSpace(min=2, selection=("even", "first")))
    study = search.new_study(bench, space, "random", seed=3)
    assert isinstance(study.sampler, OnePlanOnce) and sampler_name(study.sampler) == "random"

    class Figures:  # the cheap rung stood in for: a plan's figures from its depth alone
        def __init__(self) -> None:
            self.bench, self.teacher_accuracy, self.seconds = bench, 90.0, []

        def __call__(self, plan: CompressionPlan):
            kept = len(plan.kept_layers)
            return search.Figures(accuracy=80.0 + kept, ratio=kept / 4, size_ratio=kept / 4)

    run = search.run_study(Figures(), space, "random", seed=3, trials=20, budget=20.0)
    assert run["distinct_plans"] == 20  # plain random sampling repeats plans of a space this small


# ------------------------------------------------------------------------------------------ size
def test_a_reported_size_is_the_shipped_size_of_the_product_build_whatever_the_weights(bench):
    built = harness.candidate(bench, SHRUNK)  # distilled, then quantised: what a trial scores
    assert built.recovered
    shipped = model_size(built.model).shipped_bytes
    assert harness.shipped_bytes(built.model) == shipped
    assert harness.size_ratio(bench, built.model) == shipped / model_size(bench.teacher.model).shipped_bytes
    untrained = tiny_bert()  # same shapes, random weights: a size depends on the plan alone
    assert harness.size_ratio(untrained, harness.shaped(untrained, SHRUNK)) == harness.size_ratio(bench, built.model)


def test_resizing_the_operators_results_measures_every_row_again_and_keeps_the_old_figure(bench, tiny_model_dir,
                                                                                         tmp_path, monkeypatch):
    operators = _script("operators")
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    monkeypatch.setattr(operators, "MODEL", str(tiny_model_dir))
    (tmp_path / "operators.json").write_text(json.dumps({
        "candidates": [{"name": "int8", "size_ratio": 0.7}, {"name": "combined", "size_ratio": 0.6}],
        "size": [{"name": "teacher", "exported_bytes": 123}],
    }))
    operators.resize("operators")
    data = json.loads((tmp_path / "operators.json").read_text())
    plans = operators.operator_plans(4)
    teacher = model_size(bench.teacher.model).shipped_bytes
    for row in data["candidates"]:
        product = model_size(harness.candidate(bench, plans[row["name"]]).model).shipped_bytes / teacher
        assert row["size_ratio"] == pytest.approx(product, rel=1e-12)
    assert [r["size_ratio_effective_old"] for r in data["candidates"]] == [0.7, 0.6]
    assert data["size"] == [{"name": "teacher", "exported_bytes": 123}]
    assert data["resized"]["figures"]["int8"][0] == 0.7


def test_the_decoder_benchmarks_recipes_are_the_uniform_plans_it_names():
    decoder = _script("decoder")
    recipes = decoder._recipes(6)
    assert set(recipes) == {"int8 weight-only", "int4 weight-only", "int8 dynamic", "half the blocks", "half the MLP"}
    assert len(recipes["half the blocks"].kept_layers) == 3 and recipes["int8 dynamic"].weight_scheme == "dynamic"
    combined = decoder._with_bits(recipes["half the blocks"], recipes["int4 weight-only"])
    assert combined.weight_scheme == "weight_only" and combined.head_bits == 4
    assert combined.kept_layers == recipes["half the blocks"].kept_layers
    assert {combined.layers[i].bits for i in combined.kept_layers} == {4}
    # weight-only widths are computed by a kernel here; dynamic int4 would be simulated
    assert decoder._real_bits(combined) == [4]
    assert decoder._real_bits(recipes["int8 dynamic"]) == [8]


def test_the_untuned_benchmark_swaps_only_the_task_and_bounds_the_study_in_time(tmp_path):
    untuned = _script("untuned")
    base = yaml.safe_load((BENCHMARKS.parent / "search_spaces" / "tweets.yaml").read_text())
    task = untuned.TASKS["headline-pairs"]
    space = untuned.space_for(base, task.name, task.section(tmp_path), 1200.0, True, False)
    parse_config(space)  # a valid study config
    assert space["search"]["time_budget"] == 1200.0 and "refine" not in space["search"]
    assert {k: v for k, v in space.items() if k not in ("name", "task", "search")} == \
        {k: v for k, v in base.items() if k not in ("name", "task", "search")}
    assert space["task"]["text_pair_column"] == "sentence" and Path(space["task"]["source"]).is_file()
    off = untuned.space_for(base, "bbc", untuned.TASKS["bbc"].section(tmp_path), 600.0, False, False)
    assert parse_config(off).search.refine_seconds == 0 and parse_config(space).search.refine_seconds == 300
    rows = [{"drop_pt": 0.4, "speedup": 2.0}, {"drop_pt": 1.2, "speedup": 5.0}, {"drop_pt": -0.1, "speedup": 3.0}]
    assert untuned.best(rows)["speedup"] == 3.0 and untuned.best(rows, 2.0)["speedup"] == 5.0


def test_the_headline_pairs_are_balanced_and_the_same_on_every_run(tmp_path):
    tasks = _script("untuned_tasks")
    first = tasks.headline_pairs(tmp_path / "a").read_text()
    assert first == tasks.headline_pairs(tmp_path / "b").read_text()
    labels = [line.rsplit(",", 1)[-1] for line in first.splitlines()[1:]]
    assert labels.count("same") == labels.count("other") > 2000
