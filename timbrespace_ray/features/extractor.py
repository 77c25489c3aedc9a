"""`ProsodicFeatureExtractor`: the original toolkit's interface over our feature math."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..audio import decode_audio, load_with_librosa
from ..errors import InvalidAudioError
from .analysis import FEATURE_NAMES, analyse, as_mono_float32, frames_count
from .config import FeatureConfig


class ProsodicFeatureExtractor:
    """Six prosodic features per hop (16 ms by default) of a speech waveform.

    >>> extractor = ProsodicFeatureExtractor()
    >>> extractor.load_audio("speech.wav")          # doctest: +SKIP
    >>> features = extractor.extract()               # doctest: +SKIP
    >>> features["f0"].shape                         # doctest: +SKIP
    """

    feature_names = FEATURE_NAMES

    def __init__(self, sample_rate: int = 16000, frame_ms: float = 50, hop_ms: float = 16,
                 emphasize_ratio: float = 0.7, output_normalize: bool = True,
                 smoothing_level: str = "medium"):
        from pydantic import ValidationError

        from ..errors import ConfigError, UnsupportedSampleRateError

        try:
            self.config = FeatureConfig(
                sample_rate=sample_rate, frame_ms=frame_ms, hop_ms=hop_ms,
                emphasize_ratio=emphasize_ratio, output_normalize=output_normalize,
                smoothing_level=smoothing_level,
            )
        except ValidationError as exc:
            fields = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            kind = UnsupportedSampleRateError if fields == {"sample_rate"} else ConfigError
            raise kind(_validation_message(exc)) from None
        self.audio: np.ndarray | None = None

    @classmethod
    def from_config(cls, config: FeatureConfig) -> "ProsodicFeatureExtractor":
        return cls(**config.model_dump())

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def load_audio(self, path: str, loader: str = "soundfile",
                   storage_options: dict | None = None) -> np.ndarray:
        """Decode a local path or fsspec URL to mono float32 at `sample_rate` and keep it for
        `extract()`. `loader` is "soundfile" (streaming, bounded memory) or "librosa"."""
        if loader == "soundfile":
            audio, _, _ = decode_audio(path, self.sample_rate, storage_options=storage_options)
        elif loader == "librosa":
            audio = load_with_librosa(path, self.sample_rate, storage_options)
        else:
            raise ValueError(f"loader must be 'soundfile' or 'librosa', got {loader!r}")
        self.audio = audio
        return audio

    def extract(self, start_ms: float = 0, end_ms: float = -1, audio_tensor=None,
                input_normalize: bool = True) -> dict[str, np.ndarray]:
        """The six features of `audio_tensor` (1-D, or 2-D channels-first averaged to mono; numpy
        or torch), or of the audio from `load_audio()`. Returns float64 arrays, one per frame."""
        if audio_tensor is None:
            if self.audio is None:
                raise InvalidAudioError("no audio: call load_audio() or pass audio_tensor")
            audio = self.audio
        else:
            audio = as_mono_float32(audio_tensor)
        return analyse(audio, self.config, start_ms, end_ms, input_normalize)

    def extract_batch(self, waveforms: Sequence, input_normalize: bool = True
                      ) -> list[dict[str, np.ndarray]]:
        """Features of many whole waveforms (any lengths) in one call; same numbers as extract()."""
        return [analyse(as_mono_float32(w), self.config, 0, -1, input_normalize)
                for w in waveforms]

    def get_frames_count(self, n_samples: int) -> int:
        """Frames for a signal of n_samples (at least 1, as in the original)."""
        return max(1, frames_count(int(n_samples), self.config))

    def plot_features(self, features: dict[str, np.ndarray], title: str | None = None,
                      save_path: str | None = None):
        """Six contours over time in one PNG figure; returns the matplotlib Figure."""
        from .plot import plot_features

        return plot_features(features, self.config, title=title, save_path=save_path,
                             audio=self.audio)


def _validation_message(exc) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return "invalid feature settings: " + "; ".join(parts)
