"""The typed figures and facts a stored record holds: latency per profile, size, recovery, early
exits, a kept vocabulary, the host, the teacher's architecture.

Each is frozen data read from (and written back to) the plain mapping its producer makes
(``ProfileLatency.to_dict``, ``Size.to_dict``, the build's recovery facts, ...), so readers use
attributes and never a key by name. Two rules keep what is stored exactly as it was:

* what was given is what is written: a field read from a mapping (or passed to the constructor),
  ``None`` included, is written back; one never given is left out (``to_dict`` dumps the fields
  set, as pydantic tracks them);
* a key a class does not know (a producer's newer fact, a user's own) is kept and written back
  unchanged (``extra="allow"``).

So ``from_dict(to_dict(x)) == x`` and ``to_dict(from_dict(d)) == d`` for anything the producers
write. Pydantic does the validation (rule 14): a value of the wrong type raises
:class:`~autocompress.errors.StorageError` naming the key.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from autocompress.errors import StorageError
from autocompress.schema import legacy

__all__ = [
    "Facts",
    "Host",
    "HostPrediction",
    "ShapeLatency",
    "LatencyFigures",
    "SizeFigures",
    "RecoveryFacts",
    "ExitsTaken",
    "VocabularyFacts",
    "Arch",
]

F = TypeVar("F", bound="Facts")


class Facts(BaseModel):
    """Frozen stored facts: :meth:`from_dict` reads the stored mapping, :meth:`to_dict` writes it back."""

    model_config = ConfigDict(frozen=True, extra="allow")

    @classmethod
    def from_dict(cls: type[F], data: Any, *, where: str = "a record") -> F:
        """Read ``data`` (the stored mapping); raises :class:`StorageError` naming ``where`` and the key."""
        if not isinstance(data, dict):
            raise StorageError(f"{where} holds {type(data).__name__}, not a mapping")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors())
            raise StorageError(f"{where} cannot be read: {bad}") from None

    def to_dict(self) -> dict[str, Any]:
        """The stored mapping: the fields that were given, and any keys this class does not know."""
        return self.model_dump(mode="json", exclude_unset=True)

    def with_(self: F, **changes: Any) -> F:
        """A copy with ``changes`` (they are written, like the fields given)."""
        return self.model_copy(update=changes)


class Host(Facts):
    """Where a candidate was built and timed (``latency.measure.host_info``)."""

    host: str | None = None  # the machine's network name
    cpu: str | None = None
    cores: int | None = None
    python: str | None = None
    torch: str | None = None
    transformers: str | None = None
    optuna: str | None = None
    gpu: str | None = None  # the first CUDA device, when there is one


class HostPrediction(Facts):
    """The cost model's figures for this host on a measured profile, set against the measurement."""

    ratio: float | None = None
    speedup: float | None = None
    candidate_ms: float | None = None


class ShapeLatency(Facts):
    """One input shape (workload) of a profile: the interleaved measurement's figures
    (``LatencyResult``) or the cost model's, and the workload's own facts."""

    batch_size: int | None = None
    seq_len: int | None = None  # None: the task's own examples, each at its length
    candidate_ms: float | None = None
    candidate_iqr_ms: float | None = None
    baseline_ms: float | None = None
    baseline_iqr_ms: float | None = None
    ratio: float | None = None
    ratio_q1: float | None = None
    ratio_q3: float | None = None
    rounds: int | None = None
    noisy: bool | None = None
    profile: str | None = None
    ratio_ci_low: float | None = None
    ratio_ci_high: float | None = None
    inputs: str | None = None  # "task": the task's sample (its facts follow)
    lengths: tuple[int, ...] | None = None
    of_examples: int | None = None
    median_tokens: float | None = None
    p90_tokens: float | None = None
    # a generation workload (``latency.generation``): the milliseconds above are per request (prompt, then
    # new tokens); time to first token (ttft) and per output token (tpot), medians and per-round ratios
    ttft_ms: float | None = None
    baseline_ttft_ms: float | None = None
    ttft_ratio: float | None = None
    ttft_ratio_q1: float | None = None
    ttft_ratio_q3: float | None = None
    ttft_ratio_ci_low: float | None = None
    ttft_ratio_ci_high: float | None = None
    tpot_ms: float | None = None
    baseline_tpot_ms: float | None = None
    tpot_ratio: float | None = None
    tpot_ratio_q1: float | None = None
    tpot_ratio_q3: float | None = None
    tpot_ratio_ci_low: float | None = None
    tpot_ratio_ci_high: float | None = None
    new_tokens: int | None = None
    prompt_tokens: int | None = None  # the longest prompt (the task's sample: its longest example)
    kv_cache_bytes: int | None = None  # the candidate's key/value cache at prompt_tokens + new_tokens
    baseline_kv_cache_bytes: int | None = None


