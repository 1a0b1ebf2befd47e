"""The study's runtime state in one process: data, tokenizer, the cached teacher and what is derived from it.

:func:`prepare` builds a :class:`Workbench` once per process; every trial, export and benchmark
builds its candidates from it (see :mod:`autocompress.search.build`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import ConfigError
from autocompress.latency.inputs import TaskInputs, calibration_shapes, task_inputs
from autocompress.latency.measure import check_profile_fits, host_info
from autocompress.latency.predict import Calibration, cached_calibration
from autocompress.latency.runtimes.onnx_model import INSTALL, missing_onnx
from autocompress.latency.runtimes.ort import OrtTeacher, teacher_session
from autocompress.models.adapters import (
    ArchInfo,
    adapter_for_config,
    arch_from_config,
    arch_info,
    check_max_length,
    load_tokenizer,
    peek_config,
    supported_families,
)
from autocompress.ops import Importance, apply_plan
from autocompress.ops.importance import layer_importance, unit_importance
from autocompress.ops.size import Size, model_size
from autocompress.ops.vocab import VocabularyCorpus, token_counts
from autocompress.schema.config import StudyConfig
from autocompress.search.space import check_space
from autocompress.tasks.augment import Augmented, augment, neighbour_table, token_kinds
from autocompress.tasks.batches import Encoded
from autocompress.tasks.data import TRANSFER_FILES, Examples, TaskData
from autocompress.tasks.evaluate import Metric
from autocompress.tasks.kind import TASK_KINDS, TaskKind, check_task
from autocompress.train.distill import Progress, TeacherStates, teacher_states
from autocompress.train.teacher import Teacher, cached_tensors, prepare_teacher

log = logging.getLogger(__name__)

__all__ = ["Workbench", "check_inputs", "check_profiles", "prepare", "screening_predicts"]


@dataclass
class Workbench:
    """Runtime state shared by every trial of a study in this process."""

    config: StudyConfig
    kind: TaskKind  # what the model does (``task.kind``): data, metric, losses, timed inputs
    task: TaskData
    train: Encoded
    eval: Encoded
    teacher: Teacher
    arch: ArchInfo
    teacher_size: Size
    host: dict[str, Any]
    calibration: Calibration | None  # this host's latency cost model, when a profile or the screen predicts
    transfer: Encoded  # distillation set: train examples, then teacher-labelled transfer examples
    transfer_logits: torch.Tensor  # teacher logits on ``transfer``
    importance: Importance  # head / FFN-neuron scores of the teacher, per layer
    layer_ranking: list[float]  # calibration-loss increase when each layer alone is skipped
    teacher_metric: Metric  # the teacher's task metric on the eval split (what drops are measured from)
    test: Encoded | None = None  # held-out test examples, scored for full-fidelity trials only
    teacher_test: Metric | None = None  # the teacher's task metric on ``test``
    test_reference: torch.Tensor | None = None  # the teacher's outputs on ``test`` (what candidates are compared with)
    transfer_states: TeacherStates | None = None  # the teacher's hidden states on ``transfer`` (hidden-state distillation)
    task_inputs: TaskInputs | None = None  # the eval examples, which a profile with task inputs samples and times
    onnx_teacher: OrtTeacher | None = None  # the teacher's ONNX model, for profiles timed in ONNX Runtime
    vocabulary: VocabularyCorpus | None = None  # token counts a plan's kept vocabulary is chosen from
    budget_examples: int | None = None  # the examples ``recovery.epochs`` count (None: all of ``transfer``)
    distillation_set: dict[str, Any] | None = None  # what ``transfer`` is made of (stored with the teacher's figures)


def prepare(
    cfg: StudyConfig,
    cache_dir: Path,
    progress: Progress | None = None,
    config_file: str | None = None,
    task: TaskData | None = None,
) -> Workbench:
    """Load data (unless given) and tokenizer, and get the fine-tuned teacher (cached when possible)."""
    kind, _ = check_inputs(cfg, config_file)  # before anything slow
    task = task or kind.load_data(cfg.task)
    tokenizer = load_tokenizer(cfg.model.source)
    train = kind.encode_training(tokenizer, task.train, cfg.task.max_length, cfg.task.windows)
    eval_ = kind.encode(tokenizer, task.eval, cfg.task.max_length)
    teacher = prepare_teacher(cfg, kind, task, train, eval_, cache_dir, progress)
    arch = arch_info(teacher.model)
    check_space(cfg.space, arch, file=config_file)
    teacher_metric = kind.metric(cfg.task.metric, teacher.eval_logits, eval_, teacher.eval_logits)
    test = teacher_test = test_logits = None
    if task.test is not None:
        test = kind.encode(tokenizer, task.test, cfg.task.max_length)
        test_logits = cached_tensors(
            teacher, f"test-logits-{_digest(task.test)}", lambda: {"logits": kind.outputs(teacher.model, test)}
        )["logits"]
        teacher_test = kind.metric(cfg.task.metric, test_logits, test, test_logits)
    calib = train.head(cfg.pruning.calibration_examples)
    crit = cfg.pruning.criterion
    scores = cached_tensors(
        teacher,
        f"importance-{crit}-{len(calib)}",
        lambda: _scores_to_dict(unit_importance(teacher.model, crit, calib, loss=kind.training_loss),
                                layer_importance(teacher.model, calib, loss=kind.training_loss)),
    )
    kd_train = train.head(cfg.recovery.max_examples or len(train))
    kd_logits = teacher.train_logits[: len(kd_train)]
    labelled = kd_train
    budget = len(kd_train)  # what recovery.epochs count: the train examples and task.transfer_size more
    if task.transfer is not None:
        extra = kind.encode(tokenizer, task.transfer, cfg.task.max_length)
        name = (f"transfer-logits-{len(extra)}" if cfg.task.transfer_source is None
                else f"transfer-logits-{_digest(task.transfer)}")
        extra_logits = cached_tensors(teacher, name, lambda: {"logits": kind.outputs(teacher.model, extra)})["logits"]
        kd_train = kd_train.concat(kind.pseudo_labelled(extra, extra_logits))  # the teacher's targets
        kd_logits = torch.cat([kd_logits, extra_logits])
        budget += len(extra) if cfg.task.transfer_source is None else 0
    augmented = _augmented(cfg, kind, tokenizer, teacher, labelled, len(kd_train))
    if augmented is not None:
        more, more_logits = augmented
        kd_train = kd_train.concat(kind.pseudo_labelled(more.examples, more_logits))
        kd_logits = torch.cat([kd_logits, more_logits])
    sample = task_inputs(eval_) if any(p.task_inputs for p in cfg.all_profiles) else None
    calibration = None
    predicted = [p for p in cfg.all_profiles if p.predicted]
    main = cfg.profile
    screened_here = screening_predicts(cfg)
    if predicted or screened_here:
        threads = main.threads if not main.predicted and main.device == "cpu" else min(os.cpu_count() or 1, 4)
        # measured task-input profiles at these threads get a host prediction beside their figure (the report's
        # predicted-vs-measured check): their lengths are fitted too, not extrapolated from fixed shapes
        checked = [p for p in cfg.all_profiles if p.task_inputs and not p.predicted and p.device == "cpu"
                   and p.backend == "torch" and p.threads == threads]
        shapes = calibration_shapes([*predicted, *([main] if screened_here else []), *checked], sample)
        calibration = cached_calibration(
            teacher.model, lambda plan: apply_plan(teacher.model, plan).eval(), cache_dir, threads=threads, shapes=shapes
        )
    return Workbench(
        config=cfg,
        kind=kind,
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
        budget_examples=budget,
        distillation_set=_distillation_facts(cfg, labelled, task, kd_train, budget, augmented),
        importance=Importance(
            heads={int(k): v for k, v in scores["heads"].items()}, ffn={int(k): v for k, v in scores["ffn"].items()}
        ),
        layer_ranking=scores["layers"].tolist(),
        teacher_metric=teacher_metric,
        test=test,
        teacher_test=teacher_test,
        test_reference=test_logits,
        transfer_states=_states(cfg, teacher.model, kd_train),
        task_inputs=sample,
        onnx_teacher=_onnx_teacher(cfg, teacher.model, eval_),
        vocabulary=_vocabulary(cfg, tokenizer, labelled, int(teacher.model.config.vocab_size), config_file) if cfg.space.vocabulary.offered else None,
    )


def _vocabulary(cfg: StudyConfig, tokenizer: Any, kd_train: Encoded, vocab: int, config_file: str | None) -> VocabularyCorpus:
    """Token counts of the distillation set's texts (or of ``space.vocabulary.corpus``), with the
    tokenizer's special tokens and its unknown token, which dropped ids fall back to."""
    unk = tokenizer.unk_token_id
    if unk is None:
        raise ConfigError("the tokenizer has no unknown token for the ids of dropped rows to fall back to; set "
                          "space.vocabulary.keep: [all]", file=config_file, key="space.vocabulary.keep")
    path = cfg.space.vocabulary.corpus
    if path is None:
        sequences, source = kd_train.input_ids, f"the distillation set ({len(kd_train)} texts)"
    else:
        try:
            lines = [t for t in Path(path).expanduser().read_text(encoding="utf-8").splitlines() if t.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the vocabulary corpus: {exc}; give a UTF-8 text file, one text per line",
                              file=config_file, key="space.vocabulary.corpus") from None
        if not lines:
            raise ConfigError("the vocabulary corpus has no text; give a UTF-8 text file, one text per line",
                              file=config_file, key="space.vocabulary.corpus")
        sequences = tokenizer(lines, truncation=True, max_length=cfg.task.max_length)["input_ids"]
        source = f"{path} ({len(lines)} texts)"
    counts = token_counts(sequences, vocab)
    return VocabularyCorpus(counts=counts, always=tuple(int(i) for i in tokenizer.all_special_ids), fallback=int(unk),
                            source=source)


