"""The features stage run in this process over an input, and the features a plain audio file
gives, to compare an input form's rows with the audio they come from."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from timbrespace_ray.config import load_config
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.features import FEATURE_NAMES, ProsodicFeatureExtractor
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.storage import Location


def run_features(input_uri, out: Path, **features):
    """(summary, feature rows by utt_id, error rows by utt_id) of the stage over `input_uri`."""
    cfg = load_config(**{f"features.{k}": v for k, v in features.items()})
    summary = FeaturesStage(Location.of(str(out)), str(input_uri), cfg.features).run(
        LocalExecutor())
    rows = {r["utt_id"]: r for r in pq.read_table(out / "features").to_pylist()}
    errors = ({r["utt_id"]: r for r in pq.read_table(out / "errors").to_pylist()}
              if (out / "errors").exists() else {})
    return summary, rows, errors


def assert_features_of(row: dict, path: Path) -> None:
    """The row's six features are those of the whole file at `path`, read as a plain file."""
    extractor = ProsodicFeatureExtractor()
    extractor.load_audio(str(path))
    expected = extractor.extract()
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(np.asarray(row[name], np.float32),
                                      expected[name].astype(np.float32), err_msg=name)
