"""The search space: sampled plans stay inside it, and the seeded baselines are what they are named."""

from __future__ import annotations

import re
from typing import Any

import optuna
import pytest

from autocompress.schema.config import DepthSpace, SpaceConfig, parse_config
from autocompress.errors import ConfigError, PlanError
from autocompress.models.adapters import ArchInfo
from autocompress.schema.plan import CompressionPlan, LayerPlan
from autocompress.search.space import (
    SCHEDULES,
    baseline_plans,
    canonical,
    check_space,
    distributions,
    params_for_plan,
    plan_params,
    select_layers,
    suggest_plan,
)

ARCH6 = ArchInfo(family="bert", num_layers=6, num_heads=4, intermediate_size=64, hidden_size=32)


def _sampled(space: SpaceConfig, n: int, seed: int):
    """``n`` randomly drawn (params, plan) of ``space``, each checked to round-trip through its canonical params."""
    dists = distributions(space, ARCH6)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask(dists)
        plan = suggest_plan(trial, space, ARCH6)
        study.tell(trial, 0.0)
        again, params = canonical(trial.params, space, ARCH6)
        assert again == plan and suggest_plan(optuna.trial.FixedTrial(params), space, ARCH6) == plan
        yield trial.params, params, plan
RANKING = [0.9, 0.1, 0.5, 0.3, 0.8, 0.2]  # layer importance scores for the 'importance' selection


def _study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


def _sample(
    space: SpaceConfig, n: int, seed: int = 0, arch: ArchInfo = ARCH6
) -> list[tuple[dict[str, Any], CompressionPlan]]:
    study = _study(seed)
    out = []
    for _ in range(n):
        trial = study.ask()
        plan = suggest_plan(trial, space, arch, RANKING[: arch.num_layers] if arch.num_layers == 6 else None)
        out.append((dict(trial.params), plan))
        study.tell(trial, 0.0)
    return out


# ---------------------------------------------------------------------------- select_layers
def test_select_layers_even_is_the_distilbert_recipe() -> None:
    assert select_layers(6, 3, "even") == [0, 2, 4]
    assert select_layers(12, 6, "even") == [0, 2, 4, 6, 8, 10]
    assert select_layers(12, 4, "even") == [0, 3, 6, 9]
    assert select_layers(6, 6, "even") == [0, 1, 2, 3, 4, 5]
    assert select_layers(6, 1, "even") == [0]


def test_select_layers_by_importance_keeps_the_best_in_order() -> None:
    assert select_layers(6, 3, "importance", RANKING) == [0, 2, 4]
    assert select_layers(6, 2, "importance", RANKING) == [0, 4]
    with pytest.raises(ValueError, match="one score per layer"):
        select_layers(6, 2, "importance")


def test_select_layers_first_and_last() -> None:
    assert select_layers(6, 2, "first") == [0, 1]
    assert select_layers(6, 2, "last") == [4, 5]
    assert select_layers(6, 6, "last") == list(range(6))


@pytest.mark.parametrize("how", ["even", "first", "last"])
def test_select_layers_always_returns_depth_distinct_sorted_layers(how: str) -> None:
    for n in range(1, 13):
        for depth in range(1, n + 1):
            kept = select_layers(n, depth, how)
            assert len(kept) == depth, (n, depth, kept)
            assert kept == sorted(set(kept)) and 0 <= kept[0] and kept[-1] < n


@pytest.mark.parametrize(("depth", "how"), [(0, "even"), (7, "first"), (3, "middle")])
def test_select_layers_rejects_impossible_requests(depth: int, how: str) -> None:
    with pytest.raises(ValueError):
        select_layers(6, depth, how)


# ---------------------------------------------------------------------------- suggest_plan
@pytest.mark.parametrize("per_layer", [True, False])
def test_sampled_plans_are_valid_and_inside_the_space(per_layer: bool) -> None:
    space = SpaceConfig(
        heads=(1.0, 0.75, 0.5),
        ffn=(1.0, 0.25),
        bits=(32, 8, 4),
        depth=DepthSpace(min=2, max=5, selection=("even", "first", "last")),
        per_layer=per_layer,
    )
    depths = set()
    for _params, plan in _sample(space, 40, seed=1):
        assert CompressionPlan.from_dict(plan.to_dict()) == plan  # valid and storable
        assert plan.num_layers == 6
        kept = plan.kept_layers
        assert 2 <= len(kept) <= 5
        depths.add(len(kept))
        for i, layer in enumerate(plan.layers):
            if layer.keep:
                assert layer.heads in space.heads and layer.ffn in space.ffn and layer.bits in space.bits
            else:
                assert layer == LayerPlan(keep=False)  # dropped layers carry neutral values
        if not per_layer:
            assert len({(plan.layers[i].heads, plan.layers[i].ffn, plan.layers[i].bits) for i in kept}) == 1
    assert len(depths) > 1  # the depth dimension is actually searched