def check_inputs(cfg: StudyConfig, config_file: str | None = None) -> tuple[TaskKind, Any]:
    """Every check that reads the config and the model's config alone (no weights, no data), in the
    order a user fixes them: a model of the kind the task takes (an encoder for classification, a
    decoder for causal-lm), the task kind's own settings, a transfer file that is not there, the
    space against the model's shape, its positions against ``max_length``, and the profiles.
    The study's kind and the model's Hugging Face config; raises :class:`ConfigError` (or another
    :class:`~autocompress.errors.AutocompressError`) naming what to change."""
    model_config = peek_config(cfg.model.source)
    decoder = adapter_for_config(model_config).decoder
    kind = TASK_KINDS[cfg.task.kind]() if cfg.task.kind in TASK_KINDS else check_task(cfg, config_file)
    if decoder != kind.generates:  # first: a wrong pairing makes every other setting look wrong
        families = ", ".join(supported_families(decoder=kind.generates))
        what = "causal language model" if decoder else "encoder"
        fix = ("set task.kind: causal-lm" if decoder else
               "set model.source to one, or task.kind: sequence-classification")
        raise ConfigError(f"model '{cfg.model.source}' is a {model_config.model_type} {what}, but a {kind.name} study "
                          f"takes {'a decoder' if kind.generates else 'an encoder'} ({families}); {fix}",
                          file=config_file, key="model.source" if kind.generates else "task.kind")
    kind = check_task(cfg, config_file)
    if cfg.task.transfer_source and not Path(cfg.task.transfer_source).expanduser().is_file():
        raise ConfigError(f"'{cfg.task.transfer_source}' does not exist; give {TRANSFER_FILES}", file=config_file,
                          key="task.transfer_source")
    check_space(cfg.space, arch_from_config(model_config), file=config_file)
    check_max_length(model_config, cfg.task.max_length)
    check_profiles(cfg, model_config, config_file)
    return kind, model_config


