"""The evaluation's work on one part: what an executor runs, one call per part (no Ray here).

The features, tokens and embeddings stages number their parts alike (each part of a stage is
made from the same-named part of the one before), so one part's utterances are found in the
three files of that name.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..encoder import pool_windows
from ..errors import InconsistentPartsError
from ..features.analysis import FEATURE_NAMES
from ..profiles import ATTRIBUTES, level_column
from ..storage import Location
from ..tables import flat_lists, read_part
from .representations import (encoder_vectors, feature_statistics, token_frequencies,
                              untrained_encoder)
from .selection import Candidates, Holdout, candidates

# labels the profiles table gives each utterance (its level words), joined by utt_id from the
# same-named part: the profile stage numbers its parts as the features stage does
PROFILE_LABELS = tuple(level_column(a) for a in ATTRIBUTES)


@dataclass(frozen=True)
class PartsSpec:
    """What every part's work needs, shipped to the workers once."""

    output: Location
    label: str
    holdout: Holdout | None
    max_utterances: int
    model_config: dict  # the trained encoder's constructor arguments
    batch_tokens: int
    # a part reports only its candidates at sampling positions below this: the sample of a
    # corpus of millions then costs the driver about max_utterances positions, not millions
    position_bound: float = 1.0


@dataclass(frozen=True)
class PartCandidates:
    """What the driver learns of one part's candidates: numbers, never every utt_id."""

    positions: np.ndarray         # sampling positions of the first `max_utterances`
    counts: dict[str, int]        # Candidates.counts()
    first_of_label: dict[str, float]


def candidate_positions(part: str, spec: PartsSpec) -> PartCandidates:
    found = _candidates(_labelled_rows(part, spec), spec)
    below = found.positions[:spec.max_utterances]
    below = below[below < spec.position_bound]
    return PartCandidates(below, found.counts(),
                          {label: position for label, position in found.first_of_each_label().items()
                           if position < spec.position_bound})


def part_vectors(item: tuple[str, float], spec: PartsSpec) -> dict:
    """For part `item[0]`'s candidates up to sampling position `item[1]`: their labels, pooled
    trained embeddings, feature statistics, token frequencies and untrained encoder's vectors."""
    part, last = item
    stage = spec.output.child
    embeddings = _labelled_rows(part, spec, ("n_frames", "embedding"))
    utt_ids, labels = _candidates(embeddings, spec).up_to(last)
    windows = _rows_of(embeddings, utt_ids)
    index = {u: i for i, u in enumerate(utt_ids)}
    dim = windows.schema.field("embedding").type.list_size
    embedded = pool_windows(
        np.array([index[u] for u in windows.column("utt_id").to_pylist()], np.int64),
        windows.column("n_frames").to_numpy().astype(np.float64),
        flat_lists(windows.column("embedding"))[0].reshape(-1, dim), len(utt_ids))
    token_rows = _in_order(read_part(stage("tokens", part), ["utt_id", "tokens"]), utt_ids, part,
                           "tokens")
    tokens, token_offsets = flat_lists(token_rows.column("tokens"))
    features = _in_order(read_part(stage("features", part), ["utt_id", *FEATURE_NAMES]), utt_ids,
                         part, "features")
    flat = {name: flat_lists(features.column(name)) for name in FEATURE_NAMES}
    with _torch_threads(1):  # the call holds one CPU (see run.py)
        untrained = encoder_vectors(untrained_encoder(spec.model_config), tokens, token_offsets,
                                    spec.batch_tokens)
    return {"label": labels, "embeddings": embedded,
            "feature statistics": feature_statistics({k: v for k, (v, _) in flat.items()},
                                                     flat["f0"][1]),
            "token frequencies": token_frequencies(tokens, token_offsets,
                                                   spec.model_config["vocab_size"]),
            "untrained encoder": untrained}


def _labelled_rows(part: str, spec: PartsSpec, columns: tuple[str, ...] = ()) -> pa.Table:
    """The embeddings part's rows with utt_id, the label (a profile label joined from the
    profiles part), the holdout key and `columns`."""
    joined = spec.label in PROFILE_LABELS
    key = [spec.holdout.key] if spec.holdout else []
    wanted = list(dict.fromkeys(["utt_id", *([] if joined else [spec.label]), *key, *columns]))
    table = read_part(spec.output.child("embeddings", part), wanted)
    if joined:
        profiles = read_part(spec.output.child("profiles", part), ["utt_id", spec.label])
        level = dict(zip(profiles.column("utt_id").to_pylist(),
                         profiles.column(spec.label).to_pylist()))
        table = table.append_column(spec.label, pa.array(
            [level.get(u) for u in table.column("utt_id").to_pylist()], pa.string()))
    return table


def _candidates(table: pa.Table, spec: PartsSpec) -> Candidates:
    key = spec.holdout.key if spec.holdout else None
    return candidates(table.column("utt_id").to_pylist(), table.column(spec.label).to_pylist(),
                      table.column(key).to_pylist() if key else None, spec.holdout)



def _rows_of(table: pa.Table, utt_ids: list[str]) -> pa.Table:
    chosen = pa.array(utt_ids, pa.string())
    return table.filter(pc.is_in(table.column("utt_id"), value_set=chosen))


def _in_order(table: pa.Table, utt_ids: list[str], part: str, folder: str) -> pa.Table:
    """The rows of `utt_ids`, in that order (one row per utterance)."""
    row = {u: i for i, u in enumerate(table.column("utt_id").to_pylist())}
    missing = [u for u in utt_ids if u not in row]
    if missing:
        raise InconsistentPartsError(
            f"{len(missing)} utterance(s) of embeddings/{part} (e.g. {missing[0]!r}) are not in "
            f"{folder}/{part}: the stages' outputs disagree; rerun the stages from {folder} on")
    return table.take(pa.array([row[u] for u in utt_ids], pa.int64()))


@contextlib.contextmanager
def _torch_threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
