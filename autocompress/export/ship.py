"""Export one trial: rebuild its model from the plan, write the directory, and prove it is the same model.

The rebuild is the trial's own call, :func:`autocompress.search.build.candidate` on the study's cached
teacher (structure by the study's importance scores → the same seeded distillation → bit-widths), and is checked
against the trial before anything is written: its accuracy on the eval split must be within
:data:`REBUILD_TOLERANCE_PT` of the stored one (distillation is seeded; on the same host and
library versions the rebuild is bit-exact, elsewhere floating-point order may move a few
examples). The written directory is then loaded back and must give the rebuilt model's logits;
the ONNX file, when asked for, must score within :data:`ONNX_TOLERANCE_PT` of it (or within the
paired sampling noise of the two int8 models' disagreements at the 99.9 % level, if larger:
:func:`onnx_tolerance`; beyond the 95 % level the export says so in a note).
The exported PyTorch model is then timed against the teacher as the study timed its trials
(interleaved rounds, the study's profile shapes), and the ONNX model against the PyTorch export.
Everything is written to a temporary sibling directory that becomes ``out_dir`` only at the end.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from autocompress.search import build
from autocompress.store import record
from autocompress.schema.config import StudyConfig
from autocompress.errors import ExportError
from autocompress.tasks.evaluate import accuracy
from autocompress.latency.runtimes.onnx_model import OnnxFacts, OnnxRunner, export_onnx, require_onnx
from autocompress.export.pick import exportable_trial
from autocompress.export.saved import FORMAT_VERSION, auto_class, load, save_student
from autocompress.latency.inputs import TaskInputs
from autocompress.latency.runtimes.ort import measure_runners
from autocompress.latency.measure import ProfileLatency, compute_lock, host_info
from autocompress.schema.profile import DeviceProfile
from autocompress.models.adapters import load_tokenizer
from autocompress.schema.plan import CompressionPlan
from autocompress.store.artifacts import artifact_store_for, fetch_teacher_cache
from autocompress.store.storage import stored_config
from autocompress.train.teacher import cache_entry, is_cached
from autocompress.search.workbench import Workbench, prepare

__all__ = [
    "REBUILD_TOLERANCE_PT",
    "ONNX_TOLERANCE_PT",
    "TORCH_LOGIT_TOLERANCE",
    "LatencyRow",
    "ExportResult",
    "export_trial",
    "onnx_tolerance",
]

log = logging.getLogger(__name__)

REBUILD_TOLERANCE_PT = 0.5  # rebuilt vs stored accuracy, points
ONNX_TOLERANCE_PT = 0.5  # ONNX Runtime vs PyTorch accuracy on the eval split, points (or the paired noise, if larger)
TORCH_LOGIT_TOLERANCE = 1e-4  # loaded vs rebuilt model, largest absolute logit difference


@dataclass(frozen=True)
class LatencyRow:
    """One model's latency on the study's profile shapes and its speedup over the teacher.

    The PyTorch export is timed against the teacher, the ONNX model against the PyTorch export
    (each pair interleaved, so each ratio is on one clock); the ONNX speedup is their product.
    """

    what: str  # "trial (stored)", "export (PyTorch)", "export (ONNX Runtime)"
    candidate_ms: float | None
    teacher_ms: float | None
    speedup: float | None
    kind: str  # "measured" or "predicted"
    where: str  # host or profile it comes from
    note: str = ""  # how the speedup was obtained when not timed against the teacher directly


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    study: str
    trial: int
    plan_summary: str
    plain_hf: bool  # the plain transformers auto class (AutoModelForSequenceClassification, ...) loads the directory
    trial_accuracy: float  # %, stored with the trial
    rebuilt_accuracy: float  # %, the rebuilt model on the same eval split
    torch_max_logit_diff: float  # loaded from the directory vs rebuilt
    onnx_accuracy: float | None = None  # %
    onnx_agreement: float | None = None  # fraction of eval predictions equal to PyTorch's
    onnx_files: tuple[str, ...] = ()  # the ONNX file, or a model with exits' stages in the order they run
    latency: tuple[LatencyRow, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------------ workbench
def _export_config(cfg: StudyConfig, onnx: bool) -> StudyConfig:
    """The study config without what an export does not need: predicted or GPU profiles (no
    calibration, no CUDA), ONNX Runtime unless the export writes ONNX, and reported profiles.
    Teacher, data and importance are unchanged."""
    profile = cfg.profile
    if profile.predicted or profile.device != "cpu":
        profile = profile.model_copy(update={"kind": "measured", "device": "cpu", "spec": None})
    if profile.backend == "onnxruntime" and not onnx:
        profile = profile.model_copy(update={"backend": "torch"})
    return cfg.model_copy(update={"profile": profile, "report_profiles": ()})


def _workbench(study: optuna.Study, cfg: StudyConfig, cache_dir: Path, storage_url: str | None, onnx: bool) -> Workbench:
    """The study's workbench from its cached teacher; refuses to fine-tune a new teacher.

    A teacher fine-tuned again would not be the one the trials were distilled from (unless the
    model is used as it is, ``model.finetuned``, which is cheap and exact to redo).
    """
    cache_dir = Path(cache_dir)
    if storage_url is not None:
        store = artifact_store_for(storage_url)
        if store is not None:  # a shared study: its teacher is in its database
            cache_dir.mkdir(parents=True, exist_ok=True)
            fetch_teacher_cache(study, store, cache_dir)
    if not is_cached(cfg, cache_dir) and not cfg.model.finetuned:
        raise ExportError(
            f"the fine-tuned teacher of study '{study.study_name}' is not in {cache_entry(cfg, cache_dir)}; its trials were distilled "
            "from it and a teacher fine-tuned again would differ. Give --cache-dir the cache the study used "
            "(copy studies/cache from the machine that ran it)"
        )
    return prepare(_export_config(cfg, onnx), cache_dir)


# ------------------------------------------------------------------------------------------ latency
Timed = nn.Module | OnnxRunner
#: the export's row timed as a study with an ONNX Runtime profile times its trials
ORT_ROW = "export (ONNX Runtime) against the teacher in ONNX Runtime"


def _measure(profile: DeviceProfile, chain: list[tuple[str, Timed]], task: TaskInputs | None) -> dict[str, ProfileLatency]:
    """Time each model of ``chain`` against the one before it (the first is the teacher), interleaved
    round by round on every workload of the profile (``task``: the study's eval examples, for task
    inputs); each result's baseline is the previous model."""
    teacher = chain[0][1]
    if not isinstance(teacher, nn.Module):
        raise TypeError("the chain starts with the teacher, a PyTorch model")
    vocab = teacher.config.vocab_size
    return {label: measure_runners(baseline, candidate, profile, vocab_size=vocab, task=task)
            for (_, baseline), (label, candidate) in zip(chain, chain[1:])}


