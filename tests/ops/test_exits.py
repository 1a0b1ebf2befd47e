"""Early exit: heads after some layers, a batch of one stops at the first confident exit, a batch
gives each example the exit it would take alone."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_bert

from autocompress.tasks.batches import Encoded
from autocompress.errors import PlanError
from autocompress.ops.exits import EarlyExit, choose_exits
from autocompress.train.exits import ExitTraining, train_exits_
from autocompress.models.adapters import adapter_for
from autocompress.schema.plan import CompressionPlan


def _inputs(n: int = 6, length: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 30, (n, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _layers_run(model: EarlyExit, inputs: dict[str, torch.Tensor]) -> int:
    count = [0]
    handles = [layer.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
               for layer in adapter_for(model.model).layers(model.model)]
    try:
        with torch.inference_mode():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return count[0]


def test_choose_exits_takes_the_first_confident_exit_else_the_last_layer() -> None:
    sure, unsure = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.1, 0.0]])
    exits = [torch.cat([unsure, sure, unsure]), torch.cat([sure, unsure, unsure])]
    final = torch.tensor([[0.0, 1.0]] * 3)
    logits, taken = choose_exits(exits, final, threshold=0.9)
    assert taken.tolist() == [1, 0, 2]
    assert torch.equal(logits[0], sure[0]) and torch.equal(logits[1], sure[0]) and torch.equal(logits[2], final[2])


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_a_batch_of_one_stops_at_its_exit_and_agrees_with_the_batched_choice(pooling: str) -> None:
    student = tiny_bert(layers=4).eval()
    model = EarlyExit(student, [0, 2], threshold=0.5, pooling=pooling).eval()
    with torch.no_grad():  # a confident first head: every input leaves after layer 0
        model.heads[0].out.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    x = _inputs(1)
    assert _layers_run(model, x) == 1 and model.last_exit == 0
    batch = _inputs(5)
    with torch.inference_mode():
        batched = model(**batch).logits
        alone = torch.cat([model(**{k: v[i : i + 1] for k, v in batch.items()}).logits for i in range(5)])
    assert torch.allclose(batched, alone, atol=1e-5)
    model.threshold = 1.0  # nothing is that sure: every layer runs and the model's own head answers
    assert _layers_run(model, x) == 4 and model.last_exit == 2
    with torch.inference_mode():
        assert torch.allclose(model(**x).logits, student(**x).logits)


def test_a_copy_exits_on_its_own_heads() -> None:
    model = EarlyExit(tiny_bert(layers=4).eval(), [1], threshold=0.5).eval()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.heads[0].out.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    x = _inputs(1)
    assert _layers_run(twin, x) == 2 and twin.last_exit == 0
    model.threshold = 1.0
    assert _layers_run(model, x) == 4, "the original's hooks are its own"


def test_exit_positions_and_threshold_are_checked() -> None:
    student = tiny_bert(layers=4)
    for bad in ([3], [2, 1], [], [-1]):
        with pytest.raises(PlanError, match="exits must be distinct layers before the last"):
            EarlyExit(student, bad, threshold=0.9)
    for bad in (0.0, 1.5):
        with pytest.raises(PlanError, match=r"confidence in \(0, 1\]"):
            EarlyExit(student, [1], threshold=bad)


def test_training_moves_the_heads_towards_the_teacher_and_leaves_the_student_alone() -> None:
    student = tiny_bert(layers=4).eval()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    model = EarlyExit(student, [0, 1], threshold=0.9)
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(5, 30, (8,), generator=g).tolist() for _ in range(64)]
    labels = torch.tensor([int(x[0] % 3) for x in ids])  # the first token's id tells the label
    data = Encoded(ids, None, labels, 0)
    teacher_logits = torch.nn.functional.one_hot(labels, 3).float() * 6.0

    def agreement() -> float:
        with torch.inference_mode():
            exits, _ = model.exit_logits(input_ids=torch.tensor(ids), attention_mask=torch.ones(64, 8, dtype=torch.long))
        return sum((e.argmax(-1) == labels).float().mean().item() for e in exits) / len(exits)

    start = agreement()
    facts = train_exits_(model, data, teacher_logits, ExitTraining(epochs=30, learning_rate=3e-3, batch_size=16))
    assert facts["exit_steps"] == 120 and facts["exit_seconds"] > 0
    assert agreement() > max(start, 0.6)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items()), "only the heads learn"


def test_exit_predictions_give_the_models_logits_and_where_each_example_stopped() -> None:
    from autocompress.ops.exits import exit_predictions, exit_shares

    student = tiny_bert(layers=4).eval()
    model = EarlyExit(student, [0, 2], threshold=0.5).eval()
    with torch.no_grad():  # a confident first head for one class only: some examples leave early
        model.heads[0].out.weight.normal_(0, 3.0)
    x = _inputs(12)
    data = Encoded(input_ids=[row.tolist() for row in x["input_ids"]], token_type_ids=None,
                   labels=torch.zeros(12, dtype=torch.long), pad_id=0)
    logits, taken = exit_predictions(model, data)
    with torch.inference_mode():
        alone = torch.cat([model(**{k: v[i : i + 1] for k, v in x.items()}).logits for i in range(12)])
        exits = [model(**{k: v[i : i + 1] for k, v in x.items()}) and model.last_exit for i in range(12)]
    assert torch.allclose(logits, alone, atol=1e-5)
    assert taken.tolist() == exits
    shares = exit_shares(model, taken)
    assert len(shares) == 3 and sum(shares) == pytest.approx(1.0)


def test_mean_pooling_reads_only_the_real_tokens_and_old_plans_keep_the_first_token() -> None:
    from autocompress.ops.exits import pool

    state = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(state, mask, "first"), state[:, 0])
    assert torch.allclose(pool(state, mask, "mean")[0], state[0, :2].mean(0))
    assert torch.allclose(pool(state, mask, "mean")[1], state[1].mean(0))
    stored = {**CompressionPlan.uniform(4).to_dict(), "exits": {"after": [1], "threshold": 0.8}}  # as stored before pooling
    plan = CompressionPlan.from_dict(stored)
    assert plan.exits is not None and plan.exits.pooling == "first" and plan.to_dict() == stored
    mean = CompressionPlan.from_dict({**stored, "exits": {**stored["exits"], "pooling": "mean"}})
    assert mean.to_dict()["exits"]["pooling"] == "mean" and "(mean-pooled)" in mean.describe()
