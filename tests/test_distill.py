"""Teacher fine-tuning and distillation recovery."""

from __future__ import annotations

import math

import pytest
import torch

from autocompress.batches import encode
from autocompress.config import RecoveryConfig, TrainConfig
from autocompress.data import Examples
from autocompress.distill import distillation, fine_tune_, kd_loss, recover_
from autocompress.evaluate import accuracy, predict_logits
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
    from autocompress.batches import length_grouped

    lengths = [len(x) for x in data.input_ids]
    batches = length_grouped(lengths, 16, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(len(data)))
    assert batches != length_grouped(lengths, 16, seed=4)  # the seed changes the batches

    def padding(groups):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in groups)

    shuffled = [list(b.tolist()) for b, _ in data.batches(16, shuffle=True, seed=3)]
    assert padding(batches) < padding(shuffled)
