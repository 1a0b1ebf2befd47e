"""The one builder: the same plan gives the same candidate, and the teacher is never touched."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from autocompress.search.build import candidate, needs_recovery, quantize_only_pass, recovery_epochs, source_of
from autocompress.schema.config import parse_config
from autocompress.errors import PlanError
from autocompress.tasks.evaluate import predict_logits
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import Selection, apply_bits_, apply_plan
from autocompress.search.workbench import prepare
from conftest import tiny_config_dict

#: drops half the layers, prunes half the heads and neurons, and quantises what is left to int8
SHRUNK = CompressionPlan.uniform(4, heads=0.5, ffn=0.5, bits=8, keep=[0, 2])
#: int8 bit-widths only: nothing for distillation to recover from
INT8_ONLY = CompressionPlan.uniform(4, bits=8)


@pytest.fixture(scope="module")
def bench(tiny_model_dir, tiny_csv, tmp_path_factory):
    cfg = parse_config(
        tiny_config_dict(
            tiny_model_dir, tiny_csv, teacher={"epochs": 10.0},
            recovery={"epochs": 1.0, "learning_rate": 1e-3, "augment": {"kind": "auto"}}
        )
    )
    return prepare(cfg, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def recovered(bench):
    """The shrunk plan, built with recovery (built once: distillation is the slow part)."""
    return candidate(bench, SHRUNK)


def _logits(model: nn.Module, bench) -> torch.Tensor:
    return predict_logits(model, bench.eval)


def test_the_same_plan_built_twice_gives_the_same_logits(bench, recovered):
    """What is exported (built again from the stored plan) is what the trial scored."""
    again = candidate(bench, SHRUNK)
    assert recovered.recovered and again.recovered
    assert torch.equal(_logits(recovered.model, bench), _logits(again.model, bench))


def test_building_leaves_the_teacher_unchanged(bench):
    before = {k: v.clone() for k, v in bench.teacher.model.state_dict().items()}
    teacher_logits = _logits(bench.teacher.model, bench)
    candidate(bench, SHRUNK)  # drops, prunes, distils and quantises a copy
    after = bench.teacher.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(_logits(bench.teacher.model, bench), teacher_logits)
    assert torch.equal(teacher_logits, bench.teacher.eval_logits)


def test_recovery_reports_what_it_distilled(bench, recovered):
    assert recovered.recovery["recovered"] is True
    assert recovered.recovery["recovery_examples"] == len(bench.transfer)
    assert recovered.recovery["recovery_seconds"] > 0
    assert recovered.recovery["recovery_loss"] >= 0


def test_the_kept_float_model_quantised_gives_the_candidates_logits(bench):
    """Export saves the float model; quantising it again must give the model that was scored."""
    built = candidate(bench, SHRUNK, keep_float=True)
    assert built.float_model is not None
    linears = [m for m in built.float_model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is nn.Linear for m in linears), "the kept model is still float"
    assert candidate(bench, SHRUNK).float_model is None  # only kept when asked
    apply_bits_(built.float_model, SHRUNK)
    assert torch.equal(_logits(built.float_model, bench), _logits(built.model, bench))


def test_without_recovery_a_shrunk_plan_is_only_shaped_and_quantised(bench, recovered):
    plain = candidate(bench, SHRUNK, recover=False)
    assert plain.recovered is False
    assert plain.recovery == {"recovered": False}
    plain_logits = _logits(plain.model, bench)
    assert not torch.allclose(plain_logits, _logits(recovered.model, bench)), "recovery changed nothing"
    # exactly the teacher cut by the plan, with the teacher's importance scores
    shaped = apply_plan(bench.teacher.model, SHRUNK, Selection(importance=bench.importance))
    assert torch.equal(plain_logits, _logits(shaped, bench))


def test_a_plan_for_another_model_is_refused(bench):
    with pytest.raises(PlanError, match="3 layers but the model has 4"):
        candidate(bench, CompressionPlan.uniform(3))
    with pytest.raises(PlanError):
        candidate(bench, CompressionPlan.uniform(6, keep=[0, 1]), recover=False)


def test_an_int8_only_plan_without_the_quantisation_aware_pass_is_the_teacher_quantised(bench):
    recovery = bench.config.recovery.model_copy(update={"quantize_only_fraction": 0.0})
    assert not INT8_ONLY.changes_structure
    assert not needs_recovery(recovery, INT8_ONLY)
    built = candidate(replace(source_of(bench), recovery=recovery), INT8_ONLY)
    assert built.recovered is False
    # the teacher's weights, only quantised: no distillation step moved them
    assert torch.equal(_logits(built.model, bench), _logits(apply_plan(bench.teacher.model, INT8_ONLY), bench))


def test_an_int8_only_plan_gets_a_short_quantisation_aware_pass_when_asked(bench):
    assert bench.config.recovery.quantization_aware and not quantize_only_pass(bench.config.recovery, INT8_ONLY)
    recovery = bench.config.recovery.model_copy(update={"quantize_only_fraction": 0.25})
    assert needs_recovery(recovery, INT8_ONLY) and quantize_only_pass(recovery, INT8_ONLY)
    assert recovery_epochs(recovery, INT8_ONLY) == pytest.approx(0.25 * recovery.epochs)
    built = candidate(replace(source_of(bench), recovery=recovery), INT8_ONLY)
    assert built.recovered and built.recovery["quantization_aware"] is True
    assert built.recovery["rounded_modules"] == 4 * 6  # q, k, v, attention output, FFN in and out per layer
    assert built.recovery["recovery_epochs"] == pytest.approx(0.25 * recovery.epochs)
    assert not torch.equal(_logits(built.model, bench), _logits(apply_plan(bench.teacher.model, INT8_ONLY), bench))
    # a study that does not recover leaves such plans alone
    assert not needs_recovery(recovery.model_copy(update={"epochs": 0.0}), INT8_ONLY)
    assert not needs_recovery(recovery.model_copy(update={"quantization_aware": False}), INT8_ONLY)


def test_a_float_plan_that_keeps_everything_is_never_recovered(bench):
    assert not needs_recovery(bench.config.recovery, CompressionPlan.uniform(4))


def test_distilling_through_the_rounding_brings_a_low_bit_student_closer_to_the_teacher(bench):
    """Two students alike but for the quantisation-aware recovery: 2-bit rows (a coarse rounding,
    where the effect is large) on two of four layers, half the heads and neurons."""
    plan = CompressionPlan.uniform(4, heads=0.5, ffn=0.5, bits=2, keep=[0, 2])
    src = source_of(bench)
    aware = candidate(src, plan)
    unaware = candidate(replace(src, recovery=src.recovery.model_copy(update={"quantization_aware": False})), plan)
    assert aware.recovery["quantization_aware"] and not unaware.recovery["quantization_aware"]
    teacher = torch.softmax(bench.teacher.eval_logits, -1)

    def kl(model: nn.Module) -> float:
        return torch.nn.functional.kl_div(torch.log_softmax(_logits(model, bench), -1), teacher,
                                          reduction="batchmean").item()

    assert kl(aware.model) < 0.95 * kl(unaware.model)  # 0.0047 against 0.0053 when written


@pytest.mark.parametrize(
    "plan",
    [
        CompressionPlan.uniform(4, keep=[0, 1, 2]),
        CompressionPlan.uniform(4, heads=0.5),
        CompressionPlan.uniform(4, ffn=0.5),
        CompressionPlan.from_dict({**CompressionPlan.uniform(4).to_dict(), "share": [[0, 1]]}),
    ],
    ids=["drops-a-layer", "prunes-heads", "prunes-ffn", "shares-layers"],
)
def test_any_structural_change_needs_recovery_when_the_study_recovers(bench, plan):
    assert plan.changes_structure
    assert needs_recovery(bench.config.recovery, plan)
    off = bench.config.recovery.model_copy(update={"epochs": 0.0})
    assert not needs_recovery(off, plan)


def test_a_small_task_distils_on_augmented_examples_at_the_same_number_of_steps(bench, recovered):
    facts = bench.distillation_set
    assert facts["train"] == 200 and facts["augmented"]["examples"] == 400 and facts["augmented"]["copies"] == 2
    assert 0.15 < facts["augmented"]["replaced_share"] < 0.35
    assert len(bench.transfer) == 600 == len(bench.transfer_logits) and bench.budget_examples == 200
    assert (bench.transfer.labels[200:] == bench.transfer_logits[200:].argmax(-1)).all(), "the teacher labels them"
    cfg = bench.config.recovery
    assert recovered.recovery["recovery_steps"] == math.ceil(math.ceil(200 / cfg.batch_size) * recovery_epochs(cfg, SHRUNK))