class LatencyFigures(Facts):
    """A candidate's latency on one profile, as the trial stores it (``ProfileLatency.to_dict``,
    with the cost model's facts; the screen's adds its ``tolerance``)."""

    profile: str | None = None
    kind: str = "measured"  # "measured" (timed here, interleaved with the teacher) or "predicted"
    ratio: float | None = None  # candidate / teacher: what the study compares
    candidate_ms: float | None = None
    baseline_ms: float | None = None  # the teacher's, in the same rounds
    noisy: bool = False  # the ratio's spread stayed above the profile's limit
    shapes: tuple[ShapeLatency, ...] = ()
    speedup: float | None = None
    rounds: int | None = None  # measured only
    candidate_iqr_ms: float | None = None  # measured at one shape only
    ratio_iqr: tuple[float | None, float | None] | None = None  # measured at one shape only
    fit_error: float | None = None  # the cost model's median relative error on this host
    host_prediction: HostPrediction | None = None  # measured CPU profiles at the calibration's threads
    tolerance: float | None = None  # the screen's: the cost model's error, 0 for a measured screen
    backend: str | None = None  # "onnxruntime" when timed there
    export_seconds: float | None = None  # ONNX Runtime: the export's time
    int8_matmuls: int | None = None  # ONNX Runtime: MatMul nodes it quantised
    # a generation workload (profile new_tokens): ratio, candidate_ms and baseline_ms are of whole requests
    # (prompt, then new tokens); their split, over the shapes as ratio is (None in records without one):
    ttft_ms: float | None = None  # time to first token: the prompt's pass
    baseline_ttft_ms: float | None = None
    ttft_ratio: float | None = None
    ttft_speedup: float | None = None  # teacher / candidate time to first token
    ttft_ratio_ci: tuple[float, float] | None = None  # the 95 % interval of its median ratio (one shape only)
    tpot_ms: float | None = None  # time per output token: one decoding step with the key/value cache
    baseline_tpot_ms: float | None = None
    tpot_ratio: float | None = None
    tpot_speedup: float | None = None  # teacher / candidate time per output token
    tpot_ratio_ci: tuple[float, float] | None = None
    new_tokens: int | None = None  # generated after each prompt
    prompt_tokens: int | None = None  # the longest prompt timed
    kv_cache_bytes: int | None = None  # the candidate's key/value cache at prompt_tokens + new_tokens
    baseline_kv_cache_bytes: int | None = None  # the teacher's, at the same context

    @property
    def measured(self) -> bool:
        return self.kind == "measured"

    @property
    def generation(self) -> bool:
        """The figures are a generation workload's (they have a time to first token or per output token)."""
        return self.ttft_ratio is not None or self.tpot_ratio is not None

    @property
    def ratio_quartiles(self) -> tuple[float, float] | None:
        """The quartiles of the per-round ratio, for a profile measured at one shape.

        A profile of several shapes stores none (its ratio is their geometric mean; a spread over
        different shapes means nothing), nor does a predicted one (see :attr:`fit_error`). A record
        that lacks ``ratio_iqr`` but holds its one measured shape reads that shape's quartiles.
        """
        if not self.measured:
            return None
        q1, q3 = self.ratio_iqr if self.ratio_iqr is not None else (None, None)
        if (q1 is None or q3 is None) and len(self.shapes) == 1:
            q1, q3 = self.shapes[0].ratio_q1, self.shapes[0].ratio_q3
        if q1 is None or q3 is None or not (q1 > 0 and q3 > 0):
            return None
        return float(q1), float(q3)

    @property
    def times_faster(self) -> float | None:
        """Teacher / candidate: the stored speedup, or the inverse of the ratio."""
        if self.speedup is not None:
            return self.speedup
        return 1.0 / self.ratio if self.ratio else None

    @property
    def candidate_spread_ms(self) -> float | None:
        """The candidate's latency IQR (ms), for a profile measured at one shape (as :attr:`ratio_quartiles`)."""
        if self.candidate_iqr_ms is not None:
            return self.candidate_iqr_ms
        return self.shapes[0].candidate_iqr_ms if self.measured and len(self.shapes) == 1 else None