def test_kept_layers_follow_the_suggested_selection() -> None:
    space = SpaceConfig(depth=DepthSpace(min=1, max=5, selection=("even", "first", "last")))
    for params, plan in _sample(space, 30, seed=2):
        assert plan.kept_layers == select_layers(6, params["depth"], params["selection"])


def test_single_choice_dimensions_are_not_suggested() -> None:
    space = SpaceConfig(heads=(0.5,), ffn=(1.0,), bits=(8,), depth=DepthSpace(min=6))
    for params, plan in _sample(space, 3):
        assert params == {}
        assert plan == CompressionPlan.uniform(6, heads=0.5, bits=8)


def test_same_seed_samples_same_plans() -> None:
    space = SpaceConfig()
    first = [plan for _, plan in _sample(space, 5, seed=7)]
    again = [plan for _, plan in _sample(space, 5, seed=7)]
    other = [plan for _, plan in _sample(space, 5, seed=8)]
    assert first == again
    assert first != other


# ---------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_enqueued_baselines_yield_exactly_the_uniform_plans_they_are_named_for(schedule: str) -> None:
    space = SpaceConfig(heads=(1.0, 0.75, 0.5, 0.25), bits=(32, 8), depth=DepthSpace(min=2), schedule=schedule)
    expected = {
        "teacher": CompressionPlan.uniform(6),
        "int8": CompressionPlan.uniform(6, bits=8),
        "prune50": CompressionPlan.uniform(6, heads=0.5, ffn=0.5),
        "half_depth": CompressionPlan.uniform(6, keep=[0, 2, 4]),
    }
    baselines = baseline_plans(space, ARCH6)
    assert list(baselines) == list(expected)
    study = _study()
    for params in baselines.values():
        study.enqueue_trial(params)
    for name in baselines:
        trial = study.ask()
        plan = suggest_plan(trial, space, ARCH6, RANKING)
        assert plan == expected[name], name
        assert trial.params == baselines[name]  # nothing else was sampled at random
        study.tell(trial, 0.0)
    assert expected["half_depth"].kept_layers == [0, 2, 4]


def test_baselines_outside_the_space_are_left_out() -> None:
    space = SpaceConfig(heads=(1.0, 0.75), ffn=(1.0, 0.5), bits=(32,), depth=DepthSpace(min=4))
    assert set(baseline_plans(space, ARCH6)) == {"teacher"}
    only_first = SpaceConfig(depth=DepthSpace(min=2, selection=("first",)))
    assert "half_depth" not in baseline_plans(only_first, ARCH6)


def test_plan_params_refuses_values_outside_the_choices() -> None:
    space = SpaceConfig(heads=(1.0, 0.5), ffn=(1.0,), bits=(32, 8), depth=DepthSpace(min=2, max=4))
    kwargs = dict(selection="even", heads=1.0, ffn=1.0, bits=32)
    assert plan_params(space, ARCH6, depth=6, **kwargs) is None  # deeper than depth.max
    assert plan_params(space, ARCH6, depth=3, **{**kwargs, "heads": 0.25}) is None
    assert plan_params(space, ARCH6, depth=3, **{**kwargs, "selection": "last"}) is None
    assert plan_params(space, ARCH6, depth=3, **kwargs) is not None


# ---------------------------------------------------------------------------- check_space
def test_check_space_rejects_depth_max_larger_than_the_model() -> None:
    space = SpaceConfig(depth=DepthSpace(min=2, max=12))
    with pytest.raises(ConfigError, match="12 exceeds the model's 6 layers") as info:
        check_space(space, ARCH6, file="study.yaml")
    assert info.value.key == "space.depth.max"
    assert "study.yaml" in str(info.value)


def test_check_space_rejects_depth_min_larger_than_the_model() -> None:
    with pytest.raises(ConfigError) as info:
        check_space(SpaceConfig(depth=DepthSpace(min=8)), ARCH6)
    assert info.value.key == "space.depth.min"


def test_check_space_accepts_a_space_that_fits() -> None:
    check_space(SpaceConfig(depth=DepthSpace(min=1, max=6)), ARCH6)
    check_space(SpaceConfig(), ARCH6)


def test_head_and_embedding_bits_are_searched_when_offered() -> None:
    space = SpaceConfig(head_bits=(32, 8), embedding_bits=(32, 8), depth=DepthSpace(min=6))
    seen = {(p.head_bits, p.embedding_bits) for _, p in _sample(space, 40)}
    assert seen == {(32, 32), (32, 8), (8, 32), (8, 8)}
    assert not any(p.simulated for _, p in _sample(space, 40) if p.embedding_bits == 8)  # 8-bit codes are real
    # the uniform baselines still reproduce exactly (head and embeddings in float)
    study = _study()
    for name, params in baseline_plans(space, ARCH6).items():
        study.enqueue_trial(params)
        trial = study.ask()
        plan = suggest_plan(trial, space, ARCH6, RANKING)
        assert plan.head_bits == 32 and plan.embedding_bits == 32, name
        study.tell(trial, 0.0)
    assert baseline_plans(SpaceConfig(head_bits=(8,)), ARCH6) == {}


