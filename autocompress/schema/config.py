"""Search-space YAML → typed, frozen :class:`StudyConfig`.

Flat YAML keys are the config fields. Unknown keys, wrong types and out-of-range values raise
:class:`~autocompress.errors.ConfigError` naming the file and the key path; nothing is filled in
silently beyond the documented defaults below.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from autocompress.errors import ConfigError
from autocompress.schema import legacy
# the readers of older stored configs live in schema.legacy; these names are also read from here
from autocompress.schema.legacy import LEGACY_RECOVERY, LEGACY_TRAINING, with_legacy_training  # noqa: F401
from autocompress.schema.profile import DeviceProfile, resolve_profile

__all__ = [
    "ModelConfig",
    "TaskConfig",
    "TrainConfig",
    "RecoveryConfig",
    "PruningConfig",
    "FidelityConfig",
    "ExitsSpace",
    "SpaceConfig",
    "ObjectivesConfig",
    "COMMON_BUDGETS",
    "RefineConfig",
    "SearchConfig",
    "StudyConfig",
    "load_config",
    "parse_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


Ratio = float


class ModelConfig(_Frozen):
    source: str = "bundled:all-MiniLM-L6-v2"  # local directory, hub name, or bundled:<name>
    finetuned: bool = False  # true: the model is already trained for the task and is the teacher
    trust_remote_code: bool = False  # never on unless asked


class TaskConfig(_Frozen):
    kind: str = "sequence-classification"  # what the model does: a registered task kind (autocompress/tasks/kind.py)
    source: str  # bundled:tweets | bundled:bbc | path to .csv/.json/.jsonl/.parquet | hub dataset name
    hub_config: str | None = None  # hub dataset configuration name
    train_split: str = "train"  # split to draw train (and, without eval_split, eval) examples from
    eval_split: str | None = None  # a separate split for evaluation, if the source has one
    text_column: str = "text"
    text_pair_column: str | None = None  # second text column for pair tasks
    label_column: str = "label"
    train_size: int = Field(3000, ge=10)  # labelled examples to fine-tune on
    eval_size: int = Field(1000, ge=10)  # examples the search evaluates accuracy on
    transfer_size: int = Field(0, ge=0)  # extra examples for distillation, used without their labels
    # a local file of your own unlabelled texts to distil on (the teacher labels them): .txt (one text per line) or
    # .csv/.tsv/.json/.jsonl/.parquet with transfer_column; transfer_size then caps how many are used (0: all)
    transfer_source: str | None = None
    transfer_column: str | None = None  # the text column of transfer_source (default: text_column)
    max_length: int = Field(128, ge=8, le=4096)  # tokens per example at train/eval time
    # causal-lm: train (teacher and distillation) on up to this many consecutive max_length-token windows of each
    # training document, not only its first (eval and test documents are always scored on their first window)
    windows: int = Field(1, ge=1, le=64)
    # causal-lm with metric multiple_choice(_norm): a .jsonl file of questions (context, choices, answer on each line, as
    # lm-evaluation-harness tasks have them); its questions, not corpus documents, are the eval and test sets
    choices: str | None = None
    seed: int = 0  # seed of the train/eval split
    # what the search optimises, one of the task kind's metrics (checked against it): accuracy or macro_f1
    # (imbalanced classes) for classification; perplexity, next_token_accuracy, kl, multiple_choice or multiple_choice_norm for causal-lm
    metric: str = "accuracy"
    test_split: str | None = None  # hub datasets: a split to draw the held-out test examples from
    test_size: int = Field(0, ge=0, validate_default=True)  # held-out test examples, reported for full trials, never optimised on (0: none)

    @field_validator("text_pair_column", mode="after")
    @classmethod
    def _pair_differs(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and v == info.data.get("text_column"):
            raise ValueError(f"names the same column as text_column ('{v}'); a pair task needs two text columns")
        return v

    @field_validator("test_size", mode="after")
    @classmethod
    def _test_size(cls, v: int, info: ValidationInfo) -> int:
        if 0 < v < 10:
            raise ValueError(f"{v} examples say nothing; use 0 (no test split) or at least 10")
        if v == 0 and info.data.get("test_split"):
            raise ValueError(f"test_split '{info.data['test_split']}' is set: say how many of its examples to score")
        return v


class TrainConfig(_Frozen):
    """Teacher fine-tuning (skipped when ``model.finetuned`` is true)."""

    epochs: float = Field(1.0, gt=0, le=100)
    learning_rate: float = Field(5e-5, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=4096)
    weight_decay: float = Field(0.01, ge=0, le=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    freeze_word_embeddings: bool = True  # leave the word-embedding table as pre-trained (faster steps)
    group_by_length: bool = True  # batch tweets of similar length together (less padding)

    @field_validator("epochs", "learning_rate", "weight_decay", "warmup_ratio", mode="before")
    @classmethod
    def _ints_as_floats(cls, v: Any) -> Any:
        return _int_to_float(v)


class AugmentConfig(_Frozen):
    """More distillation examples made from the train examples: each gets ``copies`` variants with
    ``share`` of its tokens swapped for one of their ``neighbours`` nearest rows of the teacher's
    token-embedding table (word replacement at the token level); the teacher labels them."""

    # none (default: at the same number of steps neither source gained on the bundled tweets, benchmarks/recovery.py
    # --data); neighbours; auto: neighbours for a classification task whose distillation set is under small_below
    kind: Literal["auto", "none", "neighbours"] = "none"
    copies: int = Field(2, ge=1, le=32)  # variants of each train example
    share: float = Field(0.3, gt=0, le=0.9)  # share of each variant's tokens replaced
    neighbours: int = Field(10, ge=1, le=100)  # candidates for a replaced token: its nearest rows by cosine
    small_below: int = Field(20_000, ge=0)  # auto: augment when the distillation set has fewer examples than this

    @field_validator("share", mode="before")
    @classmethod
    def _share_float(cls, v: Any) -> Any:
        return _int_to_float(v)


class RecoveryConfig(_Frozen):
    """Knowledge-distillation recovery of each compressed student (0 epochs: off)."""

    epochs: float = Field(0.0, ge=0, le=100)
    learning_rate: float = Field(1e-4, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=4096)
    temperature: float = Field(2.0, gt=0, le=100)  # softmax temperature of the soft targets
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the soft (KL) loss; 1 - alpha on the hard CE
    max_examples: int | None = Field(None, ge=1)  # labelled train examples used (default: all), plus task.transfer_size
    seed: int = 0
    freeze_word_embeddings: bool = True  # the student keeps the teacher's word embeddings (faster steps)
    group_by_length: bool = False  # batch examples of similar length together: faster, but costs deep cuts accuracy (benchmarks/recovery.py)
    depth_scaled: bool = True  # a student keeping k of n layers distils epochs × n/k (a deeper cut, more steps)
    max_epochs: float = Field(3.0, gt=0, le=100)  # cap on a depth-scaled student's epochs
    hidden_weight: float = Field(0.0, ge=0, le=100)  # weight of each kept layer's hidden-state loss (0: logits only)
    # a student whose plan quantises distils through the rounding its kernels apply (int8 per channel, the dynamic
    # kernel's activations, weight-only int8/int4; straight-through gradients): the model trained is the one shipped
    quantization_aware: bool = True
    # a plan that only quantises (every layer and unit kept) distils this fraction of ``epochs`` through its
    # rounding (0, the default: such plans ship as quantised, untrained; a quarter gained nothing on the bundled
    # classification tasks and cost the bundled decoder 4 % perplexity); needs quantization_aware
    quantize_only_fraction: float = Field(0.0, ge=0, le=10)
    # more examples to distil on, made from the train examples (see AugmentConfig); the budget's steps stay those of
    # ``epochs`` over the train examples (and task.transfer_size): extra texts widen what they draw from
    augment: AugmentConfig = AugmentConfig()

    @field_validator("epochs", "learning_rate", "temperature", "alpha", "max_epochs", "hidden_weight",
                     "quantize_only_fraction", mode="before")
    @classmethod
    def _ints_as_floats(cls, v: Any) -> Any:
        return _int_to_float(v)


class PruningConfig(_Frozen):
    """How heads, FFN neurons and layers are ranked for removal (scored once per study, cached)."""

    criterion: Literal["taylor", "magnitude"] = "taylor"  # |W·∂L/∂W| on calibration data, or |W|
    calibration_examples: int = Field(256, ge=8, le=100_000)  # train examples used for scoring


class FidelityConfig(_Frozen):
    """Cheap first, full only for candidates that could reach the front (the policy: autocompress.search.fidelity)."""

    enabled: bool = True
    cheap_eval_size: int = Field(500, ge=10)  # eval examples scored before recovery
    margin: float = Field(0.5, ge=0, le=100)  # points below the teacher that count as "recovered already"
    short_fraction: float = Field(0.34, gt=0, lt=1)  # share of a plan's distillation before the short rung's check
    keep_fraction: float = Field(0.5, gt=0, le=1)  # successive halving: share of a rung's candidates that go on
    short_gain: float = Field(3.0, ge=0, le=100)  # points assumed gained from the short rung to the full one, until measured
    patience: int = Field(12, ge=1)  # after this many candidates stopped in a row, the next one goes on

    @field_validator("margin", "short_fraction", "keep_fraction", "short_gain", mode="before")
    @classmethod
    def _as_float(cls, v: Any) -> Any:
        return _int_to_float(v)


class DepthSpace(_Frozen):
    min: int = Field(1, ge=1)  # fewest layers the student may keep
    max: int | None = Field(None, ge=1)  # most layers (default: all of the base model)
    # which layers are kept: evenly spaced, the bottom ones, the top ones, or the most important
    selection: tuple[Literal["even", "first", "last", "importance"], ...] = ("even", "first", "importance")

    @model_validator(mode="after")
    def _min_le_max(self) -> "DepthSpace":
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class ExitsSpace(_Frozen):
    """Early exits (dynamic inference): where a plan may add exit classifiers, at which confidence an
    input stops, and how the exits are distilled. ``none`` alone (the default): no exits."""

    # none: no exits; middle: one exit halfway up the kept layers; every: one after each kept layer
    schedule: tuple[Literal["none", "middle", "every"], ...] = ("none",)
    threshold: tuple[float, ...] = (0.9,)  # confidence (largest softmax probability) at which an input stops
    # what an exit head reads: the mean of the real tokens' states (mean), or the first token's (first)
    pooling: Literal["first", "mean"] = "mean"
    epochs: float = Field(3.0, gt=0, le=100)  # passes over the distillation set training the exit heads (on states computed once)
    learning_rate: float = Field(1e-3, gt=0, le=1)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedules(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one choice (none: no exits)")
            return tuple(v)
        return v

    @field_validator("threshold", mode="before")
    @classmethod
    def _thresholds(cls, v: Any) -> Any:
        if isinstance(v, list):
            v = [_int_to_float(x) for x in v]
            if not v:
                raise ValueError("give at least one choice")
            for x in v:
                if isinstance(x, float) and not 0.0 < x <= 1.0:
                    raise ValueError(f"exit threshold {x} is outside (0, 1]: it is the confidence an input "
                                     "needs to stop at an exit, e.g. 0.9")
            return tuple(v)
        return v

    @field_validator("epochs", "learning_rate", mode="before")
    @classmethod
    def _floats(cls, v: Any) -> Any:
        return _int_to_float(v)

    @property
    def offered(self) -> bool:
        """True when some plan may have exits."""
        return any(s != "none" for s in self.schedule)


class VocabularySpace(_Frozen):
    """Vocabulary pruning: whether a student keeps every word-embedding row (``all``) or only the
    rows of tokens its vocabulary corpus uses (``task``) at least ``min_count`` times."""

    keep: tuple[Literal["all", "task"], ...] = ("all",)
    min_count: tuple[int, ...] = (1,)  # for task: occurrences in the corpus a token needs to keep its row
    # a UTF-8 text file, one text per line, whose tokens are counted instead of the distillation set's
    corpus: str | None = None

    @field_validator("keep", mode="before")
    @classmethod
    def _keeps(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one choice (all: the full vocabulary; task: the corpus's tokens)")
            return tuple(v)
        return v

    @field_validator("min_count", mode="before")
    @classmethod
    def _counts(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one choice, e.g. [1, 3]")
            for x in v:
                if isinstance(x, bool) or not isinstance(x, int) or x < 1:
                    raise ValueError(f"minimum count {x!r} must be a whole number of at least 1 (1: every token the "
                                     "corpus uses keeps its row)")
            return tuple(v)
        return v

    @field_validator("corpus")
    @classmethod
    def _corpus_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"corpus file {v!r} not found: give a UTF-8 text file with one text per line, or leave "
                             "corpus out to count the distillation set's texts")
        return v

    @property
    def offered(self) -> bool:
        """True when some plan may prune the vocabulary."""
        return "task" in self.keep

    @property
    def choices(self) -> tuple[int, ...]:
        """The plan's ``vocab_min_count`` choices, 0 standing for the full vocabulary."""
        return ((0,) if "all" in self.keep else ()) + (self.min_count if self.offered else ())


