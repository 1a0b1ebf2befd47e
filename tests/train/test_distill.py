"""Teacher fine-tuning and distillation recovery."""

from __future__ import annotations

import math

import pytest
import torch

from autocompress.tasks.batches import encode
from autocompress.schema.config import RecoveryConfig, TrainConfig
from autocompress.tasks.data import Examples
from autocompress.tasks.classification import kd_loss
from autocompress.train.distill import distillation, fine_tune_, recover_
from autocompress.tasks.evaluate import accuracy, predict_logits
from conftest import sentiment_rows, tiny_bert


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    t = torch.tensor([[1.0, 1.5, 0.0], [-1.0, 2.0, 0.5]])
    y = torch.tensor([0, 2])
    T, a = 2.0, 0.7
    total = 0.0
    for i in range(2):
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [p / sum(ps) for p in ps]
        pt = [p / sum(pt) for p in pt]
        kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))  # KL(teacher || student)
        logits = s[i].tolist()
        ce = -logits[y[i]] + math.log(sum(math.exp(v) for v in logits))
        total += a * T * T * kl + (1 - a) * ce
    assert kd_loss(s, t, y, T, a).item() == pytest.approx(total / 2, rel=1e-5)


def test_kd_loss_extremes():
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert kd_loss(t, t, y, 3.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)  # student equals teacher
    ce = torch.nn.functional.cross_entropy(s, y)
    assert kd_loss(s, t, y, 3.0, 0.0).item() == pytest.approx(ce.item(), rel=1e-6)  # hard labels only


@pytest.fixture(scope="module")
def data(tiny_model_dir):
    from transformers import AutoTokenizer

    names = ["negative", "neutral", "positive"]
    rows = sentiment_rows(240, seed=5)
    ex = Examples([r["sentence"] for r in rows], [names.index(r["sentiment"]) for r in rows])
    return encode(AutoTokenizer.from_pretrained(tiny_model_dir), ex, 16)


def test_fine_tuning_learns_the_task(data):
    model = tiny_bert()
    before = accuracy(predict_logits(model, data), data.labels).value
    fine_tune_(model, data, TrainConfig(epochs=8.0, learning_rate=1e-3, batch_size=16))
    after = accuracy(predict_logits(model, data), data.labels).value
    assert after > max(0.6, before + 0.2)
    assert not model.training and next(model.parameters()).device.type == "cpu"


def test_recovery_pulls_the_student_toward_the_teacher(data):
    teacher = tiny_bert(seed=1)
    fine_tune_(teacher, data, TrainConfig(epochs=8.0, learning_rate=1e-3, batch_size=16))
    t_logits = predict_logits(teacher, data)
    student = tiny_bert(seed=2, layers=2)

    def gap() -> float:
        return (predict_logits(student, data).softmax(-1) - t_logits.softmax(-1)).abs().mean().item()

    before = gap()
    losses = []
    # a randomly initialised student: its word embeddings must learn too
    recover_(student, t_logits, data, RecoveryConfig(epochs=10.0, learning_rate=3e-3, alpha=1.0,
                                                     freeze_word_embeddings=False),
             progress=lambda step, total, loss: losses.append(loss))
    assert gap() < 0.5 * before
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="teacher logits"):
        recover_(student, t_logits[:5], data, RecoveryConfig(epochs=1.0))


def test_frozen_word_embeddings_stay_as_they_were_and_the_rest_trains(data):
    teacher = tiny_bert(seed=1)
    t_logits = predict_logits(teacher, data)
    student = tiny_bert(seed=2, layers=2)
    table = student.get_input_embeddings().weight.detach().clone()
    layer = student.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    recover_(student, t_logits, data, RecoveryConfig(epochs=1.0, learning_rate=3e-3))
    assert torch.equal(student.get_input_embeddings().weight, table)
    assert student.get_input_embeddings().weight.requires_grad  # frozen for the run only
    assert not torch.equal(student.bert.encoder.layer[0].attention.self.query.weight, layer)


@pytest.mark.parametrize("group", [False, True])
def test_a_run_stopped_part_way_and_finished_equals_one_run(data, group):
    teacher = tiny_bert(seed=1)
    t_logits = predict_logits(teacher, data)
    cfg = RecoveryConfig(epochs=2.0, learning_rate=3e-3, group_by_length=group)
    whole, parts = tiny_bert(seed=2, layers=2), tiny_bert(seed=2, layers=2)
    recover_(whole, t_logits, data, cfg)
    run = distillation(parts, t_logits, data, cfg)
    run.run_to(7)
    torch.rand(3)  # what happens between the rungs draws from the same generator
    predict_logits(parts, data)
    run.run_to(run.total_steps)
    for a, b in zip(whole.state_dict().values(), parts.state_dict().values()):
        assert torch.equal(a, b)
    assert run.done and run.step == run.total_steps == 2 * math.ceil(len(data) / cfg.batch_size)