# ---------------------------------------------------------------------------- schedules
SCHEDULE_SPACE = dict(
    heads=(1.0, 0.75, 0.5, 0.25), ffn=(1.0, 0.5, 0.25), bits=(32, 8, 4),
    head_bits=(32, 8), depth=DepthSpace(min=2, selection=("even", "first", "last", "importance")),
)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_every_schedule_samples_valid_plans_and_the_same_dimensions_every_trial(schedule: str) -> None:
    space = SpaceConfig(**SCHEDULE_SPACE, schedule=schedule)
    names = set()
    for params, plan in _sample(space, 40, seed=3):
        assert CompressionPlan.from_dict(plan.to_dict()) == plan
        assert 2 <= len(plan.kept_layers) <= 6
        for layer in plan.layers:
            if layer.keep:
                assert layer.heads in space.heads and layer.ffn in space.ffn and layer.bits in space.bits
            else:
                assert layer == LayerPlan(keep=False)
        names.add(frozenset(params))
    # a fixed search space: Optuna's model-based samplers model only the parameters every trial has
    assert len(names) == 1, names


def test_schedules_differ_in_how_many_dimensions_the_sampler_sees() -> None:
    dims = {name: len(_sample(SpaceConfig(**SCHEDULE_SPACE, schedule=name), 1)[0][0]) for name in SCHEDULES}
    # depth, selection and head_bits in all; then 3 per layer, 3 in all, or 7 in all
    assert dims == {"per_layer": 3 + 18, "shared": 3 + 3, "linear": 3 + 7}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_params_of_a_sampled_plan_rebuild_it_through_enqueue(schedule: str) -> None:
    """What warm starts rely on: the parameters found for a plan make suggest_plan build that plan."""
    space = SpaceConfig(**SCHEDULE_SPACE, schedule=schedule)
    plans = [plan for _, plan in _sample(space, 25, seed=4)]
    study = _study(seed=99)
    queued = [params_for_plan(plan, space, ARCH6, RANKING) for plan in plans]
    for params in queued:
        study.enqueue_trial(params)
    for plan, params in zip(plans, queued, strict=True):
        trial = study.ask()
        assert suggest_plan(trial, space, ARCH6, RANKING) == plan
        assert trial.params == params, "nothing is left to the sampler"
        study.tell(trial, 0.0)


def test_linear_schedule_changes_ratios_monotonically_with_depth_and_bits_once() -> None:
    space = SpaceConfig(**SCHEDULE_SPACE, schedule="linear")
    shapes = set()
    for params, plan in _sample(space, 60, seed=5):
        layers = [plan.layers[i] for i in plan.kept_layers]
        for key in ("heads", "ffn"):
            values = [getattr(layer, key) for layer in layers]
            assert values == sorted(values) or values == sorted(values, reverse=True), (key, values)
        bits = [layer.bits for layer in layers]
        assert sum(a != b for a, b in zip(bits, bits[1:])) <= 1, bits
        full = suggest_plan(_fixed(params | {"depth": 6}), space, ARCH6, RANKING)
        assert [lp.heads for lp in full.layers][0] == params["heads_start"]
        assert [lp.heads for lp in full.layers][-1] == params["heads_end"]
        shapes.add(len(set(bits)))
    assert shapes == {1, 2}, "both uniform and switched bit-widths are sampled"


def _fixed(params: dict[str, Any]) -> optuna.trial.FixedTrial:
    return optuna.trial.FixedTrial(params)


def test_linear_interpolates_over_the_base_models_depth_and_snaps_to_the_choices() -> None:
    space = SpaceConfig(heads=(1.0, 0.75, 0.5, 0.25), ffn=(1.0, 0.25), bits=(32, 8), depth=DepthSpace(min=6),
                        schedule="linear")
    params = {"heads_start": 1.0, "heads_end": 0.25, "ffn_start": 0.25, "ffn_end": 0.25,
              "bits_first": 32, "bits_last": 8, "bits_switch": 4}
    plan = suggest_plan(_fixed(params), space, ARCH6)
    # 1.0 → 0.25 over 6 layers: 1.0, 0.85, 0.7, 0.55, 0.4, 0.25, each to the nearest choice
    assert [lp.heads for lp in plan.layers] == [1.0, 0.75, 0.75, 0.5, 0.5, 0.25]
    assert [lp.ffn for lp in plan.layers] == [0.25] * 6
    assert [lp.bits for lp in plan.layers] == [32, 32, 32, 32, 8, 8]
    assert params_for_plan(plan, space, ARCH6) == params


