"""Style profiles: every utterance and speaker described in physical units and plain words.

Plain numpy, no Ray: `measures` turns one part's frames into per-utterance measures, `bins`
fits and applies seven levels per headline attribute (stored as `bins.json`), `describe` words
the levels, `speakers` aggregates the rows per speaker, `plots` draws them for the report.
"""
from .bins import (ATTRIBUTES, LEVELS, MEASURE_OF, Bins, level_column, level_names,
                   pitch_group_column)
from .describe import describe, description
from .measures import MEASURE_COLUMNS, MeasureConfig, hop_seconds, utterance_measures
from .speakers import SUMMARISED, find_speaker_column, speaker_table

__all__ = [
    "ATTRIBUTES", "Bins", "LEVELS", "MEASURE_COLUMNS", "MEASURE_OF", "MeasureConfig",
    "SUMMARISED", "describe", "description", "find_speaker_column",
    "hop_seconds", "level_column", "level_names", "pitch_group_column", "speaker_table",
    "utterance_measures",
]