class SpaceConfig(_Frozen):
    """The search dimensions. Ratios are fractions kept, in (0, 1]."""

    heads: tuple[Ratio, ...] = (1.0, 0.75, 0.5, 0.25)  # attention-head keep ratios, per layer
    ffn: tuple[Ratio, ...] = (1.0, 0.75, 0.5, 0.25)  # FFN-neuron keep ratios, per layer
    bits: tuple[Literal[32, 8, 4, 2], ...] = (32, 8)  # bit-widths per layer (4, 2: simulated)
    head_bits: tuple[Literal[32, 8, 4], ...] = (32,)  # the head (pooler + classifier, or a language model's output projection): float, int8, int4 (weight-only)
    # grouped-query attention: fractions of key/value groups kept per layer (each group's query heads go with it)
    kv: tuple[Ratio, ...] = (1.0,)
    # how 8- and 4-bit weights compute: dynamic (int8 weights and activations; 4 simulated) or weight_only
    # (int8 / group-wise int4 weights, 16-bit activations: what decoding gains from)
    weight_scheme: tuple[Literal["dynamic", "weight_only"], ...] = ("dynamic",)
    # heads / kv ratios that grouped-query attention cannot honour exactly are rounded to the nearest shape
    # that it can; true: refuse them instead (before anything runs)
    strict: bool = False
    embedding_bits: tuple[Literal[32, 8, 4], ...] = (32,)  # embeddings: float, 8 (8-bit codes and a scale per row), 4 (simulated)
    depth: DepthSpace = DepthSpace()
    exits: ExitsSpace = ExitsSpace()
    vocabulary: VocabularySpace = VocabularySpace()
    # cross-layer parameter sharing among kept layers: none, pairs (the 1st and 2nd kept layer run
    # one set of weights, the 3rd and 4th another, ...) or all (every kept layer runs one set)
    sharing: tuple[Literal["none", "pairs", "all"], ...] = ("none",)
    # how layers get their heads / ffn / bits (see autocompress.search.space): every layer its own
    # values (per_layer), one set for all (shared), or ratios linear over depth with one
    # bit-width switch (linear: 7 dimensions instead of 3 per layer)
    schedule: Literal["per_layer", "shared", "linear"] = "per_layer"
    per_layer: bool = True  # the older spelling: true = schedule per_layer, false = shared; follows schedule

    @model_validator(mode="before")
    @classmethod
    def _schedule_from_per_layer(cls, data: Any) -> Any:
        return legacy.space_schedule(data)  # files and stored studies written before `schedule` existed

    @model_validator(mode="after")
    def _per_layer_follows_schedule(self) -> "SpaceConfig":
        implied = self.schedule == "per_layer"
        if "per_layer" in self.model_fields_set and self.per_layer != implied:
            raise ValueError(
                f"per_layer: {str(self.per_layer).lower()} contradicts schedule: {self.schedule}; "
                "per_layer is the older spelling of the schedule: give only schedule"
            )
        object.__setattr__(self, "per_layer", implied)
        return self

    @field_validator("heads", "kv", "ffn", mode="before")
    @classmethod
    def _ratios(cls, v: Any) -> Any:
        if isinstance(v, list):
            v = [_int_to_float(x) for x in v]
            for x in v:
                if isinstance(x, float) and not 0.0 < x <= 1.0:
                    raise ValueError(f"keep ratio {x} is outside (0, 1]")
            if not v:
                raise ValueError("give at least one choice")
            return tuple(v)
        return v

    @field_validator("bits", "head_bits", "embedding_bits", "sharing", "weight_scheme", mode="before")
    @classmethod
    def _bits(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one choice")
            return tuple(v)
        return v

    @field_validator("depth", mode="before")
    @classmethod
    def _depth(cls, v: Any) -> Any:
        if isinstance(v, dict) and isinstance(v.get("selection"), list):
            v = {**v, "selection": tuple(v["selection"])}
        return v


#: Accuracy drops (points of the first objective below the teacher) at which reports name the best
#: candidates and refinement looks for candidates that could become the fastest, besides the study's own.
COMMON_BUDGETS: tuple[float, ...] = (0.5, 1.0, 2.0)


class ObjectivesConfig(_Frozen):
    max_accuracy_drop: float | None = Field(None, ge=0, le=100)  # points of the task metric; trials beyond are infeasible
    # metric perplexity: the budget as perplexity at most this many percent above the teacher's
    max_perplexity_increase: float | None = Field(None, gt=0, le=10_000)

    @field_validator("max_accuracy_drop", "max_perplexity_increase", mode="before")
    @classmethod
    def _as_float(cls, v: Any) -> Any:
        return _int_to_float(v)

    @model_validator(mode="after")
    def _one_budget(self) -> "ObjectivesConfig":
        if self.max_accuracy_drop is not None and self.max_perplexity_increase is not None:
            raise ValueError("give one budget: max_accuracy_drop (points of the metric) or max_perplexity_increase "
                             "(percent above the teacher's perplexity)")
        return self

    @property
    def max_drop(self) -> float | None:
        """The budget in points of the study's first objective (perplexity: 100 × the teacher's perplexity
        over the candidate's, so p ≤ (1 + x/100)·teacher is a drop of at most 100 − 100/(1 + x/100))."""
        if self.max_perplexity_increase is not None:
            return 100.0 - 100.0 / (1.0 + self.max_perplexity_increase / 100.0)
        return self.max_accuracy_drop


class RefineConfig(_Frozen):
    """Recovery spent where the front is: once the trials are done, candidates on or near the front
    (accuracy against speed) are built again with a longer distillation, the most promising first,
    while the time lasts; each refinement is stored as a trial of its own (see docs/search.md)."""

    # seconds kept for refinements after the trials; None: a quarter of search.time_budget when one is
    # set, else none; 0: never refine
    seconds: float | None = Field(None, ge=0)
    scale: float = Field(2.0, gt=1, le=16)  # a refinement distils with this many times the epochs of what it refines
    near: float = Field(1.0, ge=0, le=100)  # points: a candidate this far below the front at its speed is refined too


class SearchConfig(_Frozen):
    trials: int = Field(20, ge=1, le=100_000)  # completed trials the study aims for (refinements are extra)
    # tpe, nsga2 and gp model the objectives (and prefer trials within max_accuracy_drop); random does not
    sampler: Literal["tpe", "nsga2", "gp", "random"] = "gp"  # highest hypervolume in benchmarks/search.py
    seed: int = 0
    seed_baselines: bool = True  # enqueue the uniform baselines as the first trials
    # seconds one run may take, teacher preparation included: no trial starts that would likely run
    # into the refinements' time (the study's median trial time says); None: run to `trials`
    time_budget: float | None = Field(None, gt=0)
    refine: RefineConfig = RefineConfig()

    @field_validator("refine", mode="after")
    @classmethod
    def _refine_fits(cls, v: RefineConfig, info: ValidationInfo) -> RefineConfig:
        budget = info.data.get("time_budget")
        if budget is not None and v.seconds is not None and v.seconds >= budget:
            raise ValueError(
                f"seconds ({v.seconds:g}) is not less than search.time_budget ({budget:g}), which would leave the "
                "trials no time: give refine.seconds below the time budget, or leave it out (a quarter of the budget)"
            )
        return v

    @property
    def refine_seconds(self) -> float:
        """The time kept for refinements: ``refine.seconds``, or a quarter of the time budget, or none."""
        if self.refine.seconds is not None:
            return self.refine.seconds
        return self.time_budget / 4 if self.time_budget is not None else 0.0


class StudyConfig(_Frozen):
    """Everything a study needs to run, as read from one search-space YAML file."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    model: ModelConfig = ModelConfig()
    task: TaskConfig
    teacher: TrainConfig = TrainConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    pruning: PruningConfig = PruningConfig()
    fidelity: FidelityConfig = FidelityConfig()
    profile: DeviceProfile = Field(default_factory=lambda: resolve_profile("cpu-2t"))  # the latency objective: a bundled name, a YAML path or a mapping
    report_profiles: tuple[DeviceProfile, ...] = ()  # also measured / predicted for every trial, not optimised
    space: SpaceConfig = Field(SpaceConfig(), validate_default=True)  # checked against the profile even when left out
    objectives: ObjectivesConfig = ObjectivesConfig()
    search: SearchConfig = SearchConfig()

    @field_validator("profile", mode="before")
    @classmethod
    def _profile(cls, v: Any) -> Any:
        return resolve_profile(v) if isinstance(v, str) else v

    @field_validator("report_profiles", mode="before")
    @classmethod
    def _report_profiles(cls, v: Any) -> Any:
        if isinstance(v, list):
            return tuple(resolve_profile(x) if isinstance(x, str) else x for x in v)
        return v

    # Cross-field checks as field validators (not one model validator) so that the error names
    # the key to change: 'report_profiles' for a repeated name, 'space' for int8 on CUDA.
    @field_validator("report_profiles", mode="after")
    @classmethod
    def _distinct_names(cls, v: tuple[DeviceProfile, ...], info: ValidationInfo) -> tuple[DeviceProfile, ...]:
        main = info.data.get("profile")  # absent when the profile itself was invalid
        names = [p.name for p in ((main,) if main is not None else ()) + v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"profile names must differ; {', '.join(dupes)} appears twice (rename one with 'name')")
        return v

    @field_validator("space", mode="after")
    @classmethod
    def _space_fits_profile(cls, v: SpaceConfig, info: ValidationInfo) -> SpaceConfig:
        profiles = [info.data.get("profile"), *info.data.get("report_profiles", ())]  # reported ones run too
        profile = next((p for p in profiles if p is not None and p.device == "cuda"), None)
        if profile is not None and 8 in v.bits + v.head_bits:
            raise ValueError(
                f"profile '{profile.name}' runs on CUDA, where int8 dynamic quantisation has no kernels; "
                "use space.bits and space.head_bits without 8 (4 and 2 stay available as simulated widths)"
            )
        main = info.data.get("profile")
        if v.exits.offered and main is not None and (main.inputs != "task" or main.predicted):
            raise ValueError(
                f"early exits depend on each input, so their latency is measured on the task's own inputs: give a "
                f"measured profile with inputs: task (e.g. profile: cpu-2t-task, or one with backend: onnxruntime), "
                f"or set space.exits.schedule: [none]; profile '{main.name}' has inputs: {main.inputs}"
                f"{', predicted' if main.predicted else ''}"
            )
        return v

    @property
    def all_profiles(self) -> tuple[DeviceProfile, ...]:
        """The objective's profile first, then the reported ones."""
        return (self.profile, *self.report_profiles)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _int_to_float(v: Any) -> Any:
    """Ints are valid floats; so is YAML 1.1's unquoted ``5e-5``, which safe_load reads as a string."""
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str) and _NUMBER.match(v.strip()):
        return float(v)
    return v


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def continuing(cfg: StudyConfig, stored: dict[str, Any]) -> StudyConfig:
    """``cfg`` as it continues a study stored as ``stored``: a training setting the study predates,
    left at its default in ``cfg``, takes the value the study ran with (see
    :func:`with_legacy_training`), so that a study made before the setting existed continues
    with its own teacher and recovery when run again from its file."""
    updates: dict[str, Any] = {}
    for section, predated in legacy.predated_training(stored).items():
        current = getattr(cfg, section)
        default = type(current)()
        change = {k: v for k, v in predated.items() if getattr(current, k) == getattr(default, k)}
        if change:  # validated: a nested setting (recovery.augment) is stored as a mapping
            updates[section] = type(current).model_validate({**current.model_dump(), **change})
    return cfg.model_copy(update=updates) if updates else cfg


def parse_config(data: Any, *, file: str = "<config>") -> StudyConfig:
    """Validate a mapping (as read from YAML) into a :class:`StudyConfig`."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of settings at the top level, got {type(data).__name__}", file=file)
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = loc[:-1]
            allowed = _allowed_keys(parent)
            msg = f"unknown key; allowed here: {', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = "is required"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{msg}{more}", file=file, key=_key_path(loc) or None) from None


def _allowed_keys(parent: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = StudyConfig
    for part in parent:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found; give the path of a search-space YAML (see search_spaces/)", file=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML{where}: {problem}", file=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("not a UTF-8 text file", file=str(path)) from None
    return parse_config(data, file=str(path))