@pytest.mark.parametrize(
    ("schedule", "plan", "reason"),
    [
        ("linear", CompressionPlan.model_validate({"layers": [{"heads": h} for h in (1.0, 0.25, 1.0, 0.25, 1.0, 0.25)]}),
         "do not follow a line"),
        ("linear", CompressionPlan.model_validate({"layers": [{"bits": b} for b in (32, 8, 32, 8, 32, 8)]}),
         "change more than once"),
        ("shared", CompressionPlan.model_validate({"layers": [{"ffn": f} for f in (1.0, 1.0, 1.0, 0.5, 0.5, 0.5)]}),
         "kept layers differ"),
        ("per_layer", CompressionPlan.uniform(6, heads=0.6), "heads keep ratio 0.6 is not among"),
        ("per_layer", CompressionPlan.uniform(6, bits=2), "bit-width 2 is not among"),
        ("per_layer", CompressionPlan.uniform(4), "the plan has 4 layers and this model 6"),
        ("per_layer", CompressionPlan.uniform(6, keep=[1, 3]), "keeps layers [1, 3], which no layer selection"),
        ("per_layer", CompressionPlan.uniform(6, keep=[0]), "keeps 1 layers, outside this space's depth 2..6"),
    ],
)
def test_plans_a_schedule_cannot_express_are_refused_with_the_reason(
    schedule: str, plan: CompressionPlan, reason: str
) -> None:
    space = SpaceConfig(heads=(1.0, 0.75, 0.5, 0.25), ffn=(1.0, 0.5), bits=(32, 8), depth=DepthSpace(min=2),
                        schedule=schedule)
    with pytest.raises(PlanError, match=re.escape(reason)):
        params_for_plan(plan, space, ARCH6, RANKING)


def test_importance_selection_is_found_for_a_plan_that_keeps_the_most_important_layers() -> None:
    space = SpaceConfig(depth=DepthSpace(min=2, selection=("even", "importance")))
    plan = CompressionPlan.uniform(6, keep=[0, 4])  # the two layers RANKING scores highest
    assert params_for_plan(plan, space, ARCH6, RANKING)["selection"] == "importance"
    with pytest.raises(PlanError, match="no layer selection"):
        params_for_plan(plan, space, ARCH6)  # without the ranking, importance cannot be checked


def test_per_layer_flag_of_older_files_and_stored_studies_still_reads() -> None:
    assert SpaceConfig(per_layer=False).schedule == "shared"
    assert SpaceConfig(per_layer=True).schedule == "per_layer"
    assert SpaceConfig(schedule="linear").per_layer is False
    assert SpaceConfig(per_layer=False) == SpaceConfig(schedule="shared")
    stored = {"name": "old", "task": {"source": "bundled:tweets"}, "space": {"per_layer": False}}
    cfg = parse_config(stored)
    assert cfg.space.schedule == "shared"
    assert parse_config(cfg.to_dict()) == cfg, "and a config written now reads back the same"
    with pytest.raises(ConfigError, match="contradicts schedule: linear") as info:
        parse_config({**stored, "space": {"per_layer": True, "schedule": "linear"}}, file="x.yaml")
    assert info.value.key == "space"


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_canonical_params_stand_for_their_plan_and_ignore_what_it_ignores(schedule: str) -> None:
    space = SpaceConfig(**SCHEDULE_SPACE, schedule=schedule)
    seen: dict[CompressionPlan, dict[str, Any]] = {}
    for params, plan in _sample(space, 60, seed=5):
        built, canon = canonical(params, space, ARCH6, RANKING)
        assert built == plan
        assert canonical(canon, space, ARCH6, RANKING) == (plan, canon)  # a fixed point
        assert seen.setdefault(plan, canon) == canon  # one plan, one set of parameters
        assert canon.keys() == params.keys() and set(distributions(space, ARCH6, RANKING)) == set(params)


def test_parameters_of_dropped_layers_do_not_make_another_plan() -> None:
    space = SpaceConfig(**SCHEDULE_SPACE, schedule="per_layer")
    base = _sample(space, 1, seed=0)[0][0]
    half = {**base, "depth": 3, "selection": "even"}  # keeps layers 0, 2, 4
    other = {**half, "heads_1": 0.25 if half["heads_1"] != 0.25 else 1.0, "bits_5": 8 if half["bits_5"] != 8 else 32}
    assert canonical(half, space, ARCH6, RANKING) == canonical(other, space, ARCH6, RANKING)
    full = {**base, "depth": 6}
    assert canonical({**full, "selection": "first"}, space, ARCH6, RANKING)[1] == \
        canonical({**full, "selection": "importance"}, space, ARCH6, RANKING)[1]