def test_length_grouped_batches_use_every_example_once_with_less_padding(data):
    from autocompress.tasks.batches import length_grouped

    lengths = [len(x) for x in data.input_ids]
    batches = length_grouped(lengths, 16, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(len(data)))
    assert batches != length_grouped(lengths, 16, seed=4)  # the seed changes the batches

    def padding(groups):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in groups)

    shuffled = [list(b.tolist()) for b, _ in data.batches(16, shuffle=True, seed=3)]
    assert padding(batches) < padding(shuffled)


def test_each_kept_layer_is_distilled_toward_what_the_next_kept_layer_reads():
    from autocompress.train.distill import hidden_targets

    assert hidden_targets([0, 1, 2, 3, 4, 5], 6) == [1, 2, 3, 4, 5, 6]  # full depth: each layer's own output
    assert hidden_targets([0, 2, 4], 6) == [2, 4, 6]  # layer 0 absorbs layer 1, layer 4 absorbs layer 5
    assert hidden_targets([0, 1, 2], 6) == [1, 2, 6]  # the last kept layer stands for all that followed


def test_teacher_states_are_each_examples_hidden_states_without_padding(data):
    from autocompress.train.distill import teacher_states

    teacher = tiny_bert(seed=1).eval()
    states = teacher_states(teacher, data, [2, 4], batch_size=7)
    assert set(states.layers) == {2, 4} and states.num_layers == 4
    idx, inputs = next(data.batches(5, shuffle=True, seed=1))
    with torch.no_grad():
        want = teacher(**inputs, output_hidden_states=True).hidden_states
    width = inputs["input_ids"].shape[1]
    for layer in (2, 4):
        got = states.batch(layer, idx, width)
        mask = inputs["attention_mask"].bool()
        assert torch.allclose(got[mask], want[layer][mask], atol=2e-2)  # half precision
        assert not got[~mask].any()  # zero past each example's end
    assert states.nbytes == 2 * sum(len(x) for x in data.input_ids) * 32 * 2


def test_hidden_loss_counts_real_tokens_only():
    from autocompress.train.distill import hidden_loss

    s, t = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    want = ((s - t) ** 2)[mask.bool()].mean()
    assert hidden_loss([s], [t], mask).item() == pytest.approx(want.item(), rel=1e-5)
    noise = t.clone()
    noise[0, 3:] += 100.0  # padding positions do not count
    assert hidden_loss([s], [noise], mask).item() == pytest.approx(want.item(), rel=1e-5)
    assert hidden_loss([t, s], [t, t], mask).item() == pytest.approx(want.item() / 2, rel=1e-5)


def test_hidden_state_distillation_pulls_kept_layers_toward_the_teacher_states(data, lively_bert):
    import copy

    from autocompress.train.distill import hidden_targets, teacher_states
    from autocompress.schema.plan import CompressionPlan
    from autocompress.ops.importance import unit_importance
    from autocompress.ops import Selection, apply_structure_

    teacher = lively_bert(seed=1, layers=4).eval()  # layers that change the states a lot
    t_logits = predict_logits(teacher, data)
    states = teacher_states(teacher, data, range(1, 5))
    plan = CompressionPlan.uniform(4, keep=[0, 2])
    importance = unit_importance(teacher, "magnitude", data.head(16))

    def student():
        s = copy.deepcopy(teacher)
        apply_structure_(s, plan, Selection(importance=importance))
        return s.eval()

    def gap(model) -> float:
        total = 0.0
        for idx, inputs in data.batches(32):
            with torch.no_grad():
                hs = model(**inputs, output_hidden_states=True).hidden_states[1:]
            mask = inputs["attention_mask"].bool()
            width = inputs["input_ids"].shape[1]
            for h, layer in zip(hs, hidden_targets(plan.kept_layers, 4)):
                total += ((h - states.batch(layer, idx, width)) ** 2)[mask].mean().item()
        return total

    cfg = RecoveryConfig(epochs=3.0, learning_rate=1e-3)
    logits_only, with_states = student(), student()
    before = gap(logits_only)
    recover_(logits_only, t_logits, data, cfg)
    distillation(with_states, t_logits, data, cfg.model_copy(update={"hidden_weight": 1.0}),
                 states=states, kept=plan.kept_layers).run_to(10**9)
    assert gap(with_states) < 0.7 * before
    assert gap(with_states) < gap(logits_only)
    with pytest.raises(ValueError, match="teacher's states"):
        distillation(student(), t_logits, data, cfg.model_copy(update={"hidden_weight": 1.0}))
    with pytest.raises(ValueError, match="lack layers"):
        distillation(student(), t_logits, data, cfg.model_copy(update={"hidden_weight": 1.0}),
                     states=teacher_states(teacher, data, [2]), kept=plan.kept_layers)