class SizeFigures(Facts):
    """How big a model is, as stored (``Size.to_dict``)."""

    params: int | None = None
    serialized_bytes: int | None = None  # ``torch.save(state_dict)``
    effective_bytes: int | None = None  # serialised, simulated low-bit weights at their width
    split: dict[str, int] | None = None  # shipped bytes by part: embeddings, layers, head
    shipped_bytes: int | None = None  # the safetensors file export writes
    megabytes: float | None = None  # the size objective's bytes / 1e6

    @property
    def bytes(self) -> int | None:
        """The size objective's bytes (sizes stored before shipped bytes were measured: effective bytes)."""
        if self.effective_bytes is None:
            return self.shipped_bytes
        return legacy.size_bytes(self.shipped_bytes, self.effective_bytes)


class RecoveryFacts(Facts):
    """How the candidate was recovered: the distillation's facts, and the exit heads' training."""

    recovered: bool = False
    recovery_seconds: float | None = None
    recovery_loss: float | None = None
    recovery_examples: int | None = None
    recovery_steps: int | None = None
    recovery_epochs: float | None = None
    quantization_aware: bool | None = None  # distilled through the kernels' rounding (None: stored before it could be)
    rounded_modules: int | None = None  # how many modules computed through it
    exit_steps: int | None = None
    exit_seconds: float | None = None
    exit_pass_seconds: float | None = None
    exit_loss: float | None = None


class ExitsTaken(Facts):
    """Where a model with early exits stops the eval examples (``scoring.exits_taken``)."""

    threshold: float | None = None
    student_layers: tuple[int, ...] = ()  # the student's layer count at each exit, its last layer last
    shares: tuple[float, ...] = ()  # the share of eval examples that stop there
    mean_layers: float | None = None

    @property
    def stops(self) -> list[tuple[int, float]]:
        """(layers run, share of examples) per exit, the last one the whole student; empty when the
        two lists do not pair up."""
        if len(self.student_layers) != len(self.shares):
            return []
        return list(zip(self.student_layers, self.shares, strict=True))


class VocabularyFacts(Facts):
    """A kept vocabulary: rows kept of the full table, and what it costs the eval split."""

    kept_rows: int | None = None
    full_rows: int | None = None
    min_count: int | None = None  # a token's row is kept when the corpus uses it this often
    eval_tokens_dropped: float | None = None  # share of the eval split's tokens that read as [UNK]
    corpus: str | None = None  # what the counts were taken from


class Arch(Facts):
    """The shape of the teacher (``models.adapters.ArchInfo``); a decoder's also its key/value heads,
    head size and that it is a decoder (an encoder's are stored as they always were, without them)."""

    family: str | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    hidden_size: int | None = None
    num_kv_heads: int | None = None
    head_size: int | None = None
    decoder: bool | None = None