def test_exits_are_placed_by_schedule_and_every_plan_round_trips_through_its_parameters() -> None:
    from autocompress.schema.config import ExitsSpace
    from autocompress.search.space import exit_after

    assert exit_after([0, 2, 4], "none") == ()
    assert exit_after([0, 2, 4], "middle") == (2,)  # after 2 of 3 layers
    assert exit_after([0, 1, 2, 3, 4, 5], "middle") == (2,)  # after 3 of 6
    assert exit_after([0, 2, 4], "every") == (0, 2)
    assert exit_after([3], "every") == ()  # one layer: nowhere to exit before the model's own head
    space = SpaceConfig(exits=ExitsSpace(schedule=("none", "middle", "every"), threshold=(0.8, 0.95)),
                        depth=DepthSpace(min=1, selection=("even", "first")))
    dists = distributions(space, ARCH6)
    assert {"exits", "exit_threshold"} <= set(dists)
    seen = set()
    for _, params, plan in _sampled(space, 60, seed=3):
        if plan.exits is None:  # a plan without exits stands with the first threshold: one point, not two
            assert params.get("exit_threshold") == 0.8 and params.get("exits") == "none"
        else:
            assert plan.exits.threshold in (0.8, 0.95) and set(plan.exits.after) < set(plan.kept_layers)
        seen.add(plan.exits is not None)
    assert seen == {True, False}
    assert set(baseline_plans(space, ARCH6)) >= {"int8", "prune50", "half_depth"}  # baselines stay static
    static_only = SpaceConfig()
    exiting = CompressionPlan.from_dict({**CompressionPlan.uniform(6).to_dict(), "exits": {"after": [2], "threshold": 0.9}})
    with pytest.raises(PlanError, match="offers none"):
        params_for_plan(exiting, static_only, ARCH6)
    only_every = SpaceConfig(exits=ExitsSpace(schedule=("every",), threshold=(0.9,)))
    with pytest.raises(PlanError, match="no exit schedule"):
        params_for_plan(exiting, only_every, ARCH6)


def test_a_space_that_offers_no_exits_suggests_the_same_parameters_as_before() -> None:
    assert not {"exits", "exit_threshold"} & set(distributions(SpaceConfig(), ARCH6))


def test_vocabulary_choices_are_one_parameter_and_every_plan_round_trips() -> None:
    from autocompress.schema.config import VocabularySpace

    space = SpaceConfig(vocabulary=VocabularySpace(keep=("all", "task"), min_count=(1, 3)),
                        depth=DepthSpace(min=1, selection=("even", "first")))
    dists = distributions(space, ARCH6)
    assert "vocab_min_count" in dists and list(dists["vocab_min_count"].choices) == [0, 1, 3]
    seen = set()
    for _, params, plan in _sampled(space, 30, seed=0):
        seen.add(plan.vocab_min_count)
    assert seen == {None, 1, 3}
    pruned = suggest_plan(optuna.trial.FixedTrial({**params, "vocab_min_count": 3}), space, ARCH6)
    assert "task vocabulary (≥3×)" in pruned.describe() and pruned.to_dict()["vocab_min_count"] == 3
    with pytest.raises(PlanError, match="full vocabulary"):
        params_for_plan(pruned, SpaceConfig(), ARCH6)
    assert "vocab_min_count" not in distributions(SpaceConfig(), ARCH6)
    assert "vocab_min_count" not in CompressionPlan.uniform(6).to_dict()  # stored plans keep their shape


@pytest.mark.parametrize("schedule", ["per_layer", "shared", "linear"])
def test_sharing_is_one_parameter_its_followers_take_the_leaders_values_and_plans_round_trip(schedule: str) -> None:
    from autocompress.search.space import share_groups

    space = SpaceConfig(sharing=("none", "pairs", "all"), schedule=schedule, bits=(32, 8, 4),
                        depth=DepthSpace(min=1, selection=("even", "first")))
    dists = distributions(space, ARCH6)
    assert list(dists["sharing"].choices) == ["none", "pairs", "all"]
    seen = set()
    for drawn, params, plan in _sampled(space, 40, seed=1):
        assert plan.share == (share_groups(plan.kept_layers, drawn["sharing"]) or None)
        for group in plan.share or ():
            assert len({(plan.layers[i].heads, plan.layers[i].ffn, plan.layers[i].bits) for i in group}) == 1
        seen.add(drawn["sharing"] if plan.share else "none")
    assert seen == {"none", "pairs", "all"}
    assert share_groups([0, 2, 4], "pairs") == ((0, 2),) and share_groups([1], "all") == ()
    shared = suggest_plan(optuna.trial.FixedTrial({**params, "sharing": "all", "depth": 3}), space, ARCH6)
    assert shared.share == (tuple(shared.kept_layers),)
    with pytest.raises(PlanError, match="sharing groups"):
        params_for_plan(shared, SpaceConfig(), ARCH6)
    assert "sharing" not in distributions(SpaceConfig(), ARCH6)


