"""Export one trial: rebuild its model from the plan, write the directory, and prove it is the same model.

The rebuild is the trial's own call, :func:`autocompress.search.build.candidate` on the study's cached
teacher (structure by the study's importance scores → the same seeded distillation → bit-widths), and is checked
against the trial before anything is written: its accuracy on the eval split (as the task kind
counts it: a language model's, the likeliest next token at every position) must be within
:data:`REBUILD_TOLERANCE_PT` of the stored one, and a task metric with a unit of its own
(perplexity) within :data:`REBUILD_NATURAL_TOLERANCE` of the stored figure (distillation is
seeded; on the same host and library versions the rebuild is bit-exact, elsewhere floating-point
order may move a few examples). The written directory is then loaded back and must give the
rebuilt model's outputs (the task kind's, compared with the teacher's as the trial compared
them); a model that generates must also ``generate()`` exactly the rebuilt model's tokens, greedily
from the first :data:`PROMPT_TOKENS` tokens of :data:`GENERATION_PROMPTS` eval documents
(:data:`NEW_TOKENS` new tokens each), and so must plain ``transformers`` where it loads the
directory. The ONNX file (encoders only), when asked for, must score within
:data:`ONNX_TOLERANCE_PT` of the PyTorch model (or within the paired sampling noise of the two
int8 models' disagreements at the 99.9 % level, if larger: :func:`onnx_tolerance`; beyond the 95 %
level the export says so in a note). The exported PyTorch model is then timed against the teacher
as the study timed its trials (interleaved rounds on the study's profile: its shapes, or for a
generation workload its prompts and new tokens, with time to first token and per output token),
and the ONNX model against the PyTorch export. Everything is written to a temporary sibling
directory that becomes ``out_dir`` only at the end.
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
from autocompress.tasks.batches import Encoded
from autocompress.tasks.evaluate import Metric, accuracy
from autocompress.tasks.kind import task_kind
from autocompress.latency.runtimes.onnx_model import OnnxFacts, OnnxRunner, check_onnx_plan, export_onnx, require_onnx
from autocompress.export.pick import exportable_trial
from autocompress.export.saved import FORMAT_VERSION, auto_class, load, save_student
from autocompress.latency.inputs import InputsFn, TaskInputs
from autocompress.latency.runtimes.ort import measure_runners
from autocompress.latency.measure import ProfileLatency, compute_lock, host_info, measure_profile
from autocompress.schema.profile import DeviceProfile
from autocompress.models.adapters import load_tokenizer
from autocompress.schema.plan import CompressionPlan
from autocompress.store.artifacts import artifact_store_for, fetch_teacher_cache
from autocompress.store.storage import stored_config
from autocompress.train.teacher import cache_entry, is_cached
from autocompress.search.workbench import Workbench, prepare

__all__ = [
    "REBUILD_TOLERANCE_PT",
    "REBUILD_NATURAL_TOLERANCE",
    "ONNX_TOLERANCE_PT",
    "TORCH_LOGIT_TOLERANCE",
    "GENERATION_PROMPTS",
    "PROMPT_TOKENS",
    "NEW_TOKENS",
    "GenerationCheck",
    "LatencyRow",
    "ExportResult",
    "export_trial",
    "onnx_tolerance",
]

log = logging.getLogger(__name__)

REBUILD_TOLERANCE_PT = 0.5  # rebuilt vs stored accuracy, points
#: rebuilt vs stored task metric in its own unit (perplexity), relative: 1 % (for a figure below 1, 0.01 in its unit)
REBUILD_NATURAL_TOLERANCE = 0.01
ONNX_TOLERANCE_PT = 0.5  # ONNX Runtime vs PyTorch accuracy on the eval split, points (or the paired noise, if larger)
#: loaded vs rebuilt model: the largest absolute difference of their outputs (logits, log-probabilities)
TORCH_LOGIT_TOLERANCE = 1e-4
GENERATION_PROMPTS = 8  # eval documents whose first tokens prompt the generation check
PROMPT_TOKENS = 8  # tokens of each prompt
NEW_TOKENS = 16  # tokens generated greedily after each prompt
#: the message that refuses --onnx for a model that generates
ONNX_DECODER = ("--onnx exports encoders only; decoders ship for PyTorch (autocompress.load, or transformers where "
                "it says so)")


@dataclass(frozen=True)
class LatencyRow:
    """One model's latency on the study's profile shapes and its speedup over the teacher.

    The PyTorch export is timed against the teacher, the ONNX model against the PyTorch export
    (each pair interleaved, so each ratio is on one clock); the ONNX speedup is their product.
    """

    what: str  # "trial (stored)", "export (PyTorch)", "export (ONNX Runtime)"
    candidate_ms: float | None  # a generation workload: per request (the prompt's pass, then the new tokens)
    teacher_ms: float | None
    speedup: float | None
    kind: str  # "measured" or "predicted"
    where: str  # host or profile it comes from
    note: str = ""  # how the speedup was obtained when not timed against the teacher directly
    # a generation workload's split (None otherwise): time to first token (the prompt's pass) and per output token
    ttft_ms: float | None = None
    teacher_ttft_ms: float | None = None
    ttft_speedup: float | None = None
    tpot_ms: float | None = None
    teacher_tpot_ms: float | None = None
    tpot_speedup: float | None = None


@dataclass(frozen=True)
class GenerationCheck:
    """What the export's generation check compared: greedy ``generate()`` from the first tokens of eval
    documents, the loaded export (and plain transformers, where it loads the directory) against the
    rebuilt trial model; every generated token was the same, or nothing was written."""

    prompts: int
    prompt_tokens: int  # tokens of the longest prompt
    new_tokens: int  # at most, per prompt (fewer where the model ends the text)
    plain_hf: bool  # plain transformers generated them too
    tokens: tuple[tuple[int, ...], ...] = ()  # the tokens generated after each prompt

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompts, "prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens,
                "plain_hf": self.plain_hf, "identical": True, "do_sample": False, "num_beams": 1}


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    study: str
    trial: int
    plan_summary: str
    plain_hf: bool  # the plain transformers auto class (AutoModelForSequenceClassification, ...) loads the directory
    trial_accuracy: float  # %, stored with the trial (a language model's: next-token accuracy)
    rebuilt_accuracy: float  # %, the rebuilt model on the same eval split
    torch_max_logit_diff: float  # loaded from the directory vs rebuilt: the largest difference of their outputs
    onnx_accuracy: float | None = None  # %
    onnx_agreement: float | None = None  # fraction of eval predictions equal to PyTorch's
    onnx_files: tuple[str, ...] = ()  # the ONNX file, or a model with exits' stages in the order they run
    latency: tuple[LatencyRow, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    trial_metric: Metric | None = None  # the task metric stored with the trial (perplexity: its own unit in natural)
    rebuilt_metric: Metric | None = None  # the rebuilt model's, on the same eval split
    teacher_metric: Metric | None = None  # the teacher's
    generation: GenerationCheck | None = None  # a model that generates: what generate() was checked on


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


def _measure(profile: DeviceProfile, chain: list[tuple[str, Timed]], task: TaskInputs | None,
             make_inputs: InputsFn) -> dict[str, ProfileLatency]:
    """Time each model of ``chain`` against the one before it (the first is the teacher), interleaved
    round by round on every workload of the profile (``task``: the study's eval examples, for task
    inputs; ``make_inputs``: the task kind's fixed-shape inputs); each result's baseline is the
    previous model. A generation workload (``profile.new_tokens``) is timed as the study timed its
    trials, prompts then new tokens (:func:`~autocompress.latency.measure.measure_profile`)."""
    teacher = chain[0][1]
    if not isinstance(teacher, nn.Module):
        raise TypeError("the chain starts with the teacher, a PyTorch model")
    vocab = teacher.config.vocab_size
    out: dict[str, ProfileLatency] = {}
    for (_, baseline), (label, candidate) in zip(chain, chain[1:]):
        if profile.generates:
            if not isinstance(baseline, nn.Module) or not isinstance(candidate, nn.Module):
                raise TypeError("a generation workload times PyTorch models")
            out[label] = measure_profile(baseline, candidate, profile, vocab_size=vocab, task=task,
                                         make_inputs=make_inputs)
        else:
            out[label] = measure_runners(baseline, candidate, profile, vocab_size=vocab, task=task)
    return out


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
    cfg = stored_config(study)
    stored_record = record.read(trial)
    plan = stored_record.plan
    if plan is None:
        raise ExportError(f"trial {trial.number}'s stored plan cannot be read by this version of autocompress")
    if onnx:
        if task_kind(cfg.task.kind).generates:
            raise ExportError(ONNX_DECODER)
        check_onnx_plan(plan)
        require_onnx()
    bench = _workbench(study, cfg, Path(cache_dir), storage_url, onnx)
    kind = bench.kind
    notes: list[str] = []
    if not record.feasible(trial):
        notes.append(f"trial {trial.number} is outside the study's accuracy-drop budget (it is not on the feasible front)")

    built = build.candidate(bench, plan, keep_float=True, scale=stored_record.scale)  # the trial's own builder
    model, recovered = built.model, built.recovered
    student = built.float_model
    if student is None:
        raise RuntimeError("build.candidate(keep_float=True) returns the float model")
    reference = bench.teacher.eval_logits  # what the trial compared its outputs with
    with compute_lock():  # a local study's latency measurement never overlaps this
        outputs = kind.outputs(model, bench.eval, reference)
    rebuilt = 100 * kind.accuracy(outputs, bench.eval).value
    stored = 100 * stored_record.accuracy.value if stored_record.accuracy is not None else math.nan
    if not abs(rebuilt - stored) <= REBUILD_TOLERANCE_PT:
        raise ExportError(
            f"the rebuilt model of trial {trial.number} scores {rebuilt:.2f}% on the eval split but the trial "
            f"recorded {stored:.2f}% (more than {REBUILD_TOLERANCE_PT} pt apart): the teacher cache, the data or "
            "the library versions differ from the study's; nothing was written"
        )
    if rebuilt != stored:
        notes.append(f"rebuilt accuracy differs from the trial's by {rebuilt - stored:+.2f} pt (tolerance {REBUILD_TOLERANCE_PT} pt)")
    rebuilt_metric = kind.metric(cfg.task.metric, outputs, bench.eval, reference)
    notes += _check_natural(stored_record.metric, rebuilt_metric, trial.number)
    prompts = _prompts(bench.eval) if kind.generates else []
    with compute_lock():
        tokens = _generate(model, prompts)

    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = load_tokenizer(cfg.model.source)
        labels = list(bench.task.label_names)
        plain = save_student(tmp, model, plan, bench.teacher.model.config, labels, kind)
        tokenizer.save_pretrained(tmp)

        loaded = load(tmp)
        with compute_lock():
            loaded_outputs = kind.outputs(loaded, bench.eval, reference)
            loaded_tokens = _generate(loaded, prompts)
        diff = (loaded_outputs - outputs).abs().max().item()
        if diff > TORCH_LOGIT_TOLERANCE or kind.agreement(loaded_outputs, outputs) < 1.0:
            raise ExportError(f"the saved model does not reproduce the trial's model (largest output difference "
                              f"{diff:.2e})")
        if loaded_tokens != tokens:
            raise ExportError(f"the saved model does not generate the trial model's tokens "
                              f"({_first_difference(tokens, loaded_tokens)}); nothing was written")
        if plain:
            _check_plain(tmp, outputs, tokens, prompts, bench)
            notes.append(f"plain transformers loads it too: {kind.auto_class}.from_pretrained(DIR) computes the same"
                         + (" and generates the same tokens" if prompts else ""))
        else:
            notes.append("no standard config describes it (pruned heads, layers of different widths, shared or "
                         "quantised layers): load it with autocompress.load(DIR)")
        generation = GenerationCheck(prompts=len(prompts), prompt_tokens=max(len(p) for p in prompts),
                                     new_tokens=NEW_TOKENS, plain_hf=plain, tokens=tuple(tokens)) if prompts else None

        profile = _export_config(cfg, onnx).profile
        chain: list[tuple[str, Timed]] = [("teacher", bench.teacher.model), ("export (PyTorch)", loaded)]
        onnx_acc = agreement = None
        onnx_info: dict[str, Any] | None = None
        if onnx:
            onnx_acc, agreement, onnx_info, runner = _write_onnx(tmp, student, plan, tokenizer, bench, outputs, profile)
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
        measured = _measure(profile, chain, bench.task_inputs, kind.timed_inputs)
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
            trial_metric=stored_record.metric, rebuilt_metric=rebuilt_metric, teacher_metric=bench.teacher_metric,
            generation=generation,
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


def _check_natural(stored: Metric | None, rebuilt: Metric, number: int) -> list[str]:
    """Refuse a rebuilt task metric in its own unit (perplexity) beyond :data:`REBUILD_NATURAL_TOLERANCE`
    of the trial's; a note when it differs within it. Metrics without a unit of their own: nothing."""
    if stored is None or stored.natural is None or rebuilt.natural is None:
        return []
    allowed = REBUILD_NATURAL_TOLERANCE * max(1.0, abs(stored.natural))
    gap = rebuilt.natural - stored.natural
    if not abs(gap) <= allowed:
        raise ExportError(
            f"the rebuilt model of trial {number} has {rebuilt.name} {rebuilt.natural:.4g} on the eval split but the "
            f"trial recorded {stored.natural:.4g} (more than {REBUILD_NATURAL_TOLERANCE:.0%} apart): the teacher "
            "cache, the data or the library versions differ from the study's; nothing was written"
        )
    if gap != 0:
        return [f"rebuilt {rebuilt.name} differs from the trial's by {gap:+.4g} ({gap / stored.natural:+.2%}; "
                f"tolerance {REBUILD_NATURAL_TOLERANCE:.0%})"]
    return []


def _prompts(data: Encoded) -> list[list[int]]:
    """The first :data:`PROMPT_TOKENS` tokens of the first :data:`GENERATION_PROMPTS` eval documents
    that have that many (fewer where the documents are shorter: then the first documents' own tokens
    but their last, so that each prompt has a next token to agree on)."""
    full = [ids[:PROMPT_TOKENS] for ids in data.input_ids if len(ids) >= PROMPT_TOKENS][:GENERATION_PROMPTS]
    if len(full) == GENERATION_PROMPTS or len(full) == len(data):
        return full
    return [ids[: max(1, min(PROMPT_TOKENS, len(ids) - 1))] for ids in data.input_ids[:GENERATION_PROMPTS] if ids]


@torch.inference_mode()
def _generate(model: nn.Module, prompts: list[list[int]]) -> list[tuple[int, ...]]:
    """The tokens ``model.generate()`` makes after each prompt: greedy, at most :data:`NEW_TOKENS`,
    prompts of one length in one batch (no padding, so nothing but the model decides the tokens)."""
    out: dict[int, tuple[int, ...]] = {}
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    for length, rows in by_length.items():
        ids = torch.tensor([prompts[i] for i in rows], dtype=torch.long, device=device)
        made = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                              do_sample=False, num_beams=1)
        for i, row in zip(rows, made[:, length:].tolist()):
            out[i] = tuple(row)
    return [out[i] for i in range(len(prompts))]