def check_profiles(cfg: StudyConfig, model_config: Any, config_file: str | None = None) -> None:
    """Refuse, before anything slow, a profile this model or host cannot run: inputs the model
    cannot take, a batch that cannot fit, ONNX Runtime without its packages."""
    for i, profile in enumerate(cfg.all_profiles):
        check_profile_fits(profile, model_config, prompt_tokens=cfg.task.max_length)
        name = missing_onnx() if profile.backend == "onnxruntime" else None
        if name is not None:
            key = "profile" if i == 0 else f"report_profiles.{i - 1}"
            raise ConfigError(f"backend 'onnxruntime' needs the package '{name}': {INSTALL}, or set backend: torch",
                              file=config_file, key=f"{key}.backend")


def _onnx_teacher(cfg: StudyConfig, teacher: nn.Module, eval_: Encoded) -> OrtTeacher | None:
    """The teacher in ONNX, when a profile times candidates in ONNX Runtime (inputs as the task's)."""
    if not any(p.backend == "onnxruntime" for p in cfg.all_profiles):
        return None
    names = ["input_ids", "attention_mask", *(["token_type_ids"] if eval_.token_type_ids is not None else [])]
    return teacher_session(teacher, names)


def _states(cfg: StudyConfig, teacher: nn.Module, transfer: Encoded) -> TeacherStates | None:
    """The teacher's hidden states on the distillation set, when recovery distils them."""
    if cfg.recovery.hidden_weight <= 0 or cfg.recovery.epochs <= 0:
        return None
    start = time.perf_counter()
    states = teacher_states(teacher, transfer, range(1, teacher.config.num_hidden_layers + 1))
    log.info("teacher hidden states on %d distillation examples: %.0f MB, %.1f s",
             len(transfer), states.nbytes / 2**20, time.perf_counter() - start)
    return states


