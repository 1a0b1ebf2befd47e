"""Device profiles: the conditions under which latency is measured."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DeviceProfile"]


class DeviceProfile(BaseModel):
    """Where and how a candidate's latency is measured on this host."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = "cpu-2t"  # a label stored with every measurement
    threads: int = Field(2, ge=1, le=1024)  # intra-op threads (torch.set_num_threads)
    batch_size: int = Field(1, ge=1, le=4096)  # sequences per forward pass
    seq_len: int = Field(128, ge=1, le=8192)  # tokens per sequence
    warmup: int = Field(5, ge=0, le=10_000)  # untimed forward passes per model before timing
    repeats: int = Field(20, ge=3, le=100_000)  # timed forward passes per model (interleaved A/B)
    max_repeats: int = Field(80, ge=3, le=100_000)  # cap when the spread asks for more repeats
    max_spread: float = Field(0.10, gt=0, le=10)  # IQR / median of the ratio above which we measure more

    @model_validator(mode="after")
    def _cap_covers_repeats(self) -> "DeviceProfile":
        if self.max_repeats < self.repeats:
            raise ValueError(f"max_repeats ({self.max_repeats}) must be at least repeats ({self.repeats})")
        return self