def _first_difference(want: list[tuple[int, ...]], got: list[tuple[int, ...]]) -> str:
    """Where two lists of generated tokens first differ, in words."""
    for i, (a, b) in enumerate(zip(want, got)):
        if a != b:
            at = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return f"prompt {i + 1}, new token {at + 1}"
    return "a different number of prompts"


def _check_plain(directory: Path, outputs: torch.Tensor, tokens: list[tuple[int, ...]], prompts: list[list[int]],
                 bench: Workbench) -> None:
    """Plain transformers must load ``directory`` into the same model: the same outputs on the eval
    split and, for a model that generates, the same tokens after ``prompts``."""
    plain = auto_class(bench.kind).from_pretrained(directory).eval()
    with compute_lock():
        diff = (bench.kind.outputs(plain, bench.eval, bench.teacher.eval_logits) - outputs).abs().max().item()
        plain_tokens = _generate(plain, prompts)
    if diff > TORCH_LOGIT_TOLERANCE:
        raise ExportError(f"plain transformers loads a different model from the export (largest output difference "
                          f"{diff:.2e})")
    if plain_tokens != tokens:
        raise ExportError(f"plain transformers loads a model that generates other tokens than the export "
                          f"({_first_difference(tokens, plain_tokens)})")


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
        split = lat.extra if previous == "teacher" else {}  # a generation workload's, against the teacher
        rows.append(LatencyRow(label, lat.candidate_ms, teacher_ms, speedup, "measured", host, note,
                               **_generation_split(split)))
        previous = label
    return rows


