"""A one-line `description` of each utterance from its levels (bins.py), in plain English.

"a low-pitched, monotone, fairly fast voice in a clean recording": the voice's pitch, variation
and rate as adjectives of "voice", in that order, then the recording's noise level. A "medium"
attribute is left out (it is the middle seventh of the corpus: nothing to remark on), so a
description names only what stands out; when pitch, variation and rate are all medium the voice is
"a typical voice", and a medium or unmeasured noise level drops the "in a ... recording" part.
An utterance without voiced frames has no pitch, variation or rate: it is "an unvoiced or silent
recording".

Examples: "a very high-pitched, expressive voice in a fairly noisy recording", "a slow voice",
"a typical voice in a very clean recording".
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .bins import ATTRIBUTES, LEVELS, MEDIUM, MISSING

UNVOICED = "an unvoiced or silent recording"
TYPICAL_VOICE = "typical"


def description(pitch: int, variation: int, rate: int, noise: int) -> str:
    """The description of one utterance from its four levels (0..6, or `MISSING`)."""
    if pitch == MISSING:
        return UNVOICED
    adjectives = []
    if pitch != MEDIUM:
        adjectives.append(f"{LEVELS['pitch'][pitch]}-pitched")
    for attribute, level in (("variation", variation), ("rate", rate)):
        if level not in (MEDIUM, MISSING):
            adjectives.append(LEVELS[attribute][level])
    voice = f"{_article(', '.join(adjectives) or TYPICAL_VOICE)} voice"
    if noise in (MEDIUM, MISSING):
        return voice
    return f"{voice} in {_article(LEVELS['noise'][noise])} recording"


def describe(levels: Mapping[str, np.ndarray]) -> np.ndarray:
    """Object array of descriptions, one per row of the levels `Bins.apply` returns. Each
    distinct combination of levels (at most 8^4) is worded once, then looked up."""
    stacked = np.stack([np.asarray(levels[a], np.int64) for a in ATTRIBUTES], axis=1)
    if len(stacked) == 0:
        return np.array([], dtype=object)
    combinations, row = np.unique(stacked, axis=0, return_inverse=True)
    words = np.array([description(*map(int, c)) for c in combinations], dtype=object)
    return words[row.reshape(-1)]


def _article(phrase: str) -> str:
    # every word that can start a phrase here is pronounced as it is spelt ("expressive",
    # "unvoiced"; no "university", "hour"), so the first letter decides
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"
