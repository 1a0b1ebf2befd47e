"""Device profiles: named, validated conditions under which latency is measured or predicted.

A profile is plain YAML data. A *measured* profile describes how to time candidates on this
host (threads, input shapes, warm-up and repeats, backend); with ``new_tokens`` its workload is a
chat request: each input is a prompt, then that many tokens generated greedily with the key/value
cache, so that time to first token and time per output token are measured apart. A *predicted*
profile describes a device that is not here: the same input shapes plus the device's peak compute
and memory bandwidth (with the source of the figures), from which
:mod:`autocompress.latency.predict` scales a cost model calibrated on this host. Bundled profiles
live in ``schema/profiles/``; users pass their own by path.
"""

from __future__ import annotations

import difflib
import itertools
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autocompress.errors import ConfigError

__all__ = ["BUNDLED_DIR", "DeviceProfile", "DeviceSpec", "bundled_profiles", "load_profile", "resolve_profile"]

BUNDLED_DIR = Path(__file__).parent / "profiles"


class DeviceSpec(BaseModel):
    """Peak figures of a device, per core, used to scale predictions to it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    cpu: str = Field(min_length=1)  # what the device is, in words
    cores: int = Field(ge=1, le=1024)
    clock_ghz: float = Field(gt=0, le=10)
    fp32_gflops_per_core: float = Field(gt=0)  # peak single-precision FLOP/s per core, in GFLOP/s
    int8_gops_per_core: float = Field(gt=0)  # peak int8 multiply-accumulate throughput, in GOP/s
    memory_gbs: float = Field(gt=0)  # sustained memory bandwidth (e.g. STREAM copy), GB/s
    sources: tuple[str, ...] = Field(min_length=1)  # where each figure comes from

    @field_validator("clock_ghz", "fp32_gflops_per_core", "int8_gops_per_core", "memory_gbs", mode="before")
    @classmethod
    def _float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("sources", mode="before")
    @classmethod
    def _tuple(cls, v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v


class DeviceProfile(BaseModel):
    """Where and how a candidate's latency is measured (on this host) or predicted (elsewhere)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = "custom"  # a label stored with every figure
    description: str = ""
    kind: Literal["measured", "predicted"] = "measured"
    backend: Literal["torch", "onnxruntime"] = "torch"  # PyTorch eager (torch.inference_mode), or each candidate exported to ONNX and run by ONNX Runtime
    device: Literal["cpu", "cuda"] = "cpu"  # where a measured profile runs
    threads: int = Field(2, ge=1, le=1024)  # intra-op threads (torch.set_num_threads)
    batch_size: int | tuple[int, ...] = 1  # sequences per forward pass; several: all are timed
    seq_len: int | tuple[int, ...] = 128  # tokens per sequence; several: all are timed
    inputs: Literal["fixed", "task"] = "fixed"  # fixed: random token ids of batch_size × seq_len; task: the eval split's own examples, one at a time
    task_samples: int = Field(8, ge=1, le=512)  # task: eval examples timed per round, at evenly spaced quantiles of their token lengths
    # 0: one forward pass per input; n ≥ 2: each input is a prompt, then n new tokens generated greedily with the
    # key/value cache, as generate(max_new_tokens=n) makes them (the prompt's pass gives the first, n - 1 steps the rest)
    new_tokens: int = Field(0, ge=0, le=65_536)
    warmup: int = Field(5, ge=0, le=10_000)  # untimed forward passes per model before timing
    repeats: int = Field(20, ge=3, le=100_000)  # timed forward passes per model (interleaved A/B)
    max_repeats: int = Field(80, ge=3, le=100_000)  # cap when the spread asks for more repeats
    max_spread: float = Field(0.03, gt=0, le=10)  # half-width / median of the median ratio's 95 % interval above which we measure more
    spec: DeviceSpec | None = None  # peak figures; required for a predicted profile

    @field_validator("batch_size", "seq_len", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one size")
            v = tuple(v)
        values = v if isinstance(v, tuple) else (v,)
        for x in values:
            if not isinstance(x, int) or isinstance(x, bool) or not 1 <= x <= 65_536:
                raise ValueError(f"sizes must be whole numbers from 1 to 65536, got {x!r}")
        return v

    @field_validator("max_spread", mode="before")
    @classmethod
    def _float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _consistent(self) -> "DeviceProfile":
        if self.max_repeats < self.repeats:
            raise ValueError(f"max_repeats ({self.max_repeats}) must be at least repeats ({self.repeats})")
        if self.kind == "predicted" and self.spec is None:
            raise ValueError("a predicted profile needs 'spec' (the device's peak compute and memory bandwidth)")
        if self.kind == "predicted" and self.device != "cpu":
            raise ValueError("predicted profiles describe CPUs; remove 'device'")
        if self.backend == "onnxruntime" and self.device != "cpu":
            raise ValueError("backend 'onnxruntime' runs on the CPU here; remove 'device' or use backend: torch")
        if self.backend == "onnxruntime" and self.kind == "predicted":
            raise ValueError("a predicted profile has no runtime to run; remove 'backend' (the cost model is PyTorch's)")
        if self.new_tokens == 1:
            raise ValueError("new_tokens 1 is the prompt's pass alone (it gives the first token): set 0 for one forward "
                             "pass per input, or at least 2 so that the time per output token is measured")
        if self.new_tokens and self.kind == "predicted":
            raise ValueError("new_tokens is a generation workload, timed on this host; a predicted profile's cost model "
                             "times forward passes only: remove new_tokens or set kind: measured")
        if self.new_tokens and self.backend == "onnxruntime":
            raise ValueError("new_tokens is a generation workload, timed in PyTorch eager; backend 'onnxruntime' "
                             "times forward passes only: remove new_tokens or set backend: torch")
        if self.inputs == "task":
            # a stored profile holds every field: only values other than the defaults were asked for
            given = [k for k, default in (("batch_size", 1), ("seq_len", 128)) if getattr(self, k) != default]
            if given:
                raise ValueError(f"inputs 'task' times the task's own examples one at a time, at their own lengths; "
                                 f"remove {' and '.join(repr(k) for k in given)} (or set inputs: fixed)")
        elif self.task_samples != 8:
            raise ValueError("task_samples applies to inputs: task only; remove it or set inputs: task")
        return self

    @property
    def task_inputs(self) -> bool:
        """The profile times the task's own eval examples (their lengths), not fixed shapes."""
        return self.inputs == "task"

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Every fixed (batch size, sequence length) the profile times, in order (none for task inputs)."""
        if self.task_inputs:
            return []
        bs = self.batch_size if isinstance(self.batch_size, tuple) else (self.batch_size,)
        ss = self.seq_len if isinstance(self.seq_len, tuple) else (self.seq_len,)
        return list(itertools.product(bs, ss))

    @property
    def predicted(self) -> bool:
        return self.kind == "predicted"

    @property
    def generates(self) -> bool:
        """Each input is a prompt followed by ``new_tokens`` generated tokens, not one forward pass."""
        return self.new_tokens > 0

    @property
    def inputs_label(self) -> str:
        """Which inputs the profile times, in words (for a generation workload: the prompts, then the tokens generated)."""
        then = f", then {self.new_tokens} new tokens each, generated greedily with the key/value cache"
        if self.task_inputs:
            prompts = "as prompts " if self.generates else ""
            return (f"the task's eval texts {prompts}at batch 1 ({self.task_samples} per round, spread over their lengths)"
                    + (then if self.generates else ""))
        shapes = "batch×seq " + ", ".join(f"{b}×{s}" for b, s in self.shapes) + " (random token ids)"
        return f"prompts of {shapes}{then}" if self.generates else shapes

    @property
    def runtime_label(self) -> str:
        return "ONNX Runtime (each candidate exported to ONNX)" if self.backend == "onnxruntime" else "PyTorch"


def bundled_profiles() -> dict[str, Path]:
    """Bundled profile names and their files."""
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.yaml"))}


def _looks_like_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or "/" in ref or ref.startswith(("~", "."))


def resolve_profile(ref: str | dict[str, Any] | DeviceProfile) -> DeviceProfile:
    """A profile from a bundled name, a YAML path, a mapping or a profile; raises ``ValueError``.

    ``ValueError`` (not :class:`ConfigError`) so that a config that names a profile reports the
    problem under its own file and key.
    """
    if isinstance(ref, DeviceProfile):
        return ref
    if isinstance(ref, dict):
        return DeviceProfile.model_validate(ref)
    if not isinstance(ref, str):
        raise ValueError(f"a profile is a name, a path to a YAML file or a mapping, not {type(ref).__name__}")
    bundled = bundled_profiles()
    if ref in bundled:
        return _load_bundled(str(bundled[ref]))
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ValueError(f"profile file '{ref}' does not exist")
        return _load_file(str(path))
    close = difflib.get_close_matches(ref, list(bundled), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown profile '{ref}'.{hint} Available: {', '.join(bundled)} (or a path to a YAML file)")


@cache
def _load_bundled(path: str) -> DeviceProfile:
    """A bundled profile, read once per process (the package's files do not change under it)."""
    return _load_file(path)


def _load_file(path: str) -> DeviceProfile:
    """A profile file as it is now: not cached, so that an edited user file is read again."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"profile file '{path}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"profile file '{path}' must hold a mapping of settings")
    data.setdefault("name", Path(path).stem)
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        where = f"profile file '{path}', key '{key}'" if key else f"profile file '{path}'"  # a check across keys names them itself
        raise ValueError(f"{where}: {err['msg']}") from None


def load_profile(ref: str) -> DeviceProfile:
    """A profile by bundled name or path, for callers outside a config (raises :class:`ConfigError`)."""
    try:
        return resolve_profile(ref)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