def _generation_split(figures: Any) -> dict[str, float | None]:
    """A generation workload's time to first token and per output token, with the teacher's and the
    speedups, from a measurement's split (a mapping) or a stored trial's figures (an object)."""
    def get(key: str) -> float | None:
        value = figures.get(key) if isinstance(figures, dict) else getattr(figures, key, None)
        return None if value is None else float(value)

    return {"ttft_ms": get("ttft_ms"), "teacher_ttft_ms": get("baseline_ttft_ms"), "ttft_speedup": get("ttft_speedup"),
            "tpot_ms": get("tpot_ms"), "teacher_tpot_ms": get("baseline_tpot_ms"), "tpot_speedup": get("tpot_speedup")}


def _stored_row(stored: record.TrialRecord, cfg: StudyConfig) -> LatencyRow:
    kind = stored.latency_kind
    return LatencyRow(
        "trial (stored)", stored.candidate_ms, stored.baseline_ms, stored.speedup, kind,
        (stored.host_name or "?") if kind == "measured" else f"profile {cfg.profile.name}",
        **_generation_split(stored.latency),
    )


def _metrics(
    study: optuna.Study, number: int, stored: record.TrialRecord, cfg: StudyConfig, bench: Workbench,
    result: ExportResult, recovered: bool, profile: DeviceProfile, onnx_info: dict[str, Any] | None,
    measured: dict[str, ProfileLatency], as_trial: dict[str, ProfileLatency],
) -> dict[str, Any]:
    """metrics.json: the trial's figures as the study stored them, and the export's own checks."""
    n_eval = len(bench.eval)
    generation_latency = (
        {"generation": f"each request is a prompt, then {profile.new_tokens} tokens generated greedily with the "
         "key/value cache; candidate_ms and teacher_ms are per request, ttft_ms the prompt's pass (time to first "
         "token), tpot_ms one decoding step (time per output token), each split's speedup the median of its "
         "per-round ratios"} if profile.generates else {})
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
            "teacher_metric": bench.teacher_metric.to_dict(),
            "latency": stored.latency.to_dict() if stored.latency else None,
            "speedup": stored.speedup,
            "size": stored.size.to_dict() if stored.size else None,
            "host": stored.host.to_dict() if stored.host else None,
            "recovery": stored.recovery.to_dict() if stored.recovery else None,
        },
        "how_measured": {
            "accuracy": f"accuracy as task kind '{bench.kind.name}' counts it (a classifier: its top-1 class; a "
            f"language model: its likeliest next token at every position) on the study's eval split ({n_eval} "
            f"examples, task '{cfg.task.source}', seed {cfg.task.seed}, max_length {cfg.task.max_length}); 95 % "
            "percentile-bootstrap interval",
            "metric": f"task.metric '{cfg.task.metric}' on the same split; 95 % percentile-bootstrap interval (a "
            "language model's over documents). A metric with a unit of its own (perplexity) keeps it in natural, "
            "with its interval (natural_low, natural_high) and the teacher's on the same documents "
            "(teacher_natural); its value is then relative to the teacher's (perplexity: the teacher's over the "
            "candidate's)",
            "latency": f"median of interleaved rounds (ABBA) against the uncompressed teacher after warm-up, profile "
            f"'{cfg.profile.name}' ({cfg.profile.kind}, {cfg.profile.runtime_label}): {cfg.profile.inputs_label}, "
            f"{cfg.profile.threads} thread(s); speedup = teacher / candidate",
            **generation_latency,
            "size": "bytes of model.safetensors as export writes it (int8 weights as int8, simulated 4/2-bit "
            "weights packed per byte, shared tensors once); records made before that counted the serialised "
            "state dict with simulated weights at their width",
        },
        "export": {
            "rebuilt_accuracy": result.rebuilt_accuracy,
            "trial_accuracy": result.trial_accuracy,
            "rebuild_tolerance_pt": REBUILD_TOLERANCE_PT,
            "rebuilt_metric": result.rebuilt_metric.to_dict() if result.rebuilt_metric else None,
            "rebuild_natural_tolerance": REBUILD_NATURAL_TOLERANCE,
            "recovered": recovered,
            "torch_max_abs_logit_diff": result.torch_max_logit_diff,
            "generation": result.generation.to_dict() if result.generation else None,
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
