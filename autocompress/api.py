"""The Python API: what the command line does, as functions a notebook or a script calls.

Every function here calls the same library code as the ``autocompress`` command: a study run from
Python is the study ``autocompress run`` would run, an export is ``autocompress export``'s, a report
is ``autocompress report``'s. Configs may be given as a :class:`~autocompress.schema.config.StudyConfig`,
a dict of the YAML's keys or the path of a search-space YAML; plans as a
:class:`~autocompress.schema.plan.CompressionPlan`, a dict or the path of a plan YAML. Whatever a
user can get wrong raises an :class:`~autocompress.errors.AutocompressError` with a message that
says what to change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from pydantic import ValidationError
from torch import nn

from autocompress.errors import AutocompressError, ConfigError, DataError, ExportError, PlanError
from autocompress.export import ExportResult, exportable_trial, pick_trial
from autocompress.export import export_trial as _export_trial
from autocompress.export import load as _load
from autocompress.models.adapters import load_tokenizer
from autocompress.ops import Selection
from autocompress.ops import apply_plan as _apply_plan
from autocompress.ops.importance import unit_importance
from autocompress.report import FORMATS, collect, write_table
from autocompress.report import write_report as _write_html
from autocompress.schema.config import ExitsSpace, PruningConfig, RecoveryConfig, StudyConfig, TaskConfig, parse_config
from autocompress.schema.config import load_config as _load_config
from autocompress.schema.plan import CompressionPlan
from autocompress.search import build
from autocompress.search.workbench import Workbench
from autocompress.store import record
from autocompress.store.storage import DEFAULT_CACHE, default_output, default_storage, open_storage, stored_config
from autocompress.store.storage import load as _load_study
from autocompress.store.urls import mask_url
from autocompress.study.listing import metric_name
from autocompress.study.runner import RunResult, completed
from autocompress.study.session import StudyProgress, resume_request, run_request
from autocompress.study.session import run_study as _run_study
from autocompress.tasks.batches import Encoded
from autocompress.tasks.data import Examples, TaskData
from autocompress.tasks.kind import TaskKind, task_kind
from autocompress.train.distill import teacher_states

__all__ = [
    "DEFAULT_RECOVERY",
    "Study",
    "TrialEvent",
    "TrialResult",
    "apply_plan",
    "export_trial",
    "load",
    "load_config",
    "open_study",
    "run_study",
    "write_report",
]

ConfigLike = StudyConfig | Mapping[str, Any] | str | Path
PlanLike = CompressionPlan | Mapping[str, Any] | str | Path
#: examples to distil on: ``(texts, labels)``, :class:`~autocompress.tasks.data.Examples`, a study's
#: :class:`~autocompress.tasks.data.TaskData` (its train split), or a prepared
#: :class:`~autocompress.search.workbench.Workbench`
DataLike = tuple[Sequence[str], Sequence[int | str]] | Examples | TaskData | Workbench
#: what a plan's recovery distils with when a teacher is given and no settings are
DEFAULT_RECOVERY = RecoveryConfig(epochs=1.0)


# ------------------------------------------------------------------------------------------ configs
def load_config(path: str | Path) -> StudyConfig:
    """The validated study config in the search-space YAML at ``path``.

    Raises :class:`~autocompress.errors.ConfigError` naming the file and the key for a missing file,
    invalid YAML, an unknown key, a wrong type or an out-of-range value.
    """
    return _load_config(path)


def _config(config: ConfigLike) -> tuple[StudyConfig, str | None]:
    """The config, and the file it came from (named in errors)."""
    if isinstance(config, StudyConfig):
        return config, None
    if isinstance(config, Mapping):
        return parse_config(dict(config), file="<config dict>"), None
    if isinstance(config, (str, Path)):
        return _load_config(config), str(config)
    raise AutocompressError(
        f"a config is a StudyConfig, a dict of its keys or the path of a search-space YAML, not {type(config).__name__}"
    )


def _plan(plan: PlanLike) -> CompressionPlan:
    if isinstance(plan, CompressionPlan):
        return plan
    if isinstance(plan, Mapping):
        return CompressionPlan.from_dict(dict(plan))
    if isinstance(plan, (str, Path)):
        path = Path(plan)
        if not path.is_file():
            raise PlanError(f"no plan file at '{path}'; give a CompressionPlan, a dict or the path of a plan YAML "
                            "(an export's plan.yaml)")
        try:
            return CompressionPlan.from_yaml(path.read_text(encoding="utf-8"))
        except PlanError as exc:
            raise PlanError(f"{path}: {exc}") from None
    raise PlanError(f"a plan is a CompressionPlan, a dict or the path of a plan YAML, not {type(plan).__name__}")


# ------------------------------------------------------------------------------------------ apply_plan
def apply_plan(
    model: nn.Module,
    plan: PlanLike,
    *,
    teacher: nn.Module | None = None,
    data: DataLike | None = None,
    tokenizer: Any = None,
    recovery: RecoveryConfig | Mapping[str, Any] | None = None,
    max_length: int = 128,
    task: str = TaskConfig.model_fields["kind"].default,
) -> nn.Module:
    """A compressed copy of ``model`` following ``plan``, in eval mode; ``model`` is not modified.

    - Alone, every step of the plan that needs no training is applied (depth, heads and FFN
      neurons, sharing, exit heads, bit-widths); heads and neurons are ranked by weight magnitude.
    - With ``data`` (``(texts, labels)`` with a ``tokenizer``, or :class:`~autocompress.tasks.data.Examples`),
      heads and neurons are ranked by their importance on those examples, as a study ranks them.
    - With a ``teacher`` too, the compressed structure is recovered by knowledge distillation from
      the teacher on ``data`` (a study's own distillation, with its depth scaling), the plan's
      exit heads are distilled from it, and the bit-widths applied last. ``recovery`` is a
      :class:`~autocompress.schema.config.RecoveryConfig` or a dict of changes to
      :data:`DEFAULT_RECOVERY` (one epoch). A plan that changes no structure is not trained.
    - With a prepared study (a :class:`~autocompress.search.workbench.Workbench`) as ``data``,
      ``model`` must be its teacher: the result is the model the study's trial of this plan built.

    ``labels`` are class ids, or label names the model's ``config.label2id`` knows. ``tokenizer`` is
    a tokenizer or the name or path to load one from (default: where ``model`` was loaded from).
    Raises :class:`~autocompress.errors.PlanError` when the plan does not fit the model, and an
    :class:`~autocompress.errors.AutocompressError` for data, tokenizer or settings that cannot work.
    """
    chosen = _plan(plan)
    if isinstance(data, Workbench):
        return _as_in_study(model, chosen, teacher, data)
    if data is None:
        if teacher is not None:
            raise DataError("a teacher distils on examples: give data=(texts, labels) and a tokenizer as well")
        return _apply_plan(model, chosen)
    settings = _recovery(recovery) if teacher is not None else None  # before anything slow
    kind = task_kind(task)
    encoded = kind.encode(_tokenizer(tokenizer, model), _examples(data, model), max_length)
    pruning = PruningConfig()  # as a study scores units: the default criterion on the first examples
    selection = Selection(importance=unit_importance(model, pruning.criterion, encoded.head(pruning.calibration_examples)))
    if teacher is None or settings is None or not (build.needs_recovery(settings, chosen) or chosen.exits is not None):
        return _apply_plan(model, chosen, selection)  # nothing to train
    return _distilled(model, chosen, selection, teacher, encoded, kind, settings)


def _recovery(recovery: RecoveryConfig | Mapping[str, Any] | None) -> RecoveryConfig:
    if recovery is None:
        return DEFAULT_RECOVERY
    if isinstance(recovery, RecoveryConfig):
        return recovery
    try:
        return RecoveryConfig.model_validate({**DEFAULT_RECOVERY.model_dump(), **dict(recovery)})
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(msg, key=".".join(["recovery", *map(str, err["loc"])])) from None


def _as_in_study(model: nn.Module, plan: CompressionPlan, teacher: nn.Module | None, bench: Workbench) -> nn.Module:
    if model is not bench.teacher.model or (teacher is not None and teacher is not bench.teacher.model):
        raise AutocompressError("a prepared study compresses its own teacher: call apply_plan(bench.teacher.model, "
                                "plan, data=bench)")
    return build.candidate(bench, plan).model


def _distilled(model: nn.Module, plan: CompressionPlan, selection: Selection, teacher: nn.Module, data: Encoded,
               kind: TaskKind, recovery: RecoveryConfig) -> nn.Module:
    """The candidate a study would build from ``model``, with ``teacher``'s outputs on ``data`` as the distillation set."""
    states = (teacher_states(teacher, data, range(1, teacher.config.num_hidden_layers + 1))
              if recovery.hidden_weight > 0 and build.needs_recovery(recovery, plan) else None)
    source = build.BuildSource(model=model, kind=kind, recovery=recovery, exits=ExitsSpace(), transfer=data,
                               transfer_logits=kind.outputs(teacher, data), importance=selection.importance,
                               transfer_states=states)
    return build.candidate(source, plan).model


def _tokenizer(tokenizer: Any, model: nn.Module) -> Any:
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    source = str(tokenizer) if tokenizer is not None else getattr(getattr(model, "config", None), "_name_or_path", "")
    if not source:
        raise DataError("the model was not loaded from a name or path: give tokenizer= (a tokenizer, or where to load one)")
    return load_tokenizer(source)


def _examples(data: Any, model: nn.Module) -> Examples:
    if isinstance(data, Examples):
        examples = data
    elif isinstance(data, TaskData):
        examples = data.train
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        texts, labels = list(data[0]), list(data[1])
        if len(texts) != len(labels):
            raise DataError(f"data has {len(texts)} texts but {len(labels)} labels; give one label per text")
        if not all(isinstance(t, str) for t in texts):
            raise DataError("data's texts must be strings")
        examples = Examples(texts, _label_ids(labels, model))
    else:
        raise DataError(f"data is (texts, labels), Examples, a study's TaskData or a prepared Workbench, not "
                        f"{type(data).__name__}")
    if len(examples) == 0:
        raise DataError("data holds no examples")
    return examples


def _label_ids(labels: list[Any], model: nn.Module) -> list[int]:
    config = getattr(model, "config", None)
    num = int(getattr(config, "num_labels", 0) or 0)
    named = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    out = []
    for label in labels:
        if isinstance(label, str):
            if label not in named:
                raise DataError(f"label '{label}' is not one of the model's labels ({', '.join(named) or 'none named'}); "
                                "give class ids or names from model.config.label2id")
            out.append(named[label])
        elif isinstance(label, int) and not isinstance(label, bool) and (num == 0 or 0 <= label < num):
            out.append(int(label))
        else:
            raise DataError(f"label {label!r} is not a class id of the model (0–{num - 1}) or a label name")
    return out


# ------------------------------------------------------------------------------------------ studies
@dataclass(frozen=True)
class TrialResult:
    """One stored trial's figures, as its trial record holds them."""

    number: int
    state: str  # COMPLETE, PRUNED (stopped by the fidelity policy), FAIL, RUNNING or WAITING
    plan: CompressionPlan | None
    plan_summary: str
    metric_name: str  # the study's task metric (task.metric): accuracy, macro_f1, perplexity, ...
    metric: float | None  # %, on the eval split (complete trials); perplexity: 100 × the teacher's over the candidate's
    drop: float | None  # points of the metric below the teacher
    speedup: float | None  # teacher latency / candidate latency on the study's profile
    size_mb: float | None  # simulated low-bit weights counted at their width
    latency_ms: float | None  # the candidate's latency on the study's profile
    fidelity: str | None  # how far it got: cheap, short or full
    reason: str | None  # why it failed or was stopped
    natural: float | None = None  # the metric in its own unit where ``metric`` is relative (perplexity, KL in nats)
    ttft_speedup: float | None = None  # generation profiles: time to the first token, teacher / candidate
    tpot_speedup: float | None = None  # generation profiles: time per output token, teacher / candidate

    @property
    def complete(self) -> bool:
        """A complete trial with its figures."""
        return self.state == "COMPLETE" and self.metric is not None


@dataclass(frozen=True)
class TrialEvent:
    """What ``run_study``'s ``on_trial`` callback receives each time a trial ends."""

    trial: TrialResult
    completed: int  # complete trials in the study so far (earlier runs' included)
    target: int  # complete trials the run aims for
    elapsed_s: float  # since this run's trials began


def _result(trial: FrozenTrial, metric: str) -> TrialResult:
    r = record.read(trial)
    score = r.score
    return TrialResult(
        number=trial.number, state=trial.state.name, plan=r.plan, plan_summary=r.plan_summary, metric_name=metric,
        metric=None if score is None else 100 * score.value, drop=r.accuracy_drop, speedup=r.speedup,
        size_mb=r.size_mb, latency_ms=r.candidate_ms, fidelity=r.fidelity, reason=r.reason,
        natural=None if score is None else getattr(score, "natural", None),
        ttft_speedup=None if r.latency is None else r.latency.ttft_speedup,
        tpot_speedup=None if r.latency is None else r.latency.tpot_speedup,
    )


class Study:
    """A stored study: its trials and Pareto front as typed rows, and what can be done with it.

    Each call reads the storage again, so a handle follows a study other workers are running.
    """

    def __init__(self, study: optuna.Study, url: str, last_run: RunResult | None = None) -> None:
        self.optuna: optuna.Study = study  # the Optuna study itself
        self.url = url  # its storage URL
        self.last_run = last_run  # what run_study did, on a handle it returned

    @property
    def name(self) -> str:
        return self.optuna.study_name

    @property
    def config(self) -> StudyConfig:
        """The config the study was created with."""
        return stored_config(self.optuna)

    def trials(self) -> list[TrialResult]:
        """Every trial, in the order they were started."""
        metric = metric_name(self.optuna)
        return [_result(t, metric) for t in self.optuna.get_trials(deepcopy=False)]

    def front(self) -> list[TrialResult]:
        """The Pareto front (feasible trials only, each plan once), fastest first."""
        metric = metric_name(self.optuna)
        rows = [_result(t, metric) for t in record.front(self.optuna)]
        return sorted(rows, key=lambda r: -(r.speedup or 0.0))

    def trial(self, number: int) -> TrialResult:
        """Trial ``number``; raises :class:`~autocompress.errors.AutocompressError` naming the trials there are."""
        for t in self.optuna.get_trials(deepcopy=False):
            if t.number == number:
                return _result(t, metric_name(self.optuna))
        count = len(self.optuna.get_trials(deepcopy=False))
        have = f"its trials are numbered 0–{count - 1}" if count else "it has no trials"
        raise AutocompressError(f"study '{self.name}' has no trial {number}; {have}")

    def export(self, out_dir: str | Path, *, trial: int | None = None, pick: str | None = None, onnx: bool = False,
               cache_dir: str | Path | None = None) -> ExportResult:
        """See :func:`export_trial`."""
        return export_trial(self, out_dir, trial=trial, pick=pick, onnx=onnx, cache_dir=cache_dir)

    def write_report(self, path: str | Path | None = None, format: str = "html") -> Path:
        """See :func:`write_report`."""
        return write_report(self, path, format=format)

    def __repr__(self) -> str:
        return f"Study({self.name!r}, storage={mask_url(self.url)!r})"


def open_study(name: str, storage: str | None = None) -> Study:
    """The stored study ``name`` (default storage: ``sqlite:///studies/<name>.db``).

    Raises :class:`~autocompress.errors.StudyNotFoundError` when the storage does not exist or holds
    no study of that name (the message lists those it holds).
    """
    url = storage or default_storage(name)
    return Study(_load_study(name, open_storage(url, must_exist=True)), url)


def _study(study: Study | str, storage: str | None) -> Study:
    if isinstance(study, Study):
        return study
    if isinstance(study, str):
        return open_study(study, storage)
    raise AutocompressError(f"give a Study or a study's name, not {type(study).__name__}")


class _Listener(StudyProgress):
    """The study session's progress listener, telling ``on_trial`` about each ended trial and
    passing everything on to ``progress``."""

    def __init__(self, on_trial: Callable[[TrialEvent], None] | None, progress: StudyProgress | None) -> None:
        self.on_trial, self.progress = on_trial, progress or StudyProgress()
        self.target, self.started_at = 0, time.monotonic()

    def started(self, request: Any) -> None:
        self.progress.started(request)

    def teacher_step(self, step: int, total: int, loss: float) -> None:
        self.progress.teacher_step(step, total, loss)

    def teacher_ready(self, metric: Any, from_cache: bool, fine_tune_seconds: float) -> None:
        self.progress.teacher_ready(metric, from_cache, fine_tune_seconds)

    def warm_started(self, result: Any) -> None:
        self.progress.warm_started(result)

    def trials_started(self, study: optuna.Study, target: int) -> None:
        self.target, self.started_at = target, time.monotonic()
        self.progress.trials_started(study, target)

    def refining(self, study: optuna.Study, seconds: float) -> None:
        self.progress.refining(study, seconds)

    def refined(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.progress.refined(study, trial)

    def trial_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.progress.trial_done(study, trial)
        if self.on_trial is not None:
            self.on_trial(TrialEvent(_result(trial, metric_name(study)), completed(study), self.target,
                                     time.monotonic() - self.started_at))


def run_study(
    config: ConfigLike | None = None,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    on_trial: Callable[[TrialEvent], None] | None = None,
    progress: StudyProgress | None = None,
    cache_dir: str | Path | None = None,
    sampler: str | None = None,
    warm_start: str | None = None,
    warm_start_storage: str | None = None,
) -> Study:
    """Create a study from ``config``, or continue the stored study of the same name, and run it
    until it holds ``trials`` complete trials (default: the config's ``search.trials``); as
    ``autocompress run``. With ``config=None``, continues ``study_name`` with the config stored in
    it (as ``autocompress resume``; default target: the one it was last run to).

    ``study_name`` defaults to the config's ``name``; ``storage`` to ``sqlite:///studies/<name>.db``;
    ``cache_dir`` (where fine-tuned teachers are kept) to ``studies/cache``. ``timeout`` stops
    starting trials after that many seconds. ``on_trial`` is called with a :class:`TrialEvent`
    each time a trial ends (complete, stopped or failed); ``progress`` is told every step (see
    :class:`~autocompress.study.session.StudyProgress`). ``warm_start`` names an earlier study
    (in ``warm_start_storage``, default: ``storage`` or its own default) whose front plans run first.

    Returns the study's handle (``last_run`` says how the run ended). Raises an
    :class:`~autocompress.errors.AutocompressError` for any input that cannot work, before anything
    slow; Ctrl-C raises :class:`~autocompress.study.session.StudyInterrupted` with what ran stored.
    """
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    if config is None:
        if study_name is None:
            raise AutocompressError("give a config to run, or the study_name of a stored study to continue")
        if warm_start is not None:
            raise AutocompressError("a warm start queues plans when a study is created: give its config as well")
        request = resume_request(study_name, storage or default_storage(study_name), trials=trials, timeout=timeout,
                                 cache_dir=cache, sampler=sampler)
    else:
        cfg, config_file = _config(config)
        request = run_request(cfg, name=study_name, storage=storage, trials=trials, timeout=timeout, cache_dir=cache,
                              config_file=config_file, sampler=sampler, warm_start=warm_start,
                              warm_start_storage=warm_start_storage)
    ran = _run_study(request, _Listener(on_trial, progress))
    return Study(ran.study, request.url, ran.result)


# ------------------------------------------------------------------------------------------ views
def export_trial(
    study: Study | str,
    out_dir: str | Path,
    *,
    trial: int | None = None,
    pick: str | None = None,
    onnx: bool = False,
    storage: str | None = None,
    cache_dir: str | Path | None = None,
) -> ExportResult:
    """Write one trial's model to ``out_dir`` (new or empty), as ``autocompress export`` does:
    weights, plan, tokenizer and metrics, and with ``onnx`` an ONNX model. The model is rebuilt
    from the trial's plan and checked against the trial's stored figures before anything is written.

    Give exactly one of ``trial`` (its number) or ``pick`` (a budget sentence such as
    ``"fastest with accuracy drop <= 1"``; see :mod:`autocompress.export.pick`). ``study`` is a
    :class:`Study` or a study's name (in ``storage``). ``cache_dir`` holds the study's fine-tuned
    teacher (default ``studies/cache``). Load the result with :func:`load`.
    """
    handle = _study(study, storage)
    if (trial is None) == (pick is None):
        raise ExportError('give exactly one of trial=N or pick="..." (e.g. pick="fastest with accuracy drop <= 1.0")')
    chosen = pick_trial(handle.optuna, pick) if pick is not None else exportable_trial(handle.optuna, int(trial or 0))
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    return _export_trial(handle.optuna, chosen.number, out_dir, cache, onnx=onnx, storage_url=handle.url)


def write_report(study: Study | str, path: str | Path | None = None, *, format: str = "html",
                 storage: str | None = None) -> Path:
    """Write the study's offline HTML report (``format="html"``) or its trial table (``"csv"``,
    ``"parquet"``) to ``path`` (default ``studies/<name>.<format>``), from the storage alone, as
    ``autocompress report`` does; returns the path written."""
    if format not in ("html", *FORMATS):
        raise AutocompressError(f"unknown report format '{format}'; available: html, {', '.join(FORMATS)}")
    handle = _study(study, storage)
    target = Path(path) if path is not None else default_output(handle.name, format)
    info = collect(handle.optuna, handle.url)
    return _write_html(info, target) if format == "html" else write_table(info, target, format)


def load(directory: str | Path) -> nn.Module:
    """The model ``autocompress export`` (or :func:`export_trial`) wrote to ``directory``: a
    ``transformers`` model in eval mode, its plan applied (pruned shapes, dropped blocks, int8 and
    weight-only int8/int4 layers as the trial had them).

    A classifier: ``transformers.pipeline("text-classification", model=load(DIR), tokenizer=DIR)``.
    A decoder (a causal language model) comes with the base model's generation settings, so
    ``load(DIR).generate(**AutoTokenizer.from_pretrained(DIR)(text, return_tensors="pt"))`` gives
    the tokens the trial's model gives (export checks it greedily before writing).
    """
    return _load(directory)

