"""Teacher fine-tuning and distillation recovery."""

from __future__ import annotations

import math

import pytest
import torch

from autocompress.batches import encode
from autocompress.config import RecoveryConfig, TrainConfig
from autocompress.data import Examples
from autocompress.distill import fine_tune_, kd_loss, recover_
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
    recover_(student, t_logits, data, RecoveryConfig(epochs=10.0, learning_rate=3e-3, alpha=1.0),
             progress=lambda step, total, loss: losses.append(loss))
    assert gap() < 0.5 * before
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="teacher logits"):
        recover_(student, t_logits[:5], data, RecoveryConfig(epochs=1.0))
