"""Settings of the prosodic feature extractor (spec: prosodic-features.md)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SMOOTHING_STRENGTH = {"light": 0.3, "medium": 0.7, "heavy": 0.9}

# F_MAX is 6 kHz, so the rate must keep it below Nyquist; above 48 kHz the fixed 8192-point
# analysis grid gets coarser than the low mel bands and the features lose their meaning.
MIN_SAMPLE_RATE = 12_000
MAX_SAMPLE_RATE = 48_000


class FeatureConfig(BaseModel):
    """The extractor's parameters; the defaults are the original toolkit's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: int = Field(16_000, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)
    frame_ms: float = Field(50.0, gt=0, le=200)
    hop_ms: float = Field(16.0, gt=0, le=200)
    emphasize_ratio: float = Field(0.7, ge=0.0, lt=1.0)
    output_normalize: bool = True
    smoothing_level: Literal["light", "medium", "heavy"] = "medium"

    @model_validator(mode="after")
    def _frame_fits_fft(self) -> "FeatureConfig":
        if self.hop_samples < 1:
            raise ValueError(f"hop_ms={self.hop_ms} is shorter than one sample")
        if not 2 <= self.frame_samples <= 4096:
            raise ValueError(
                f"frame_ms={self.frame_ms} gives {self.frame_samples} samples; "
                "frames must hold 2..4096 samples (the analysis FFT has 8192 points)"
            )
        return self

    @property
    def frame_samples(self) -> int:
        return int(self.sample_rate * self.frame_ms / 1000)

    @property
    def hop_samples(self) -> int:
        return int(self.sample_rate * self.hop_ms / 1000)

    @property
    def smoothing(self) -> float:
        return SMOOTHING_STRENGTH[self.smoothing_level]