# ---------------------------------------------------------------------------- decoder settings
# grouped-query attention shaped like Qwen2.5-0.5B (24 layers, 14 query heads in 2 key/value groups)
# and SmolLM2-135M (30 layers, 9 query heads in 3 groups)
QWEN = ArchInfo(family="qwen2", num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=64, hidden_size=56,
                decoder=True)
SMOL = ArchInfo(family="llama", num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=64, hidden_size=36,
                decoder=True)
LLAMA = ArchInfo(family="llama", num_layers=6, num_heads=8, num_kv_heads=2, intermediate_size=64, hidden_size=32,
                 decoder=True)


def _decoder_space(arch: ArchInfo, schedule: str, **more: Any) -> SpaceConfig:
    kv = (1.0, 0.66, 0.33) if arch is SMOL else (1.0, 0.5)  # SmolLM2's thirds are rounded to whole groups
    settings: dict[str, Any] = dict(heads=(1.0, 0.75, 0.5, 0.25), kv=kv, ffn=(1.0, 0.5), bits=(32, 8, 4),
                                    head_bits=(32, 8), weight_scheme=("dynamic", "weight_only"),
                                    depth=DepthSpace(min=2, selection=("even", "first")))
    return SpaceConfig(**{**settings, **more}, schedule=schedule)


def _expected_distributions(schedule: str, n: int) -> list[tuple[str, Any]]:
    """The parameters of the default space, in the order studies made before the decoder settings have them."""
    ratios = optuna.distributions.CategoricalDistribution([1.0, 0.75, 0.5, 0.25])
    bits = optuna.distributions.CategoricalDistribution([32, 8])
    out: list[tuple[str, Any]] = [
        ("depth", optuna.distributions.IntDistribution(1, n)),
        ("selection", optuna.distributions.CategoricalDistribution(["even", "first", "importance"])),
    ]
    if schedule == "per_layer":
        out += [(f"{key}_{i}", d) for i in range(n) for key, d in (("heads", ratios), ("ffn", ratios), ("bits", bits))]
    elif schedule == "shared":
        out += [("heads", ratios), ("ffn", ratios), ("bits", bits)]
    else:
        out += [("heads_start", ratios), ("heads_end", ratios), ("ffn_start", ratios), ("ffn_end", ratios),
                ("bits_first", bits), ("bits_last", bits), ("bits_switch", optuna.distributions.IntDistribution(0, n))]
    return out


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("arch", [ARCH6, LLAMA], ids=["encoder", "decoder"])
def test_the_default_space_keeps_the_parameters_and_distributions_studies_were_made_with(
    schedule: str, arch: ArchInfo
) -> None:
    """A study made before kv and weight schemes existed resumes with the same search space."""
    dists = distributions(SpaceConfig(schedule=schedule), arch, RANKING)
    assert list(dists.items()) == _expected_distributions(schedule, 6)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_kv_groups_and_the_weight_scheme_are_searched_when_offered(schedule: str) -> None:
    space = _decoder_space(QWEN, schedule)
    names = set(distributions(space, QWEN))
    kv = {"per_layer": {f"kv_{i}" for i in range(24)}, "shared": {"kv"}, "linear": {"kv_start", "kv_end"}}[schedule]
    assert kv | {"weight_scheme", "head_bits"} <= names
    assert not {n for n in names if n.startswith("kv")} - kv
    assert list(distributions(space, QWEN)["weight_scheme"].choices) == ["dynamic", "weight_only"]
    plans = [plan for _, plan in _sample(space, 30, seed=2, arch=QWEN)]
    assert {p.weight_scheme for p in plans} == {"dynamic", "weight_only"}
    assert {lp.kv for p in plans for lp in p.layers if lp.keep} == {1.0, 0.5}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("arch", [QWEN, SMOL], ids=["qwen2.5-0.5b", "smollm2-135m"])
def test_grouped_attention_plans_round_trip_through_their_parameters(schedule: str, arch: ArchInfo) -> None:
    """suggest → plan → params → suggest gives the same plan, though several draws build one plan."""
    from autocompress.models.gqa import honoured

    space = _decoder_space(arch, schedule, sharing=("none", "pairs"))
    snapped = 0
    for drawn, params, plan in _sampled_on(space, arch, 25, seed=6):
        assert CompressionPlan.from_dict(plan.to_dict()) == plan
        assert params_for_plan(plan, space, arch) == params
        for lp in plan.layers:  # the plan records the shape the model takes, so it is honoured exactly
            assert not lp.keep or honoured(arch.num_heads, arch.num_kv_heads, lp.heads, lp.kv)
        snapped += any(lp.keep and (lp.heads not in space.heads or lp.kv not in space.kv) for lp in plan.layers)
        if plan.head_bits == 32 and all(lp.bits not in (8, 4) for lp in plan.layers if lp.keep):
            assert plan.weight_scheme == "dynamic"  # no 8- or 4-bit Linear: one model under either scheme
    assert snapped, "some draws were rounded to whole groups, and still round-trip"


