from __future__ import annotations

import pytest

from autocompress.models.gqa import attention_shape, canonical_attention, honoured


@pytest.mark.parametrize(
    ("shape", "ratios", "expected"),
    [
        ((14, 2), (1.0, 1.0), (2, 7)),  # Qwen2.5-0.5B untouched
        ((14, 2), (0.5, 1.0), (2, 4)),  # 7 of 14 query heads cannot split over 2 groups: 8
        ((14, 2), (0.5, 0.5), (1, 7)),  # one whole group with all its query heads
        ((9, 3), (1 / 3, 1 / 3), (1, 3)),  # SmolLM2-135M: one group of three
        ((9, 3), (1 / 3, 1.0), (3, 1)),  # one query head in each group
        ((8, 2), (0.01, 0.01), (1, 1)),  # never below one head
        ((12, 12), (0.5, 0.25), (6, 1)),  # multi-head attention: heads decide, kv has no say
    ],
)
def test_a_ratio_becomes_a_shape_grouped_query_attention_can_take(shape, ratios, expected) -> None:
    groups, per = attention_shape(*shape, *ratios)
    assert (groups, per) == expected
    num_heads, num_kv = shape
    assert groups <= num_kv and per <= num_heads // num_kv or num_heads == num_kv


def test_canonical_ratios_are_what_the_shape_keeps_and_are_fixed_points() -> None:
    for heads in (1.0, 0.75, 0.5, 0.25):
        for kv in (1.0, 0.5):
            h, k = canonical_attention(14, 2, heads, kv)
            assert canonical_attention(14, 2, h, k) == (h, k)
            assert honoured(14, 2, h, k)
    assert not honoured(14, 2, 0.5, 1.0)
    assert canonical_attention(12, 12, 0.5, 1.0) == (0.5, 1.0)


def test_heads_that_do_not_divide_into_groups_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be split"):
        attention_shape(10, 3, 1.0)
