"""CompressionPlan / LayerPlan: lossless round trips, strict validation, and the derived queries."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from autocompress.errors import PlanError
from autocompress.schema.plan import SCHEMA_VERSION, CompressionPlan, LayerPlan

PLANS = {
    "uncompressed": CompressionPlan.uniform(6),
    "int8": CompressionPlan.uniform(6, bits=8),
    "half_depth_pruned": CompressionPlan.uniform(6, heads=0.5, ffn=0.75, keep=[0, 2, 4]),
    "mixed": CompressionPlan(
        layers=(
            LayerPlan(keep=True, heads=0.25, ffn=1.0, bits=8),
            LayerPlan(keep=False),
            LayerPlan(keep=True, heads=1.0, ffn=0.5, bits=4),
            LayerPlan(keep=True, heads=0.75, ffn=0.25, bits=2),
        ),
        embedding_bits=8,
        head_bits=8,
    ),
    "one_layer": CompressionPlan(layers=(LayerPlan(heads=0.1, ffn=0.3, bits=2),)),
}


def _valid_dict(**layer0: Any) -> dict[str, Any]:
    data = CompressionPlan.uniform(3).to_dict()
    data["layers"][0].update(layer0)
    return data


@pytest.mark.parametrize("name", sorted(PLANS))
def test_dict_round_trip_is_lossless(name: str) -> None:
    plan = PLANS[name]
    data = plan.to_dict()
    assert data["schema_version"] == SCHEMA_VERSION
    assert CompressionPlan.from_dict(data) == plan


@pytest.mark.parametrize("name", sorted(PLANS))
def test_yaml_round_trip_is_lossless(name: str) -> None:
    plan = PLANS[name]
    assert CompressionPlan.from_yaml(plan.to_yaml()) == plan


def test_yaml_written_by_hand_with_integer_ratios_loads() -> None:
    # YAML users write 1 rather than 1.0; the plan must still read it as a ratio.
    text = "schema_version: 1\nlayers:\n  - {keep: true, heads: 1, ffn: 0.5, bits: 8}\n  - {keep: false}\n"
    plan = CompressionPlan.from_yaml(text)
    assert plan.layers[0] == LayerPlan(keep=True, heads=1.0, ffn=0.5, bits=8)
    assert plan.kept_layers == [0]


def test_plans_with_different_content_are_not_equal() -> None:
    assert CompressionPlan.uniform(4, bits=8) != CompressionPlan.uniform(4, bits=32)
    assert CompressionPlan.uniform(4, keep=[0, 1]) != CompressionPlan.uniform(4, keep=[0, 2])


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**CompressionPlan.uniform(2).to_dict(), "bogus": 1}, "bogus"),
        (_valid_dict(colour="red"), "layers.0.colour"),
        (_valid_dict(heads=0), "layers.0.heads"),
        (_valid_dict(heads=0.0), "layers.0.heads"),
        (_valid_dict(ffn=1.5), "layers.0.ffn"),
        (_valid_dict(bits=16), "layers.0.bits"),
        (_valid_dict(bits="8"), "layers.0.bits"),
        (_valid_dict(keep="yes"), "layers.0.keep"),
        ({**CompressionPlan.uniform(2).to_dict(), "head_bits": 4}, "head_bits"),
        ({"layers": []}, "layers"),
    ],
    ids=[
        "unknown-top-level-key",
        "unknown-layer-key",
        "ratio-zero",
        "ratio-zero-float",
        "ratio-above-one",
        "bits-16",
        "bits-as-string",
        "keep-as-string",
        "head-bits-4",
        "no-layers",
    ],
)
def test_from_dict_rejects_bad_field_and_names_it(data: dict[str, Any], field: str) -> None:
    with pytest.raises(PlanError, match=field.replace(".", r"\.")):
        CompressionPlan.from_dict(data)


def test_from_dict_rejects_a_plan_keeping_no_layer() -> None:
    data = CompressionPlan.uniform(3).to_dict()
    for layer in data["layers"]:
        layer["keep"] = False
    with pytest.raises(PlanError, match=r"layers.*keeps no layer"):
        CompressionPlan.from_dict(data)


@pytest.mark.parametrize("version", [0, 2, "1"])
def test_from_dict_rejects_unknown_schema_version(version: Any) -> None:
    data = {**CompressionPlan.uniform(2).to_dict(), "schema_version": version}
    with pytest.raises(PlanError, match="schema_version"):
        CompressionPlan.from_dict(data)


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(PlanError, match="mapping"):
        CompressionPlan.from_dict([{"keep": True}])  # type: ignore[arg-type]


def test_from_yaml_rejects_malformed_yaml_with_plan_error() -> None:
    with pytest.raises(PlanError, match="YAML"):
        CompressionPlan.from_yaml("layers: [ {keep: true\n")


def test_plan_is_frozen() -> None:
    plan = CompressionPlan.uniform(2)
    with pytest.raises(ValidationError):
        plan.head_bits = 8  # type: ignore[misc]
    with pytest.raises(ValidationError):
        plan.layers[0].bits = 8  # type: ignore[misc]


def test_kept_layers_lists_kept_indices_in_order() -> None:
    assert CompressionPlan.uniform(6).kept_layers == [0, 1, 2, 3, 4, 5]
    assert CompressionPlan.uniform(6, keep=[4, 0, 2]).kept_layers == [0, 2, 4]
    assert PLANS["mixed"].kept_layers == [0, 2, 3]
    assert PLANS["mixed"].num_layers == 4


def test_uniform_gives_dropped_layers_neutral_values() -> None:
    plan = CompressionPlan.uniform(4, heads=0.5, ffn=0.5, bits=8, keep=[1])
    assert plan.layers[1] == LayerPlan(keep=True, heads=0.5, ffn=0.5, bits=8)
    # dropped layers still carry the uniform values; what matters is that they are not kept
    assert [layer.keep for layer in plan.layers] == [False, True, False, False]


def test_simulated_is_true_only_for_fake_quantised_kept_weights() -> None:
    assert not CompressionPlan.uniform(4).simulated
    assert not CompressionPlan.uniform(4, bits=8).simulated  # int8 runs with real kernels
    assert CompressionPlan.uniform(4, bits=4).simulated
    assert CompressionPlan.uniform(4, bits=2).simulated
    # a 4-bit layer that is dropped does not make the student simulated
    dropped_low_bits = CompressionPlan(layers=(LayerPlan(), LayerPlan(keep=False, bits=4)))
    assert not dropped_low_bits.simulated
    # 8-bit embeddings are stored as 8-bit codes: real
    assert not CompressionPlan(layers=(LayerPlan(),), embedding_bits=8).simulated


def test_check_fits_rejects_another_model_depth() -> None:
    plan = CompressionPlan.uniform(4)
    plan.check_fits(4)
    with pytest.raises(PlanError, match="4 layers.*6"):
        plan.check_fits(6)


def test_describe_summarises_the_compression() -> None:
    assert CompressionPlan.uniform(6).describe() == "6/6 layers · uncompressed"
    text = CompressionPlan.uniform(6, heads=0.75, ffn=0.5, bits=8, keep=[0, 1, 2, 3]).describe()
    assert text == "4/6 layers · heads 75% · ffn 50% · int8 ×4"
    assert CompressionPlan.uniform(6, keep=[0, 2, 4]).describe() == "3/6 layers"


def test_describe_averages_over_kept_layers_only_and_marks_simulated_bits() -> None:
    text = PLANS["mixed"].describe()
    assert text.startswith("3/4 layers")
    # heads (0.25 + 1.0 + 0.75) / 3 = 67 %, ffn (1.0 + 0.5 + 0.25) / 3 = 58 %; the dropped layer is ignored
    assert "heads 67%" in text and "ffn 58%" in text
    assert "int8 ×1" in text and "4-bit (simulated) ×1" in text and "2-bit (simulated) ×1" in text


@pytest.mark.parametrize("field", ["head_bits", "embedding_bits"])
def test_describe_does_not_call_a_quantised_head_or_embedding_uncompressed(field: str) -> None:
    plan = CompressionPlan.model_validate({"layers": [{}, {}], field: 8})
    assert "uncompressed" not in plan.describe()


@pytest.mark.parametrize("value", ["0.5", True], ids=["string", "bool"])
def test_from_dict_rejects_a_ratio_of_the_wrong_type(value: Any) -> None:
    with pytest.raises(PlanError, match=r"layers\.0\.heads"):
        CompressionPlan.from_dict(_valid_dict(heads=value))


def test_exits_round_trip_and_a_plan_without_them_is_stored_as_before() -> None:
    plan = CompressionPlan.uniform(6, keep=[0, 2, 4])
    assert "exits" not in plan.to_dict()  # stored studies' plans compare equal to plans read back
    exiting = CompressionPlan.from_dict({**plan.to_dict(), "exits": {"after": [0, 2], "threshold": 0.85}})
    assert CompressionPlan.from_yaml(exiting.to_yaml()) == exiting
    assert exiting.exit_positions == [0, 1]
    assert exiting.key() != plan.key()
    assert "exits after 1, 2 @ 0.85" in exiting.describe()
    for bad, match in [({"after": [4], "threshold": 0.9}, "before the last kept"),
                       ({"after": [1], "threshold": 0.9}, "kept layers"),
                       ({"after": [2, 0], "threshold": 0.9}, "in order"),
                       ({"after": [0], "threshold": 0.0}, "greater than 0"),
                       ({"after": [0], "threshold": 1.01}, "less than or equal to 1")]:
        with pytest.raises(PlanError, match=match):
            CompressionPlan.from_dict({**plan.to_dict(), "exits": bad})
