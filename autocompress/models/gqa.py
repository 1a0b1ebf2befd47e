"""Grouped-query attention: which pruned shapes it can take, and the ratios a plan may ask for.

A layer with ``H`` query heads in ``G`` key/value groups (``H / G`` query heads read each group's
keys and values) stays valid when it keeps ``g`` whole groups with the same number ``m`` of query
heads in each: ``g·m`` query heads and ``g`` key/value heads. A plan asks for a fraction ``heads``
of the query heads and a fraction ``kv`` of the groups; :func:`attention_shape` rounds those to
the nearest shape the layer can take (never failing), and :func:`canonical_attention` gives the
fractions that shape honours, so that two plans which build the same model are the same plan.

Where every head has its own keys and values (``G == H``: BERT, GPT-2) a head and its group are
one unit: ``heads`` alone decides and ``kv`` stays 1.0.
"""

from __future__ import annotations

__all__ = ["attention_shape", "canonical_attention", "honoured"]


def _check(num_heads: int, num_kv_heads: int) -> None:
    if num_heads < 1 or num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads cannot be split into {num_kv_heads} key/value groups")


def attention_shape(num_heads: int, num_kv_heads: int, heads: float, kv: float = 1.0) -> tuple[int, int]:
    """``(groups kept, query heads kept per group)`` for keep fractions ``heads`` (of the query
    heads) and ``kv`` (of the key/value groups): ``g = round(kv·G)`` and ``m = round(heads·H / g)``,
    each clamped to what the layer has and to at least one."""
    _check(num_heads, num_kv_heads)
    per_group = num_heads // num_kv_heads
    if per_group == 1:  # one head per group: the head ratio decides, kv has nothing of its own to prune
        return max(1, min(num_heads, round(heads * num_heads))), 1
    groups = max(1, min(num_kv_heads, round(kv * num_kv_heads)))
    per = max(1, min(per_group, round(heads * num_heads / groups)))
    return groups, per


def canonical_attention(num_heads: int, num_kv_heads: int, heads: float, kv: float = 1.0) -> tuple[float, float]:
    """The ``(heads, kv)`` fractions that the shape :func:`attention_shape` picks actually keeps."""
    groups, per = attention_shape(num_heads, num_kv_heads, heads, kv)
    if num_heads == num_kv_heads:
        return groups / num_heads, 1.0
    return groups * per / num_heads, groups / num_kv_heads


def honoured(num_heads: int, num_kv_heads: int, heads: float, kv: float = 1.0) -> bool:
    """True when ``(heads, kv)`` is kept exactly (within rounding of the fractions themselves)."""
    h, k = canonical_attention(num_heads, num_kv_heads, heads, kv)
    return abs(h - heads) < 1e-6 and abs(k - kv) < 1e-6