# ------------------------------------------------------------------------------------------ export
def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        what = "is a file" if not out_dir.is_dir() else "exists and is not empty"
        raise ExportError(f"output directory '{out_dir}' {what}; give a new or empty directory with -o")


def export_trial(
    study: optuna.Study,
    trial_number: int,
    out_dir: str | Path,
    cache_dir: str | Path,
    *,
    onnx: bool = False,
    storage_url: str | None = None,
) -> ExportResult:
    """Write trial ``trial_number`` of ``study`` to ``out_dir`` (see the module docstring).

    ``cache_dir`` holds the study's fine-tuned teacher; ``storage_url`` lets a shared
    (PostgreSQL) study's teacher be fetched from its database. Nothing in the study changes.
    """
    out_dir = Path(out_dir)
    trial = exportable_trial(study, trial_number)
    _check_out_dir(out_dir)
    if onnx:
        require_onnx()
    cfg = stored_config(study)
    stored_record = record.read(trial)
    plan = stored_record.plan
    if plan is None:
        raise ExportError(f"trial {trial.number}'s stored plan cannot be read by this version of autocompress")
    bench = _workbench(study, cfg, Path(cache_dir), storage_url, onnx)
    notes: list[str] = []
    if not record.feasible(trial):
        notes.append(f"trial {trial.number} is outside the study's accuracy-drop budget (it is not on the feasible front)")

    built = build.candidate(bench, plan, keep_float=True)  # the trial's own builder
    model, recovered = built.model, built.recovered
    student = built.float_model
    if student is None:
        raise RuntimeError("build.candidate(keep_float=True) returns the float model")
    with compute_lock():  # a local study's latency measurement never overlaps this
        logits = bench.kind.outputs(model, bench.eval)
    rebuilt = 100 * accuracy(logits, bench.eval.labels).value
    stored = 100 * stored_record.accuracy.value if stored_record.accuracy is not None else math.nan
    if not abs(rebuilt - stored) <= REBUILD_TOLERANCE_PT:
        raise ExportError(
            f"the rebuilt model of trial {trial.number} scores {rebuilt:.2f}% on the eval split but the trial "
            f"recorded {stored:.2f}% (more than {REBUILD_TOLERANCE_PT} pt apart): the teacher cache, the data or "
            "the library versions differ from the study's; nothing was written"
        )
    if rebuilt != stored:
        notes.append(f"rebuilt accuracy differs from the trial's by {rebuilt - stored:+.2f} pt (tolerance {REBUILD_TOLERANCE_PT} pt)")

    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = load_tokenizer(cfg.model.source)
        labels = list(bench.task.label_names)
        plain = save_student(tmp, model, plan, bench.teacher.model.config, labels, bench.kind)
        tokenizer.save_pretrained(tmp)

        loaded = load(tmp)
        with compute_lock():
            loaded_logits = bench.kind.outputs(loaded, bench.eval)
        diff = (loaded_logits - logits).abs().max().item()
        if diff > TORCH_LOGIT_TOLERANCE or not torch.equal(loaded_logits.argmax(-1), logits.argmax(-1)):
            raise ExportError(f"the saved model does not reproduce the trial's model (largest logit difference {diff:.2e})")
        if plain:
            _check_plain(tmp, logits, bench)
        else:
            notes.append("pruned heads, uneven FFN widths or quantised layers: load it with autocompress.load(DIR)")

        profile = _export_config(cfg, onnx).profile
        chain: list[tuple[str, Timed]] = [("teacher", bench.teacher.model), ("export (PyTorch)", loaded)]
        onnx_acc = agreement = None
        onnx_info: dict[str, Any] | None = None
        if onnx:
            onnx_acc, agreement, onnx_info, runner = _write_onnx(tmp, student, plan, tokenizer, bench, logits, profile)
            chain.append(("export (ONNX Runtime)", runner))
            gap, noise = onnx_acc - rebuilt, onnx_info["paired_noise_pt"]
            if abs(gap) > ONNX_TOLERANCE_PT:
                flips = onnx_info["only_onnx_right"] + onnx_info["only_torch_right"]
                notes.append(
                    f"the ONNX model is {gap:+.2f} pt from the PyTorch model, more than {ONNX_TOLERANCE_PT} pt; "
                    + (f"within the ±{noise:.2f} pt (95 %) the eval split can resolve for {flips} examples only one "
                       "of them gets right" if abs(gap) <= noise else
                       f"beyond the ±{noise:.2f} pt (95 %) paired noise of the {flips} examples only one of them gets "
                       f"right, within ±{onnx_info['allowed_difference_pt']:.2f} pt (99.9 %): ONNX Runtime's 7-bit "
                       "int8 weights may cost this much; its accuracy is in metrics.json (onnx.accuracy)")
                )
            if plan.simulated:
                notes.append("simulated bit-widths are exported as fake-quantised float weights in the ONNX model")
            if plan.head_bits == 8:
                notes.append("the classifier head stays float in the ONNX model (ONNX Runtime quantises MatMul, not Gemm)")
            if onnx_info.get("stages"):
                notes.append(f"early exits: the ONNX model is {len(onnx_info['stages'])} graphs run in turn "
                             f"({', '.join(onnx_info['stages'])}); an input goes on to the next only while no exit's "
                             f"largest softmax probability reached {onnx_info['exit_threshold']} (metrics.json: onnx.stage_io)")
        measured = _measure(profile, chain, bench.task_inputs)
        rows = (_stored_row(stored_record, cfg), *_rows(measured))
        as_trial: dict[str, ProfileLatency] = {}
        if cfg.profile.backend == "onnxruntime":
            if onnx and bench.onnx_teacher is not None:  # as the trial was timed: against the teacher in ONNX Runtime
                ort = replace(measure_runners(bench.onnx_teacher.runner(profile.threads), runner, profile,
                                              vocab_size=bench.teacher.model.config.vocab_size, task=bench.task_inputs),
                              extra={"backend": "onnxruntime"})
                as_trial[ORT_ROW] = ort
                rows = (*rows, LatencyRow(ORT_ROW, ort.candidate_ms, ort.baseline_ms, ort.speedup, "measured",
                                          host_info()["host"], "the trial's own protocol (profile backend onnxruntime)"))
            else:
                notes.append(f"trial {trial.number} was timed in ONNX Runtime (profile '{profile.name}'): export with "
                             "--onnx to ship that model and time it against the teacher in ONNX Runtime")

        result = ExportResult(
            directory=out_dir, study=study.study_name, trial=trial.number, plan_summary=plan.describe(),
            plain_hf=plain, trial_accuracy=stored, rebuilt_accuracy=rebuilt, torch_max_logit_diff=diff,
            onnx_accuracy=onnx_acc, onnx_agreement=agreement, latency=rows, notes=tuple(notes),
            onnx_files=tuple(onnx_info.get("stages") or [onnx_info["file"]]) if onnx_info else (),
        )
        metrics = _metrics(study, trial.number, stored_record, cfg, bench, result, recovered, profile, onnx_info, measured,
                           as_trial)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported trial %d of '%s' to %s", trial.number, study.study_name, out_dir)
    return result


