"""One trial: plan → apply → recover → evaluate → measure → record.

:func:`prepare` builds the study's runtime state once per process (data, tokenizer, the cached
teacher); :class:`Objective` then turns each Optuna trial into a compressed candidate and
returns its three objective values: the task metric (``task.metric``: accuracy or macro-F1, %,
maximise; the objective keeps the name "accuracy" in storage), latency relative to the
uncompressed teacher measured in the same rounds (minimise), and size in MB (minimise).
Everything needed to understand or rebuild the candidate is stored on the trial; a held-out test
split, when the task has one, is scored for every full-fidelity trial and never optimised on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from autocompress.batches import Encoded, encode
from autocompress.config import StudyConfig
from autocompress.data import Examples, TaskData, load_task
from autocompress.distill import Progress, recover_
from autocompress.errors import PlanError
from autocompress.evaluate import Metric, Size, accuracy, metric, model_size, predict_logits
from autocompress.latency.measure import ProfileLatency, check_profile_fits, compute_lock, host_info, measure_profile
from autocompress.latency.predict import Calibration, cached_calibration, predict_ms, predict_profile
from autocompress.latency.profile import DeviceProfile
from autocompress.models import ArchInfo, arch_info, check_max_length, load_tokenizer, peek_config
from autocompress.plan import CompressionPlan
from autocompress.report.collect import SAME_PLAN_AS
from autocompress.space import check_space, suggest_plan
from autocompress.importance import layer_importance, unit_importance
from autocompress.teacher import Teacher, cached_tensors, prepare_teacher
from autocompress.transforms import Importance, apply_bits_, apply_plan, apply_structure_, simulated_widths

__all__ = ["OBJECTIVES", "Workbench", "prepare", "Objective", "plan_changes_structure"]

log = logging.getLogger(__name__)

#: (name, direction) of the study's objectives, in the order the objective returns them.
OBJECTIVES: tuple[tuple[str, str], ...] = (
    ("accuracy", "maximize"),
    ("relative_latency", "minimize"),
    ("size_mb", "minimize"),
)


@dataclass
class Workbench:
    """Runtime state shared by every trial of a study in this process."""

    config: StudyConfig
    task: TaskData
    train: Encoded
    eval: Encoded
    teacher: Teacher
    arch: ArchInfo
    teacher_size: Size
    host: dict[str, Any]
    calibration: Calibration | None  # this host's latency cost model, when a profile is predicted
    transfer: Encoded  # distillation set: train examples, then teacher-labelled transfer examples
    transfer_logits: torch.Tensor  # teacher logits on ``transfer``
    importance: Importance  # head / FFN-neuron scores of the teacher, per layer
    layer_ranking: list[float]  # calibration-loss increase when each layer alone is skipped
    teacher_metric: Metric  # the teacher's task metric on the eval split (what drops are measured from)
    test: Encoded | None = None  # held-out test examples, scored for full-fidelity trials only
    teacher_test: Metric | None = None  # the teacher's task metric on ``test``


def prepare(
    cfg: StudyConfig,
    cache_dir: Path,
    progress: Progress | None = None,
    config_file: str | None = None,
    task: TaskData | None = None,
) -> Workbench:
    """Load data (unless given) and tokenizer, and get the fine-tuned teacher (cached when possible)."""
    model_config = peek_config(cfg.model.source)
    check_max_length(model_config, cfg.task.max_length)  # before anything slow: inputs the model cannot take
    for profile in cfg.all_profiles:  # a profile this model or host cannot run
        check_profile_fits(profile, model_config)
    task = task or load_task(cfg.task)
    tokenizer = load_tokenizer(cfg.model.source)
    train = encode(tokenizer, task.train, cfg.task.max_length)
    eval_ = encode(tokenizer, task.eval, cfg.task.max_length)
    teacher = prepare_teacher(cfg, task.num_labels, train, eval_, cache_dir, progress)
    arch = arch_info(teacher.model)
    check_space(cfg.space, arch, file=config_file)
    teacher_metric = metric(cfg.task.metric, teacher.eval_logits, eval_.labels)
    test = teacher_test = None
    if task.test is not None:
        test = encode(tokenizer, task.test, cfg.task.max_length)
        test_logits = cached_tensors(
            teacher, f"test-logits-{_digest(task.test)}", lambda: {"logits": predict_logits(teacher.model, test)}
        )["logits"]
        teacher_test = metric(cfg.task.metric, test_logits, test.labels)
    calib = train.head(cfg.pruning.calibration_examples)
    crit = cfg.pruning.criterion
    scores = cached_tensors(
        teacher,
        f"importance-{crit}-{len(calib)}",
        lambda: _scores_to_dict(unit_importance(teacher.model, crit, calib), layer_importance(teacher.model, calib)),
    )
    kd_train = train.head(cfg.recovery.max_examples or len(train))
    kd_logits = teacher.train_logits[: len(kd_train)]
    if task.transfer is not None:
        extra = encode(tokenizer, task.transfer, cfg.task.max_length)
        extra_logits = cached_tensors(
            teacher, f"transfer-logits-{len(extra)}", lambda: {"logits": predict_logits(teacher.model, extra)}
        )["logits"]
        kd_train = kd_train.concat(extra.with_labels(extra_logits.argmax(-1)))  # teacher's labels
        kd_logits = torch.cat([kd_logits, extra_logits])
    calibration = None
    predicted = [p for p in cfg.all_profiles if p.predicted]
    if predicted:
        main = cfg.profile
        threads = main.threads if not main.predicted and main.device == "cpu" else min(os.cpu_count() or 1, 4)

        shapes = sorted({shape for p in predicted for shape in p.shapes})
        calibration = cached_calibration(
            teacher.model, lambda plan: apply_plan(teacher.model, plan).eval(), cache_dir, threads=threads, shapes=shapes
        )
    return Workbench(
        config=cfg,
        task=task,
        train=train,
        eval=eval_,
        teacher=teacher,
        arch=arch,
        teacher_size=model_size(teacher.model),
        host=host_info(),
        calibration=calibration,
        transfer=kd_train,
        transfer_logits=kd_logits,
        importance=Importance(
            heads={int(k): v for k, v in scores["heads"].items()}, ffn={int(k): v for k, v in scores["ffn"].items()}
        ),
        layer_ranking=scores["layers"].tolist(),
        teacher_metric=teacher_metric,
        test=test,
        teacher_test=teacher_test,
    )


def _digest(examples: Examples) -> str:
    """A short key for a set of examples (the test split's logits are cached under it)."""
    key = json.dumps([examples.texts, examples.pairs, examples.labels])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _scores_to_dict(units: Importance, layers: torch.Tensor) -> dict[str, Any]:
    return {
        "heads": {str(k): v for k, v in units.heads.items()},
        "ffn": {str(k): v for k, v in units.ffn.items()},
        "layers": layers,
    }


def plan_changes_structure(plan: CompressionPlan) -> bool:
    """True when the plan drops layers or prunes (what distillation can recover from)."""
    return any((not lp.keep) or lp.heads < 1.0 or lp.ffn < 1.0 for lp in plan.layers)


class Objective:
    """Callable for ``study.optimize``: builds, scores and records one candidate per trial.

    Two fidelities: a candidate that needs recovery is first built without it and scored cheaply
    (a subset of the eval split; latency and size are already final, since recovery changes
    weights, not shapes). If a completed full-fidelity trial is at least as fast and as small and
    already within ``fidelity.margin`` points of the teacher, recovery could not put the
    candidate on the front: the trial is pruned (recorded with ``fidelity: cheap``). Otherwise
    it is recovered and evaluated on the whole eval split (``fidelity: full``).
    """

    def __init__(self, bench: Workbench) -> None:
        self.bench = bench

    def _structure(self, plan: CompressionPlan) -> torch.nn.Module:
        student = copy.deepcopy(self.bench.teacher.model)
        apply_structure_(student, plan, self.bench.importance)
        return student

    def _recover_(self, student: torch.nn.Module) -> dict[str, Any]:
        b = self.bench
        start = time.perf_counter()
        with compute_lock():  # no local worker times a candidate meanwhile
            loss = recover_(student, b.transfer_logits, b.transfer, b.config.recovery)
        return {
            "recovered": True,
            "recovery_seconds": time.perf_counter() - start,
            "recovery_loss": loss,
            "recovery_examples": len(b.transfer),
        }

    def build_float(self, plan: CompressionPlan) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The candidate for ``plan`` before quantisation (shaped and recovered), and how it was made."""
        student = self._structure(plan)
        facts: dict[str, Any] = {"recovered": False}
        if self.needs_recovery(plan):
            facts = self._recover_(student)
        return student.eval(), facts

    def build(self, plan: CompressionPlan) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The full-fidelity candidate model for ``plan`` and facts about how it was made."""
        student, facts = self.build_float(plan)
        apply_bits_(student, plan)
        return student.eval(), facts

    def needs_recovery(self, plan: CompressionPlan) -> bool:
        return self.bench.config.recovery.epochs > 0 and plan_changes_structure(plan)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        b = self.bench
        cfg = b.config
        plan = suggest_plan(trial, cfg.space, b.arch, b.layer_ranking)
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("plan_summary", plan.describe())
        trial.set_user_attr("simulated", plan.simulated)
        trial.set_user_attr("host", b.host)
        same = self._same_plan_trial(trial, plan)
        if same is not None:
            return self._repeat(trial, same)
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            student = self._structure(plan)
        except PlanError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        staged = self.needs_recovery(plan) and cfg.fidelity.enabled
        facts: dict[str, Any] = {"recovered": False}
        if staged:
            cheap_model = copy.deepcopy(student)
            apply_bits_(cheap_model, plan)
            seconds["build"] = time.perf_counter() - t0
            lat, size = self._measure(trial, cheap_model, plan, seconds)
            cheap_eval = b.eval.head(cfg.fidelity.cheap_eval_size)
            t = time.perf_counter()
            with compute_lock():
                cheap_acc = metric(cfg.task.metric, predict_logits(cheap_model.eval(), cheap_eval), cheap_eval.labels)
            seconds["cheap_evaluate"] = time.perf_counter() - t
            del cheap_model
            trial.set_user_attr("cheap_accuracy", cheap_acc.to_dict())
            blocker = self._dominating_trial(trial, lat.ratio, size.megabytes)
            if blocker is not None:
                trial.set_user_attr("fidelity", "cheap")
                trial.set_user_attr("seconds", seconds)
                reason = (
                    f"not recovered: trial {blocker} is already as fast, as small and within "
                    f"{cfg.fidelity.margin:g} pt of the teacher (cheap {cheap_acc.name} {100 * cheap_acc.value:.1f}%)"
                )
                trial.set_user_attr("prune_reason", reason)
                raise optuna.TrialPruned(reason)
            t = time.perf_counter()
            facts = self._recover_(student)
            apply_bits_(student, plan)
            student.eval()
            seconds["recover"] = time.perf_counter() - t
        else:
            if self.needs_recovery(plan):
                facts = self._recover_(student)
            apply_bits_(student, plan)
            student.eval()
            seconds["build"] = time.perf_counter() - t0
            lat, size = self._measure(trial, student, plan, seconds)
        t = time.perf_counter()
        with compute_lock():
            logits = predict_logits(student, b.eval)
        acc = accuracy(logits, b.eval.labels)
        score = metric(cfg.task.metric, logits, b.eval.labels)
        seconds["evaluate"] = time.perf_counter() - t
        if b.test is not None:  # reported, never optimised on
            t = time.perf_counter()
            with compute_lock():
                test_logits = predict_logits(student, b.test)
            trial.set_user_attr("test_metric", metric(cfg.task.metric, test_logits, b.test.labels).to_dict())
            trial.set_user_attr("test_accuracy", accuracy(test_logits, b.test.labels).to_dict())
            seconds["test_evaluate"] = time.perf_counter() - t
        agreement = (logits.argmax(-1) == b.teacher.eval_logits.argmax(-1)).float().mean().item()
        acc_pct = 100 * score.value  # the first objective: the task metric, in %
        drop = 100 * b.teacher_metric.value - acc_pct
        trial.set_user_attr("accuracy", acc.to_dict())
        trial.set_user_attr("metric", score.to_dict())
        trial.set_user_attr("accuracy_drop", drop)  # points of the task metric below the teacher
        trial.set_user_attr("teacher_agreement", agreement)
        trial.set_user_attr("fidelity", "full")
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("recovery", facts)
        if cfg.objectives.max_accuracy_drop is not None:
            trial.set_constraint("accuracy_drop", drop - cfg.objectives.max_accuracy_drop)
        log.info(
            "trial %d: %s → %s %.2f%% (drop %.2f), %.2f× faster, %.1f MB",
            trial.number, plan.describe(), score.name, acc_pct, drop, lat.speedup, size.megabytes,
        )
        return acc_pct, lat.ratio, size.megabytes

    def _measure(
        self, trial: optuna.Trial, model: torch.nn.Module, plan: CompressionPlan, seconds: dict[str, float]
    ) -> tuple[ProfileLatency, Size]:
        """Latency against the teacher on every profile, and size, recorded on the trial.

        The objective's profile comes first; the reported profiles are stored under ``latencies``.
        """
        b = self.bench
        t = time.perf_counter()
        lats: dict[str, ProfileLatency] = {}
        for profile in b.config.all_profiles:
            if profile.predicted:
                calibration = b.calibration
                if calibration is None:
                    raise RuntimeError("a predicted profile needs the latency calibration; prepare() makes it")
                lats[profile.name] = predict_profile(b.teacher.model, model, profile, calibration)
            else:
                lats[profile.name] = measure_profile(
                    b.teacher.model, model, profile, vocab_size=b.teacher.model.config.vocab_size
                )
        seconds["latency"] = time.perf_counter() - t
        lat = lats[b.config.profile.name]
        size = model_size(model, simulated_widths(model, plan))
        records = {name: v.to_dict() for name, v in lats.items()}
        if b.calibration is not None:  # what the report needs to judge the cost model against measurements
            for profile in b.config.all_profiles:
                records[profile.name].update(self._prediction_facts(model, profile))
        trial.set_user_attr("latency", records[b.config.profile.name])
        trial.set_user_attr("latencies", records)
        trial.set_user_attr("speedup", lat.speedup)
        trial.set_user_attr("size", size.to_dict())
        trial.set_user_attr("size_ratio", size.effective_bytes / b.teacher_size.effective_bytes)
        return lat, size

    def _prediction_facts(self, model: torch.nn.Module, profile: DeviceProfile) -> dict[str, Any]:
        """The cost model's fit error, and for a measured CPU profile at the calibration's thread
        count its prediction for this host (``host_prediction``), to set against the measurement."""
        cal = self.bench.calibration
        if cal is None:
            return {}
        facts: dict[str, Any] = {"fit_error": cal.fit_median_error}
        if profile.predicted or profile.device != "cpu" or profile.threads != cal.peaks.threads:
            return facts
        teacher = self.bench.teacher.model
        ratios, cand = [], []
        for bs, seq in profile.shapes:
            base_ms = predict_ms(teacher, cal, bs, seq)
            cand.append(predict_ms(model, cal, bs, seq))
            ratios.append(cand[-1] / base_ms)
        ratio = math.exp(sum(math.log(r) for r in ratios) / len(ratios))  # as measure_profile combines shapes
        facts["host_prediction"] = {
            "ratio": ratio,
            "speedup": 1.0 / ratio,
            "candidate_ms": math.exp(sum(math.log(c) for c in cand) / len(cand)),
        }
        return facts

    def _same_plan_trial(self, trial: optuna.Trial, plan: CompressionPlan) -> optuna.trial.FrozenTrial | None:
        """A trial of this study that already built ``plan`` on this host, if any: complete at the
        full fidelity, or stopped at the cheap one.

        Building is deterministic (seeded distillation), so building the plan again would cost
        a full recovery and give the same model; its latency was measured on this host too.
        """
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in trial.study.get_trials(deepcopy=False, states=done):
            u = t.user_attrs
            fidelity = "full" if t.state == optuna.trial.TrialState.COMPLETE else "cheap"
            if (t.number != trial.number and SAME_PLAN_AS not in u and u.get("fidelity") == fidelity
                    and u.get("host") == self.bench.host and "plan" in u
                    and CompressionPlan.from_dict(u["plan"]) == plan):
                return t
        return None

    def _repeat(self, trial: optuna.Trial, same: optuna.trial.FrozenTrial) -> tuple[float, float, float]:
        """Record ``same``'s figures on ``trial`` (marked as a repeat of it) and end as it ended:
        with its values, or pruned for the same reason."""
        own = {"plan", "plan_summary", "simulated", "host", "sampler", "baseline", "warm_start", "retry_of", "seconds"}
        for key, value in same.user_attrs.items():
            if key not in own:
                trial.set_user_attr(key, value)
        trial.set_user_attr(SAME_PLAN_AS, same.number)
        trial.set_user_attr("seconds", {})
        if same.state == optuna.trial.TrialState.PRUNED:
            reason = f"the plan of trial {same.number}, stopped at the cheap fidelity: {same.user_attrs.get('prune_reason')}"
            trial.set_user_attr("prune_reason", reason)
            log.info("trial %d: %s", trial.number, reason)
            raise optuna.TrialPruned(reason)
        limit = self.bench.config.objectives.max_accuracy_drop
        if limit is not None and same.user_attrs.get("accuracy_drop") is not None:
            trial.set_constraint("accuracy_drop", same.user_attrs["accuracy_drop"] - limit)
        log.info("trial %d: the plan of trial %d (%s); its figures repeated, nothing rebuilt",
                 trial.number, same.number, same.user_attrs.get("plan_summary"))
        return tuple(same.values)  # type: ignore[return-value]

    def _dominating_trial(self, trial: optuna.Trial, ratio: float, size_mb: float) -> int | None:
        """A full-fidelity trial that makes recovering this candidate pointless, if any."""
        b = self.bench
        floor = 100 * b.teacher_metric.value - b.config.fidelity.margin
        for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if t.values and t.values[1] <= ratio and t.values[2] <= size_mb and t.values[0] >= floor:
                return t.number
        return None
