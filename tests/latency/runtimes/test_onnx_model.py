"""The ONNX form of a model with early exits: one graph per stage, run stage by stage by ONNX Runtime."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import tiny_bert

from autocompress.ops.exits import EarlyExit
from autocompress.schema.plan import CompressionPlan

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

NAMES = ["input_ids", "token_type_ids", "attention_mask"]


def _batch(n: int, length: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 30, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, length - 3:] = 0  # padded rows: the mask travels from stage to stage
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}


def _plan(layers: int, int8: set[int] = frozenset()) -> CompressionPlan:
    data = CompressionPlan.uniform(layers).to_dict()
    for i in int8:
        data["layers"][i]["bits"] = 8
    return CompressionPlan.from_dict(data)


def _exits_model(threshold: float, pooling: str = "first") -> EarlyExit:
    model = EarlyExit(tiny_bert(layers=4).eval(), [0, 2], threshold=threshold, pooling=pooling).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # heads that disagree with each other, so exits change answers
        for head in model.heads:
            for p in head.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_stages_of_a_model_with_exits_give_its_logits_batched_and_alone(tmp_path, pooling: str) -> None:
    from autocompress.latency.runtimes.onnx_model import OnnxExitRunner, export_onnx

    model = _exits_model(threshold=0.6, pooling=pooling)
    batch = _batch(6)
    with torch.inference_mode():  # a threshold between the first exit's confidences: some inputs go on
        first = model.exit_logits(**batch)[0][0].softmax(-1).max(-1).values.sort().values
    model.threshold = float(first[2:4].mean())
    facts = export_onnx(model, _plan(4), tmp_path / "model.onnx", NAMES)
    assert [p.name for p in facts.stages] == ["model.stage0.onnx", "model.stage1.onnx", "model.stage2.onnx"]
    assert not (tmp_path / "model.onnx").exists() and all(p.exists() for p in facts.stages)
    assert facts.to_dict()["stages"] == [p.name for p in facts.stages] and facts.to_dict()["exit_threshold"] == model.threshold
    runner = facts.runner()
    assert isinstance(runner, OnnxExitRunner)
    with torch.inference_mode():
        want = model(**batch).logits
        want_alone = [model(**{k: v[i : i + 1] for k, v in batch.items()}).logits for i in range(6)]
    got = torch.from_numpy(runner.run(runner.feed(batch)))
    assert torch.allclose(got, want, atol=1e-4)
    taken = []
    for i in range(6):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        with torch.inference_mode():
            model(**one)
        alone = torch.from_numpy(runner.run(runner.feed(one)))
        assert torch.allclose(alone, want_alone[i], atol=1e-4)
        assert runner.last_exit == model.last_exit
        taken.append(runner.last_exit)
    assert len(set(taken)) > 1, "the test needs inputs that leave at different exits"


def test_a_batch_of_one_runs_only_the_stages_it_needs(tmp_path) -> None:
    from autocompress.latency.runtimes.onnx_model import export_onnx

    model = _exits_model(threshold=0.0001)  # every input is confident at the first exit
    runner = export_onnx(model, _plan(4), tmp_path / "m.onnx", NAMES).runner()
    calls = []
    for session in runner.later:
        run = session.run
        session_calls = calls
        session.run = lambda *a, _run=run, **k: (session_calls.append(1), _run(*a, **k))[1]
    one = {k: v[:1] for k, v in _batch(1).items()}
    runner.run(runner.feed(one))
    assert runner.last_exit == 0 and calls == []
    runner.threshold = 1.01  # never confident: every stage runs and the model's own head answers
    out = runner.run(runner.feed(one))
    assert runner.last_exit == 2 and len(calls) == 2
    with torch.inference_mode():
        assert np.allclose(out, model.model(**one).logits.numpy(), atol=1e-4)


def test_each_stage_quantises_its_own_int8_layers(tmp_path) -> None:
    import onnx

    from autocompress.latency.runtimes.onnx_model import export_onnx

    model = _exits_model(threshold=0.6)
    facts = export_onnx(model, _plan(4, int8={1, 3}), tmp_path / "m.onnx", NAMES)
    per_stage = [sum(n.op_type == "MatMulInteger" for n in onnx.load(str(p)).graph.node) for p in facts.stages]
    # stage 0 holds layer 0 (float), stage 1 layers 1-2 (layer 1 int8), stage 2 layer 3 (int8): 6 MatMuls each
    assert per_stage == [0, 6, 6] and facts.int8_matmuls == 12
    with torch.inference_mode():
        batch = _batch(6)
        want = model(**batch).logits
    runner = facts.runner()
    got = torch.from_numpy(runner.run(runner.feed(batch)))
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.8  # int8 rounds differently, not wildly


def test_a_kept_vocabulary_and_int8_embeddings_export_as_they_run(tmp_path) -> None:
    import onnx

    from autocompress.latency.runtimes.onnx_model import export_onnx
    from autocompress.ops import apply_bits_
    from autocompress.ops.vocab import choose_vocabulary, prune_vocabulary_, token_counts

    student = tiny_bert(layers=2).eval()
    vocab = int(student.config.vocab_size)
    prune_vocabulary_(student, choose_vocabulary(token_counts([list(range(0, vocab, 2))], vocab), 1, [0, 1, 2, 3], 1))
    data = _plan(2).to_dict()
    data.update(embedding_bits=8, vocab_min_count=1)
    plan = CompressionPlan.from_dict(data)
    facts = export_onnx(student, plan, tmp_path / "m.onnx", NAMES)
    graph = onnx.load(str(facts.path)).graph
    assert any(i.data_type == onnx.TensorProto.UINT8 for i in graph.initializer)  # the 8-bit codes ship as such
    runner = facts.runner()
    model = copy.deepcopy(student)
    apply_bits_(model, plan)
    batch = _batch(5)
    batch["input_ids"][:, 1] = 7  # an odd id: its row was dropped, it reads as [UNK]
    with torch.inference_mode():
        want = model(**batch).logits
    assert torch.allclose(torch.from_numpy(runner.run(runner.feed(batch))), want, atol=1e-4)


def test_a_layer_shared_by_two_positions_exports_once_with_its_int8_matmuls(lively_bert, tmp_path):
    pytest.importorskip("onnxruntime")
    import copy

    from autocompress.tasks.batches import Encoded
    from autocompress.tasks.evaluate import predict_logits
    from autocompress.latency.runtimes.onnx_model import export_onnx
    from autocompress.schema.plan import CompressionPlan
    from autocompress.ops import apply_structure_

    raw = CompressionPlan.uniform(4, bits=8).to_dict()
    raw["share"] = [[0, 1], [2, 3]]
    plan = CompressionPlan.from_dict(raw)
    student = copy.deepcopy(lively_bert(layers=4)).eval()
    apply_structure_(student, plan)
    facts = export_onnx(student, plan, tmp_path / "m.onnx", ["input_ids", "attention_mask"])
    assert facts.int8_matmuls >= 12  # the two shared layers' six weight products each, at least once
    alone = export_onnx(lively_bert(layers=4).eval(), CompressionPlan.uniform(4, bits=8), tmp_path / "a.onnx",
                        ["input_ids", "attention_mask"])
    import onnx

    def weights(f) -> int:
        return sum(int(np.prod(i.dims)) for i in onnx.load(str(f.path)).graph.initializer if len(i.dims) == 2)

    assert weights(facts) < 0.75 * weights(alone)  # the shared layers' weights are stored once (half the layers')
    g = torch.Generator().manual_seed(0)
    data = Encoded(input_ids=[torch.randint(5, 30, (7,), generator=g).tolist() for _ in range(6)], token_type_ids=None,
                   labels=torch.zeros(6, dtype=torch.long), pad_id=0)
    reference = copy.deepcopy(student)
    from autocompress.ops import apply_bits_

    apply_bits_(reference, plan)
    assert torch.allclose(facts.runner(1).logits(data), predict_logits(reference, data), atol=0.5)
