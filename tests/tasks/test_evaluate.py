"""Metrics: accuracy with a bootstrap interval, logits in example order, and model size."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert

from autocompress.tasks.batches import Encoded
from autocompress.errors import UnknownNameError
from autocompress.tasks.evaluate import (METRICS, Metric, accuracy, bootstrap_ci, macro_f1, macro_f1_of, metric,
                                         paired_bootstrap_ci, predict_logits)
from autocompress.ops.size import model_size
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_plan, simulated_widths


def _logits_for(labels: torch.Tensor, correct: torch.Tensor, num_labels: int = 3) -> torch.Tensor:
    """Logits whose argmax is the label where ``correct`` and another class elsewhere."""
    predicted = torch.where(correct, labels, (labels + 1) % num_labels)
    return torch.nn.functional.one_hot(predicted, num_labels).float()


def test_accuracy_value_and_interval_contain_each_other() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (200,), generator=g)
    correct = torch.rand(200, generator=g) < 0.7
    acc = accuracy(_logits_for(labels, correct), labels)
    assert acc.value == pytest.approx(correct.float().mean().item())
    assert acc.n == 200
    assert acc.ci_low < acc.value < acc.ci_high
    assert acc.ci_high - acc.ci_low < 0.2  # a 95 % interval on 200 examples is a few points wide
    assert set(acc.to_dict()) == {"value", "ci_low", "ci_high", "n"}


def test_perfect_and_hopeless_predictions() -> None:
    labels = torch.tensor([0, 1, 2, 1, 0])
    perfect = accuracy(_logits_for(labels, torch.ones(5, dtype=torch.bool)), labels)
    assert (perfect.value, perfect.ci_low, perfect.ci_high) == (1.0, 1.0, 1.0)
    wrong = accuracy(_logits_for(labels, torch.zeros(5, dtype=torch.bool)), labels)
    assert (wrong.value, wrong.ci_low, wrong.ci_high) == (0.0, 0.0, 0.0)


def test_interval_narrows_with_more_examples_and_is_reproducible() -> None:
    small = torch.tensor([1, 0] * 20)
    large = torch.tensor([1, 0] * 500)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert hi_l - lo_l < hi_s - lo_s
    assert lo_l < 0.5 < hi_l
    assert bootstrap_ci(small, seed=0) == (lo_s, hi_s)


def test_a_paired_interval_sees_a_small_difference_that_two_separate_intervals_hide() -> None:
    teacher = (torch.arange(3000) % 4 != 0).float()  # 75 % right
    student = teacher.clone()
    student[torch.arange(1, 3000, 40)] = 0.0  # also wrong on 75 examples the teacher gets right: 2.5 points
    lo, hi = paired_bootstrap_ci(teacher, student)
    assert 0.0 < lo <= (teacher.mean() - student.mean()).item() <= hi  # the drop is real, not noise
    (t_lo, _), (_, s_hi) = bootstrap_ci(teacher), bootstrap_ci(student)
    assert t_lo < s_hi  # separately, the two accuracies' intervals overlap
    assert paired_bootstrap_ci(teacher, teacher) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap_ci(teacher, student[:-1])


def test_predict_logits_returns_examples_in_their_original_order() -> None:
    model = tiny_bert(layers=2)
    # different lengths so that length-sorted batching reorders them
    ids = [[2, 5, 6, 7, 8, 9, 3], [2, 10, 3], [2, 11, 12, 13, 3], [2, 14, 15, 3], [2, 16, 17, 18, 19, 20, 21, 3]]
    data = Encoded(input_ids=ids, token_type_ids=None, labels=torch.zeros(len(ids), dtype=torch.long), pad_id=0)
    got = predict_logits(model, data, batch_size=2)
    assert got.shape == (5, 3)
    with torch.no_grad():
        one_by_one = torch.cat([model(input_ids=torch.tensor([row])).logits for row in ids])
    assert torch.allclose(got, one_by_one, atol=1e-5)


def test_int8_model_is_smaller_but_has_the_same_parameter_count() -> None:
    model = tiny_bert(layers=4, hidden=64, ffn=128)
    int8 = apply_plan(model, CompressionPlan.uniform(4, bits=8))
    full, small = model_size(model), model_size(int8)
    assert small.serialized_bytes < 0.8 * full.serialized_bytes
    assert small.params == full.params  # packed int8 weights are still counted as parameters
    assert full.effective_bytes == full.serialized_bytes  # nothing simulated
    assert small.megabytes == small.shipped_bytes / 1e6  # the objective: bytes as export writes them
    assert small.shipped_bytes < 0.5 * full.shipped_bytes  # int8 weights stored as int8


def test_pruned_model_has_fewer_parameters_and_bytes() -> None:
    model = tiny_bert(layers=4)
    pruned = apply_plan(model, CompressionPlan.uniform(4, heads=0.5, ffn=0.5))
    assert model_size(pruned).params < model_size(model).params
    assert model_size(pruned).serialized_bytes < model_size(model).serialized_bytes


@pytest.mark.parametrize("bits", [4, 2])
def test_simulated_bits_are_counted_at_their_width(bits: int) -> None:
    model = tiny_bert(layers=3)
    plan = CompressionPlan.uniform(3, bits=bits, keep=[0, 2])
    student = apply_plan(model, plan)
    widths = simulated_widths(student, plan)
    size = model_size(student, widths)
    assert size.serialized_bytes == model_size(student).serialized_bytes  # stored as float32 either way
    linears = [m for m in student.bert.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 * 6
    float_bytes = sum(m.weight.numel() * 4 for m in linears)
    packed_bytes = sum((m.weight.numel() * bits + 7) // 8 + m.weight.shape[0] * 8 for m in linears)
    assert size.effective_bytes == size.serialized_bytes - float_bytes + packed_bytes
    assert size.effective_bytes < size.serialized_bytes


def test_fewer_simulated_bits_count_fewer_bytes() -> None:
    model = tiny_bert(layers=2)
    sizes = {}
    for bits in (4, 2):
        plan = CompressionPlan.uniform(2, bits=bits)
        student = apply_plan(model, plan)
        sizes[bits] = model_size(student, simulated_widths(student, plan)).effective_bytes
    assert sizes[2] < sizes[4] < model_size(model).effective_bytes


def test_macro_f1_matches_a_hand_computation() -> None:
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 1, 2, 1, 1, 2, 0])
    # class 0: TP 2, FP 1, FN 2 -> 4/7;  class 1: TP 2, FP 1, FN 0 -> 4/5;  class 2: TP 1, FP 1, FN 1 -> 1/2
    expected = (4 / 7 + 4 / 5 + 1 / 2) / 3
    assert macro_f1_of(predicted, labels, 3).item() == pytest.approx(expected)
    m = macro_f1(torch.nn.functional.one_hot(predicted, 3).float(), labels)
    assert (m.name, m.n) == ("macro_f1", 8) and m.value == pytest.approx(expected)
    assert m.ci_low <= m.value <= m.ci_high


def test_macro_f1_counts_only_classes_seen_in_labels_or_predictions() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    predicted = torch.tensor([0, 0, 1, 0])
    # class 2 exists in the head but in neither vector: averaged over classes 0 and 1 only
    expected = (2 * 2 / (2 * 2 + 1) + 2 * 1 / (2 * 1 + 1)) / 2
    assert macro_f1_of(predicted, labels, 3).item() == pytest.approx(expected)
    # a predicted class that never occurs counts with F1 0
    assert macro_f1_of(torch.tensor([2, 0, 1, 1]), labels, 3).item() == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_macro_f1_punishes_ignoring_a_rare_class_where_accuracy_does_not() -> None:
    labels = torch.tensor([0] * 95 + [1] * 5)
    always_zero = torch.nn.functional.one_hot(torch.zeros(100, dtype=torch.long), 2).float()
    assert accuracy(always_zero, labels).value == pytest.approx(0.95)
    assert macro_f1(always_zero, labels).value == pytest.approx((2 * 95 / (2 * 95 + 5)) / 2)


def test_batched_macro_f1_equals_row_by_row() -> None:
    g = torch.Generator().manual_seed(0)
    p, y = torch.randint(0, 4, (6, 50), generator=g), torch.randint(0, 4, (6, 50), generator=g)
    rows = macro_f1_of(p, y, 4)
    assert torch.allclose(rows, torch.stack([macro_f1_of(p[i], y[i], 4) for i in range(6)]))


def test_metrics_by_name_agree_with_config_choices() -> None:
    from autocompress.tasks.classification import SequenceClassification

    assert set(METRICS) == set(SequenceClassification.metrics)
    labels = torch.tensor([0, 1, 2, 1, 0])
    logits = _logits_for(labels, torch.tensor([True, True, False, True, True]))
    acc = metric("accuracy", logits, labels)
    assert acc.name == "accuracy" and acc.value == pytest.approx(0.8)
    assert Metric.from_dict(acc.to_dict()) == acc
    assert set(acc.to_dict()) == {"name", "value", "ci_low", "ci_high", "n"}
    with pytest.raises(UnknownNameError, match="Available: accuracy, macro_f1"):
        metric("f1", logits, labels)


def test_size_split_counts_each_part_once_and_the_rest_as_the_head() -> None:
    from conftest import tiny_bert

    model = tiny_bert(layers=2)
    size = model_size(model, parts={"embeddings": ("bert.embeddings",),
                                    "layers": ("bert.encoder.layer.0", "bert.encoder.layer.1")})
    split = size.split
    assert split is not None and set(split) == {"embeddings", "layers", "head"}
    emb = [v for k, v in model.state_dict().items() if k.startswith("bert.embeddings.")]
    assert split["embeddings"] == sum(v.numel() * v.element_size() for v in emb)
    assert split["head"] == sum(p.numel() * 4 for n, p in model.named_parameters() if n.startswith(("bert.pooler", "classifier")))
    assert sum(split.values()) < size.shipped_bytes < sum(split.values()) + 20_000  # the file's header
