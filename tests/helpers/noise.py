"""Clean bundled speech mixed with noise at a known SNR (tests/features/test_features_levels.py,
tests/benchmarks/bench_snr.py).

The known SNR is defined as the product measures it: the P.56 active level of the clean speech
against the mean power of the noise added, both over the whole recording."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers.corpus import SPEECH
from timbrespace_ray.audio import decode_audio
from timbrespace_ray.features.levels import active_level_db

SR = 16_000
# the bundled recordings whose own noise lies 30 dB or more below their speech (CMU ARCTIC's
# studio recordings and the CMU Sphinx test utterance); the LibriVox readings (64 kbit/s MP3s,
# about 20 dB) and the AMI meetings (several talkers) are not clean
CLEAN = [p for p in SPEECH if "arctic" in p.name or "goforward" in p.name]


def speaker_of(path: Path) -> str:
    # the five LibriVox readings are one reader
    return "librivox" if "librivox" in path.name else path.stem


def load(path: Path) -> np.ndarray:
    """The recording as the features stage analyses it: mono, at SR."""
    samples, _, _ = decode_audio(str(path), SR)
    return samples.astype(np.float64)


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls 3 dB per octave (1/f), by shaping white noise's spectrum."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def babble(target: Path, n: int, rng: np.random.Generator) -> np.ndarray:
    """Every other bundled speaker (all LibriVox readings as one talker), each at the same P.56
    active level, looped from a random start to n samples, summed."""
    talkers: dict[str, list[np.ndarray]] = {}
    for path in SPEECH:
        if speaker_of(path) != speaker_of(target):
            talkers.setdefault(speaker_of(path), []).append(load(path))
    out = np.zeros(n)
    for pieces in talkers.values():
        voice = np.concatenate(pieces)
        voice /= np.sqrt(10 ** (active_level_db(voice, SR) / 10))
        start = int(rng.integers(len(voice)))
        out += np.resize(np.roll(voice, -start), n)  # np.resize repeats the voice to n samples
    return out


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """clean + the noise scaled so that the clean speech's active level stands snr_db above the
    noise's mean power; float32, as the features stage decodes audio."""
    noise_power = float(np.mean(np.square(noise)))
    target = 10 ** ((active_level_db(clean, SR) - snr_db) / 10)
    return (clean + noise * np.sqrt(target / noise_power)).astype(np.float32)