def _check_plain(directory: Path, logits: torch.Tensor, bench: Workbench) -> None:
    """Plain transformers must load ``directory`` into the same model."""
    plain = auto_class(bench.kind).from_pretrained(directory).eval()
    with compute_lock():
        diff = (bench.kind.outputs(plain, bench.eval) - logits).abs().max().item()
    if diff > TORCH_LOGIT_TOLERANCE:
        raise ExportError(f"plain transformers loads a different model from the export (largest logit difference {diff:.2e})")


def _write_onnx(
    directory: Path, student: nn.Module, plan: CompressionPlan, tokenizer: PreTrainedTokenizerBase, bench: Workbench,
    logits: torch.Tensor, profile: DeviceProfile,
) -> tuple[float, float, dict[str, Any], OnnxRunner]:
    accepted = set(_forward_args(student))
    names = [n for n in tokenizer.model_input_names if n in accepted]
    with compute_lock():
        facts = export_onnx(student, plan, directory / "model.onnx", names)
    runner = facts.runner(threads=min(profile.threads, os.cpu_count() or 1))
    with compute_lock():
        onnx_logits = runner.logits(bench.eval)
    labels = bench.eval.labels
    acc = 100 * accuracy(onnx_logits, labels).value
    torch_acc = 100 * accuracy(logits, labels).value
    onnx_right, torch_right = onnx_logits.argmax(-1) == labels, logits.argmax(-1) == labels
    agreement = (onnx_logits.argmax(-1) == logits.argmax(-1)).float().mean().item()
    allowed, noise = onnx_tolerance(int((onnx_right & ~torch_right).sum()), int((torch_right & ~onnx_right).sum()), len(labels))
    if not abs(acc - torch_acc) <= allowed:
        raise ExportError(
            f"{_onnx_files(facts)} scores {acc:.2f}% on the eval split but the PyTorch model {torch_acc:.2f}% "
            f"(more than {allowed:.2f} pt apart; {100 * agreement:.1f}% of predictions agree); nothing was written"
        )
    info = {**facts.to_dict(), "accuracy": acc, "torch_accuracy": torch_acc, "agreement_with_torch": agreement,
            "max_abs_logit_diff": (onnx_logits - logits).abs().max().item(),
            "only_onnx_right": int((onnx_right & ~torch_right).sum()), "only_torch_right": int((torch_right & ~onnx_right).sum()),
            "paired_noise_pt": noise, "allowed_difference_pt": allowed}
    return acc, agreement, info, runner