def screening_predicts(cfg: StudyConfig) -> bool:
    """True when the cheap rung predicts the objective's latency with this host's cost model: the
    study screens, recovers (screening is worth a calibration when it saves distillations) and
    times a CPU profile here."""
    main = cfg.profile
    return (cfg.fidelity.enabled and cfg.recovery.epochs > 0 and not main.predicted and main.device == "cpu"
            and main.backend == "torch" and not getattr(main, "new_tokens", 0))  # the cost model times forward passes, not generation


def augments(cfg: StudyConfig, kind_name: str, examples: int) -> bool:
    """Whether the study enlarges its distillation set of ``examples`` by augmentation
    (``recovery.augment``; ``auto``: for a classification task under ``small_below`` examples)."""
    aug = cfg.recovery.augment
    if aug.kind == "auto":
        return cfg.recovery.epochs > 0 and kind_name == "sequence-classification" and examples < aug.small_below
    return aug.kind != "none" and cfg.recovery.epochs > 0


def _augmented(cfg: StudyConfig, kind: TaskKind, tokenizer: Any, teacher: Teacher, labelled: Encoded,
               examples: int) -> tuple[Augmented, torch.Tensor] | None:
    """The augmented examples of ``labelled`` and the teacher's outputs on them (cached with the
    teacher), when :func:`augments`."""
    if not augments(cfg, cfg.task.kind, examples):
        return None
    aug = cfg.recovery.augment
    start = time.perf_counter()
    table = teacher.model.get_input_embeddings().weight
    kinds = token_kinds(tokenizer.convert_ids_to_tokens(list(range(len(table)))))
    ids = [t for row in labelled.input_ids for t in row]
    near = neighbour_table(table, ids, aug.neighbours, kinds, set(tokenizer.all_special_ids))
    made = augment(labelled, near, copies=aug.copies, share=aug.share, seed=cfg.task.seed, neighbours=aug.neighbours)
    key = hashlib.sha256(json.dumps([aug.model_dump(mode="json"), cfg.task.seed, labelled.input_ids]).encode())
    logits = cached_tensors(teacher, f"augmented-logits-{key.hexdigest()[:12]}",
                            lambda: {"logits": kind.outputs(teacher.model, made.examples)})["logits"]
    made = dataclasses.replace(made, seconds=time.perf_counter() - start)
    log.info("distillation set: %d augmented examples (%d copies, %.0f%% of tokens replaced by embedding neighbours) "
             "in %.1f s", len(made.examples), aug.copies, 100 * made.replaced_share, made.seconds)
    return made, logits


def _distillation_facts(cfg: StudyConfig, labelled: Encoded, task: TaskData, kd_train: Encoded, budget: int,
                        augmented: tuple[Augmented, torch.Tensor] | None) -> dict[str, Any]:
    transfer = len(task.transfer) if task.transfer is not None else 0
    return {"examples": len(kd_train), "train": len(labelled), "transfer": transfer,
            "transfer_source": cfg.task.transfer_source or (cfg.task.source if transfer else None),
            "budget_examples": budget, "augmented": None if augmented is None else augmented[0].facts()}


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
