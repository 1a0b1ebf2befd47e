from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from autocompress.tasks.batches import Encoded
from autocompress.tasks.causal_lm import (
    COLUMNS,
    TOP_K,
    CausalLM,
    lm_distillation_loss,
    lm_outputs,
    next_token_loss,
)


def _model(seed: int = 0, vocab: int = 64) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      initializer_range=0.3)  # peaked distributions, unlike near-uniform small weights
    return LlamaForCausalLM(cfg).eval()


def _docs(n: int = 12, length: int = 16, vocab: int = 64, seed: int = 0) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(4, vocab, (int(torch.randint(3, length + 1, (1,), generator=g)),), generator=g).tolist()
           for _ in range(n)]
    labels = torch.full((n, length), -100)
    for i, row in enumerate(ids):
        labels[i, : len(row)] = torch.tensor(row)
    return Encoded(ids, None, labels, 0)


def _nll(model: LlamaForCausalLM, data: Encoded) -> tuple[float, int]:
    total, count = 0.0, 0
    with torch.no_grad():
        for row in data.input_ids:
            ids = torch.tensor([row])
            logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            total -= logp.gather(-1, ids[0, 1:, None]).sum().item()
            count += len(row) - 1
    return total, count


def test_perplexity_is_the_exponent_of_the_mean_next_token_loss_and_relative_to_the_teacher() -> None:
    teacher, student, data = _model(0), _model(1), _docs()
    ref = lm_outputs(teacher, data)
    assert ref.shape == (len(data), 16, COLUMNS)
    kind = CausalLM()
    own = kind.metric("perplexity", ref, data, ref)
    t_nll, n = _nll(teacher, data)
    assert own.value == pytest.approx(1.0) and own.natural == pytest.approx(math.exp(t_nll / n), rel=1e-4)
    out = lm_outputs(student, data, ref)
    m = kind.metric("perplexity", out, data, ref)
    s_nll, _ = _nll(student, data)
    assert m.natural == pytest.approx(math.exp(s_nll / n), rel=1e-4)
    assert m.value == pytest.approx(math.exp((t_nll - s_nll) / n), rel=1e-4)
    assert m.ci_low <= m.value <= m.ci_high and m.n == len(data)
    assert m.natural_low <= m.natural <= m.natural_high and m.teacher_natural == pytest.approx(own.natural)


def test_next_token_accuracy_counts_the_likeliest_token_at_every_real_position() -> None:
    model, data = _model(0), _docs()
    out = lm_outputs(model, data)
    hits = total = 0
    with torch.no_grad():
        for row in data.input_ids:
            ids = torch.tensor([row])
            pred = model(input_ids=ids).logits[0, :-1].argmax(-1)
            hits += int((pred == ids[0, 1:]).sum())
            total += len(row) - 1
    m = CausalLM().metric("next_token_accuracy", out, data)
    assert m.value == pytest.approx(hits / total)
    assert CausalLM().accuracy(out, data).value == pytest.approx(hits / total)


def test_kl_is_zero_for_the_teacher_and_positive_for_another_model() -> None:
    teacher, student, data = _model(0), _model(1), _docs()
    ref = lm_outputs(teacher, data)
    kind = CausalLM()
    assert kind.metric("kl", ref, data, ref).natural == pytest.approx(0.0, abs=1e-6)
    m = kind.metric("kl", lm_outputs(student, data, ref), data, ref)
    assert m.natural > 0 and m.value == pytest.approx(math.exp(-m.natural))
    assert kind.agreement(ref, ref) == 1.0 and 0 <= kind.agreement(lm_outputs(student, data, ref), ref) < 1


def test_metrics_compared_with_the_teacher_need_its_outputs() -> None:
    data = _docs()
    with pytest.raises(ValueError, match="reference"):
        CausalLM().metric("perplexity", lm_outputs(_model(0), data), data)


def test_distillation_loss_is_the_next_token_loss_at_alpha_zero_and_zero_kl_against_itself() -> None:
    teacher, data = _model(0), _docs()
    ref = lm_outputs(teacher, data)
    idx, inputs = next(data.batches(4))
    logits = teacher(**inputs).logits
    width = logits.shape[1]
    hard = lm_distillation_loss(logits, ref[idx], data.labels[idx], 2.0, 0.0)
    assert hard.item() == pytest.approx(next_token_loss(logits, data.labels[idx]).item(), rel=1e-5)
    soft = lm_distillation_loss(logits, ref[idx], data.labels[idx], 1.0, 1.0)
    assert soft.item() == pytest.approx(0.0, abs=1e-5)
    other = lm_distillation_loss(_model(1)(**inputs).logits, ref[idx], data.labels[idx], 1.0, 1.0)
    assert other.item() > 0.1
    assert ref[idx][:, : width - 1, 3 + TOP_K :].max() < 64


def test_distilling_lowers_the_kl_to_the_teacher() -> None:
    from autocompress.schema.config import RecoveryConfig
    from autocompress.train.distill import distillation

    teacher, student, data = _model(0), _model(1), _docs(24)
    ref = lm_outputs(teacher, data)
    kind = CausalLM()
    before = kind.metric("kl", lm_outputs(student, data, ref), data, ref).natural
    cfg = RecoveryConfig(epochs=8.0, learning_rate=3e-3, batch_size=8, temperature=1.0, alpha=0.9,
                         freeze_word_embeddings=False, depth_scaled=False)
    run = distillation(student, ref, data, cfg, output_loss=kind.distillation_loss)
    run.run_to(run.total_steps)
    after = kind.metric("kl", lm_outputs(student, data, ref), data, ref).natural
    assert after < 0.7 * before