def _onnx_files(facts: OnnxFacts) -> str:
    """How the ONNX model is named in messages: its file, or its stages' files."""
    names = [p.name for p in facts.files]
    return names[0] if len(names) == 1 else f"{names[0]}…{names[-1]} ({len(names)} stages)"


def onnx_tolerance(only_onnx_right: int, only_torch_right: int, n: int) -> tuple[float, float]:
    """``(allowed, noise)``: how far, in points, the ONNX model's accuracy may be from the PyTorch
    model's, and the paired 95 % noise of that difference.

    Two int8 implementations (PyTorch's 8-bit weights, ONNX Runtime's 7-bit ones on x86) round
    differently, so a few percent of near-tie examples flip between them, and the accuracy
    difference is the net of those flips: its paired noise is ``z·sqrt(b + c)/n`` (McNemar; b, c =
    examples only one model gets right). ``noise`` is that at 95 % (z = 1.96). Export refuses only
    beyond :data:`ONNX_TOLERANCE_PT` or the 99.9 % noise (z = 3.29), whichever is larger: a broken
    export loses far more, and at 95 % one sound export in twenty would be refused.
    """
    flips = math.sqrt(only_onnx_right + only_torch_right) / max(n, 1)
    return max(ONNX_TOLERANCE_PT, 100 * 3.29 * flips), 100 * 1.96 * flips