def _sampled_on(space: SpaceConfig, arch: ArchInfo, n: int, seed: int):
    """``n`` drawn (params, canonical params, plan) of ``space`` on ``arch``, each checked to rebuild its plan."""
    dists = distributions(space, arch)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask(dists)
        plan = suggest_plan(trial, space, arch)
        study.tell(trial, 0.0)
        again, params = canonical(trial.params, space, arch)
        assert again == plan and canonical(params, space, arch) == (plan, params)
        assert suggest_plan(optuna.trial.FixedTrial(params), space, arch) == plan
        yield trial.params, params, plan


def test_draws_that_build_the_same_model_are_one_plan_with_one_set_of_parameters() -> None:
    space = _decoder_space(LLAMA, "shared", depth=DepthSpace(min=6))
    common = {"ffn": 1.0, "bits": 32, "head_bits": 32}
    # one group of 8 query heads holds at most 4 of them: each of these keeps one group of 4
    draws = [{**common, "heads": h, "kv": 0.5, "weight_scheme": w}
             for h in (1.0, 0.75, 0.5) for w in ("dynamic", "weight_only")]
    built = {canonical(d, space, LLAMA)[0] for d in draws}
    assert built == {CompressionPlan.uniform(6, heads=0.5, kv=0.5)}
    assert {tuple(sorted(canonical(d, space, LLAMA)[1].items())) for d in draws} == {
        tuple(sorted({**common, "heads": 0.5, "kv": 0.5, "weight_scheme": "dynamic"}.items()))}
    int8 = {**common, "bits": 8, "heads": 1.0, "kv": 1.0}
    assert canonical({**int8, "weight_scheme": "dynamic"}, space, LLAMA)[0] != \
        canonical({**int8, "weight_scheme": "weight_only"}, space, LLAMA)[0]  # quantised: the scheme matters
    two_bits = _decoder_space(LLAMA, "shared", depth=DepthSpace(min=6), bits=(32, 2))
    simulated = {canonical({**int8, "bits": 2, "weight_scheme": w}, two_bits, LLAMA)[0] for w in ("dynamic", "weight_only")}
    assert simulated == {CompressionPlan.uniform(6, bits=2)}  # 2 bits are simulated alike under either scheme


def test_encoders_record_the_heads_ratio_as_drawn() -> None:
    six_heads = ArchInfo(family="bert", num_layers=6, num_heads=6, intermediate_size=64, hidden_size=36)
    space = SpaceConfig(heads=(1.0, 0.75), depth=DepthSpace(min=6), schedule="shared")
    plan = suggest_plan(_fixed({"heads": 0.75, "ffn": 1.0, "bits": 32}), space, six_heads)
    assert plan == CompressionPlan.uniform(6, heads=0.75)  # as stored by studies before grouped-query attention


def test_plans_outside_what_the_model_or_the_space_keeps_are_refused_with_the_reason() -> None:
    space = _decoder_space(QWEN, "per_layer", weight_scheme=("dynamic",))
    with pytest.raises(PlanError, match=re.escape("heads 0.5 with kv 1 is not what this model's 14 query heads in "
                                                  "2 key/value groups of 7 keep")):
        params_for_plan(CompressionPlan.uniform(24, heads=0.5), space, QWEN)  # 7 heads in 2 groups: built as 8
    with pytest.raises(PlanError, match="this space offers dynamic"):
        params_for_plan(CompressionPlan.uniform(24, bits=8, weight_scheme="weight_only"), space, QWEN)
    with pytest.raises(PlanError, match="stands with weight_scheme dynamic"):
        params_for_plan(CompressionPlan.uniform(24, weight_scheme="weight_only"), space, QWEN)
    with pytest.raises(PlanError, match="prunes key/value groups"):
        params_for_plan(CompressionPlan.uniform(6, kv=0.5), SpaceConfig(), ARCH6)


# ---------------------------------------------------------------------------- decoder checks
@pytest.mark.parametrize("kv", [(1.0, 0.5), (0.5,)])
def test_check_space_refuses_kv_groups_on_a_model_whose_heads_have_their_own(kv: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="set space.kv: \\[1.0\\]") as info:
        check_space(SpaceConfig(kv=kv), ARCH6, file="study.yaml")
    assert info.value.key == "space.kv" and "4 heads, each with its own keys and values" in str(info.value)
    check_space(SpaceConfig(kv=(1.0, 0.5)), LLAMA)


