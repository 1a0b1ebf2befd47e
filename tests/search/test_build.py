"""The one builder: the same plan gives the same candidate, and the teacher is never touched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.search.build import candidate, needs_recovery
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
            tiny_model_dir, tiny_csv, teacher={"epochs": 10.0}, recovery={"epochs": 1.0, "learning_rate": 1e-3}
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


def test_an_int8_only_plan_is_never_recovered(bench):
    assert not INT8_ONLY.changes_structure
    assert not needs_recovery(bench.config.recovery, INT8_ONLY)
    built = candidate(bench, INT8_ONLY)
    assert built.recovered is False
    # the teacher's weights, only quantised: no distillation step moved them
    assert torch.equal(_logits(built.model, bench), _logits(apply_plan(bench.teacher.model, INT8_ONLY), bench))


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