def _forward_args(model: nn.Module) -> list[str]:
    return list(inspect.signature(model.forward).parameters)


def _rows(measured: dict[str, ProfileLatency]) -> list[LatencyRow]:
    """Rows with each model's speedup over the teacher: the product of the chain's ratios."""
    host = host_info()["host"]
    rows, speedup, previous = [], 1.0, "teacher"
    for label, lat in measured.items():
        speedup *= lat.speedup
        teacher_ms = lat.baseline_ms if previous == "teacher" else None
        note = "" if previous == "teacher" else f"{lat.speedup:.2f}× faster than {previous}, timed in the same rounds"
        rows.append(LatencyRow(label, lat.candidate_ms, teacher_ms, speedup, "measured", host, note))
        previous = label
    return rows


def _stored_row(stored: record.TrialRecord, cfg: StudyConfig) -> LatencyRow:
    kind = stored.latency_kind
    return LatencyRow(
        "trial (stored)", stored.candidate_ms, stored.baseline_ms, stored.speedup, kind,
        (stored.host_name or "?") if kind == "measured" else f"profile {cfg.profile.name}",
    )


def _metrics(
    study: optuna.Study, number: int, stored: record.TrialRecord, cfg: StudyConfig, bench: Workbench,
    result: ExportResult, recovered: bool, profile: DeviceProfile, onnx_info: dict[str, Any] | None,
    measured: dict[str, ProfileLatency], as_trial: dict[str, ProfileLatency],
) -> dict[str, Any]:
    """metrics.json: the trial's figures as the study stored them, and the export's own checks."""
    n_eval = len(bench.eval)
    return {
        "format_version": FORMAT_VERSION,
        "study": study.study_name,
        "trial": number,
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "plan": result.plan_summary,
        "simulated_bits": stored.simulated,
        "plain_hf_loadable": result.plain_hf,
        "trial_figures": {
            "baseline": stored.baseline,
            "accuracy": stored.accuracy.to_dict() if stored.accuracy else None,
            "metric": stored.metric.to_dict() if stored.metric else None,
            "accuracy_drop_pt": stored.accuracy_drop,
            "teacher_accuracy": bench.teacher.eval_accuracy.to_dict(),
            "latency": stored.latency.to_dict() if stored.latency else None,
            "speedup": stored.speedup,
            "size": stored.size.to_dict() if stored.size else None,
            "host": stored.host.to_dict() if stored.host else None,
            "recovery": stored.recovery.to_dict() if stored.recovery else None,
        },
        "how_measured": {
            "accuracy": f"top-1 accuracy on the study's eval split ({n_eval} examples, task '{cfg.task.source}', "
            f"seed {cfg.task.seed}, max_length {cfg.task.max_length}); 95 % percentile-bootstrap interval",
            "latency": f"median of interleaved rounds (ABBA) against the uncompressed teacher after warm-up, profile "
            f"'{cfg.profile.name}' ({cfg.profile.kind}, {cfg.profile.runtime_label}): {cfg.profile.inputs_label}, "
            f"{cfg.profile.threads} thread(s); speedup = teacher / candidate",
            "size": "bytes of model.safetensors as export writes it (int8 weights as int8, simulated 4/2-bit "
            "weights packed per byte, shared tensors once); records made before that counted the serialised "
            "state dict with simulated weights at their width",
        },
        "export": {
            "rebuilt_accuracy": result.rebuilt_accuracy,
            "trial_accuracy": result.trial_accuracy,
            "rebuild_tolerance_pt": REBUILD_TOLERANCE_PT,
            "recovered": recovered,
            "torch_max_abs_logit_diff": result.torch_max_logit_diff,
            "latency_profile": profile.model_dump(mode="json", exclude_none=True),
            "latency": {**{label: {"baseline": base, **lat.to_dict()}
                           for (base, _), (label, lat) in zip([("teacher", 0), *measured.items()], measured.items())},
                        **{label: {"baseline": "teacher (ONNX Runtime)", **lat.to_dict()} for label, lat in as_trial.items()}},
            "host": bench.host,
            "notes": list(result.notes),
        },
        "onnx": onnx_info,
        "latency_comparison": [asdict(row) for row in result.latency],
    }