@pytest.mark.parametrize("schemes", [("dynamic",), ("dynamic", "weight_only")])
def test_check_space_refuses_a_4_bit_head_unless_every_plan_is_weight_only(schemes: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="set space.weight_scheme: \\[weight_only\\]") as info:
        check_space(SpaceConfig(head_bits=(32, 4), weight_scheme=schemes), LLAMA)
    assert info.value.key == "space.head_bits"
    space = SpaceConfig(head_bits=(32, 8, 4), weight_scheme=("weight_only",), bits=(32, 8, 4))
    check_space(space, LLAMA)
    heads = {p.head_bits for _, p in _sample(space, 40, arch=LLAMA)}
    assert heads == {32, 8, 4}


def test_strict_refuses_heads_and_kv_pairs_the_model_cannot_keep_exactly_naming_the_ones_that_work() -> None:
    strict = SpaceConfig(heads=(1.0, 0.5), kv=(1.0,), strict=True)
    with pytest.raises(ConfigError) as info:
        check_space(strict, QWEN, file="qwen.yaml")
    assert info.value.key == "space.heads"
    assert "heads 0.5 with kv 1 asks for 7 query heads in 2 key/value group(s)" in str(info.value)
    assert "14 query heads in 2 key/value groups of 7" in str(info.value)
    assert "use heads 0.4286 or 0.5714" in str(info.value) and "space.strict: false" in str(info.value)
    check_space(strict.model_copy(update={"strict": False}), QWEN)  # rounded to the nearest shape instead

    with pytest.raises(ConfigError, match="kv 0.5 asks for 1.5 of the key/value groups .* use 0.3333 or 0.6667") as info:
        check_space(SpaceConfig(heads=(1.0,), kv=(1.0, 0.5), strict=True), SMOL)
    assert info.value.key == "space.kv"

    # every schedule can draw any heads choice with any kv choice: heads 1.0 with one of two groups cannot be kept
    with pytest.raises(ConfigError, match="heads 1 with kv 0.5 .* use heads 0.5") as info:
        check_space(SpaceConfig(heads=(1.0, 0.5), kv=(1.0, 0.5), strict=True, schedule="linear"), LLAMA)
    assert info.value.key == "space.heads"
    check_space(SpaceConfig(heads=(0.5, 0.25), kv=(1.0, 0.5), strict=True), LLAMA)

    with pytest.raises(ConfigError, match="heads 0.75 asks for 4.5 of this model's 6 heads.* use 0.6667 or 0.8333"):
        check_space(SpaceConfig(heads=(1.0, 0.75), strict=True),
                    ArchInfo(family="bert", num_layers=6, num_heads=6, intermediate_size=64, hidden_size=36))
    check_space(SpaceConfig(strict=True), ARCH6)


# ---------------------------------------------------------------------------- decoder baselines
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_decoder_baselines_add_weight_only_int8_and_int4_and_build_what_they_are_named_for(schedule: str) -> None:
    space = _decoder_space(QWEN, schedule)
    n = 24
    # 7 of 14 query heads cannot sit in 2 equal groups: prune50 keeps the 8 the model can keep
    expected = {
        "teacher": CompressionPlan.uniform(n),
        "int8": CompressionPlan.uniform(n, bits=8),
        "int8_weight_only": CompressionPlan.uniform(n, bits=8, head_bits=8, weight_scheme="weight_only"),
        "int4_weight_only": CompressionPlan.uniform(n, bits=4, weight_scheme="weight_only"),  # no 4-bit head offered
        "prune50": CompressionPlan.uniform(n, heads=8 / 14, ffn=0.5),
        "half_depth": CompressionPlan.uniform(n, keep=list(range(0, n, 2))),
    }
    baselines = baseline_plans(space, QWEN)
    assert list(baselines) == list(expected)
    study = _study()
    for params in baselines.values():
        study.enqueue_trial(params)
    for name in baselines:
        trial = study.ask()
        assert suggest_plan(trial, space, QWEN) == expected[name], name
        assert trial.params == baselines[name]
        study.tell(trial, 0.0)


def test_a_weight_only_space_seeds_weight_only_baselines_with_a_4_bit_head() -> None:
    space = SpaceConfig(bits=(32, 8, 4), head_bits=(32, 8, 4), weight_scheme=("weight_only",), depth=DepthSpace(min=6))
    baselines = baseline_plans(space, LLAMA)
    assert list(baselines) == ["teacher", "int8_weight_only", "int4_weight_only", "prune50"]  # no dynamic int8
    plans = {name: suggest_plan(_fixed(params), space, LLAMA) for name, params in baselines.items()}
    assert plans["int4_weight_only"] == CompressionPlan.uniform(6, bits=4, head_bits=4, weight_scheme="weight_only")
    assert plans["teacher"] == CompressionPlan.uniform(6)  # float: the scheme changes nothing
    encoder = SpaceConfig(bits=(32, 8), weight_scheme=("dynamic", "weight_only"), depth=DepthSpace(min=2))
    assert list(baseline_plans(encoder, ARCH6)) == ["teacher", "int8", "int8_weight_only", "prune50", "half_depth"]