def test_outputs_of_a_model_with_a_quantised_head_are_computed() -> None:
    from autocompress.ops.weight_only import quantize_weight_only_named_

    model, data = _model(0), _docs()
    ref = lm_outputs(model, data)
    quantize_weight_only_named_(model, ["lm_head"], 8)
    m = CausalLM().metric("perplexity", lm_outputs(model, data, ref), data, ref)
    assert 0.9 < m.value < 1.1


class _Words:
    """A tokenizer of space-separated integers (token ids), with a beginning-of-text token 1."""

    pad_token_id = 0
    eos_token_id = 2

    def __call__(self, texts, truncation=False, max_length=None, padding=False):
        if isinstance(texts, str):
            return {"input_ids": [1, *map(int, texts.split())]}
        rows = [[1, *map(int, t.split())] for t in texts]
        return {"input_ids": [r[:max_length] if truncation else r for r in rows]}


def test_training_windows_cover_each_document_in_order_first_windows_first() -> None:
    from autocompress.tasks.causal_lm import encode_documents
    from autocompress.tasks.data import Examples

    texts = [" ".join(str(10 + i) for i in range(n)) for n in (9, 3, 20)]  # 10, 4 and 21 tokens with the first
    examples = Examples(texts, [0, 0, 0])
    one = encode_documents(_Words(), examples, 4)
    assert one.input_ids == [[1, 10, 11, 12], [1, 10, 11, 12], [1, 10, 11, 12]]
    many = encode_documents(_Words(), examples, 4, windows=3)
    # every document's first window, then every second one, then third: no window of fewer than 2 tokens
    assert many.input_ids == [[1, 10, 11, 12], [1, 10, 11, 12], [1, 10, 11, 12],
                              [13, 14, 15, 16], [13, 14, 15, 16],
                              [17, 18], [17, 18, 19, 20]]
    assert many.labels.shape == (7, 4) and many.labels[5].tolist() == [17, 18, -100, -100]
    assert many.head(3).input_ids == one.input_ids  # the first rows are those one window gives
    # windows stop at the count asked for, however long the document
    assert len(encode_documents(_Words(), Examples(["5 " * 100], [0]), 4, windows=2)) == 2


def test_a_choice_is_scored_on_its_own_tokens_after_its_context() -> None:
    from autocompress.tasks.causal_lm import encode_choices
    from autocompress.tasks.data import Examples

    examples = Examples(["5 6 7", "5 6 7", "8"], [0, 0, 1], ["20 21", "30", "40 41 42"])
    enc = encode_choices(_Words(), examples, 6)
    assert enc.input_ids == [[1, 5, 6, 7, 20, 21], [1, 5, 6, 7, 30], [1, 8, 40, 41, 42]]
    assert enc.labels[0].tolist() == [-100, -100, -100, -100, 20, 21]
    assert enc.labels[2].tolist() == [-100, -100, 40, 41, 42, -100]
    assert enc.groups == (0, 0, 1) and enc.head(2).groups == (0, 0)
    assert enc.sizes == (6, 3, 9)  # " 20 21", " 30", " 40 41 42": the choice and the space before it
    # a long context loses its beginning; the choice is kept whole
    long = encode_choices(_Words(), Examples(["5 6 7 8 9 10 11"], [0], ["20 21"]), 4)
    assert long.input_ids == [[10, 11, 20, 21]] and long.labels[0].tolist() == [-100, -100, 20, 21]
    with pytest.raises(Exception, match="leaves no room for its context"):
        encode_choices(_Words(), Examples(["5"], [0], ["20 21 22 23"]), 4)


def _choice_outputs(logliks: list[float]) -> torch.Tensor:
    """Outputs whose rows' target log-probabilities sum to ``logliks`` (spread over two positions)."""
    out = torch.zeros((len(logliks), 4, COLUMNS))
    for i, ll in enumerate(logliks):
        out[i, 1, 0] = out[i, 2, 0] = ll / 2
        out[i, 1:3, 2] = 1.0
    return out


def test_multiple_choice_counts_questions_whose_right_choice_is_likeliest() -> None:
    from autocompress.tasks.causal_lm import multiple_choice

    # three questions (the right choice first in each): right, wrong, a tie (counted wrong)
    sizes = (4, 1, 1, 10, 1, 2, 2)
    data = Encoded([[1]] * 7, None, torch.zeros((7, 4), dtype=torch.long), 0, (0, 0, 0, 1, 1, 2, 2), sizes)
    outputs = _choice_outputs([-1.0, -3.0, -2.0, -5.0, -4.0, -2.0, -2.0])
    m = multiple_choice(outputs, data)
    assert m.name == "multiple_choice" and m.n == 3 and m.value == pytest.approx(1 / 3)
    assert 0.0 <= m.ci_low <= m.value <= m.ci_high <= 1.0
    assert CausalLM().metric("multiple_choice", outputs, data).value == pytest.approx(1 / 3)
    # per byte question 1's long right choice wins too (-0.5 a byte against -4): the tie still counts as wrong
    norm = CausalLM().metric("multiple_choice_norm", outputs, data)
    assert norm.name == "multiple_choice_norm" and norm.value == pytest.approx(2 / 3)
    assert multiple_choice(outputs, data, per_byte=True).value == norm.value
    with pytest.raises(ValueError, match="computed on questions"):
        multiple_choice(_choice_outputs([-1.0]), Encoded([[1]], None, torch.zeros((1, 4), dtype=torch.long), 0))
