"""Token ids of one k-means codebook read in another's (numpy and torch, no Ray).

An encoder learns an embedding for each token id of the codebook its training tokens came from.
Codebooks fitted on different corpora share the feature space, not the ids: a token of one is
read as the nearest centre of the other. So an encoder trained on one corpus embeds another's
tokens, and training can start from an encoder trained elsewhere, its token rows reordered.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .model import ProsodicSequenceEncoder

# The encoder shipped with the package (its folder also holds its codebook, `kmeans_model.json`,
# and its figures on voices never heard, `evaluation.json`).
PRETRAINED = Path(__file__).parent / "pretrained"
PRETRAINED_NAME = "pretrained"
CARD_FILE = "evaluation.json"
# the state-dict entries with one row per token id
EMBEDDING_ROWS = "token_embedding.embedding.weight"
HEAD_ROWS = ("prediction_head.3.weight", "prediction_head.3.bias")
SHAPE_KEYS = ("hidden_dim", "num_layers", "nhead", "pos_max_len")


def shipped_card() -> dict | None:
    """The shipped encoder's figures on the evaluation suite (None: none shipped)."""
    path = PRETRAINED / CARD_FILE
    return json.loads(path.read_text()) if path.exists() else None


def token_map(source: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """For each centre of `source` ([k_s, d], the weighted feature space), the index of the
    nearest centre of `target` ([k_t, d]); None when the two are the same codebook."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    if source.shape[1:] != target.shape[1:]:
        raise ValueError(f"codebooks of {source.shape[1]} and {target.shape[1]} dimensions")
    if source.shape == target.shape and np.array_equal(source, target):
        return None
    distances = ((source[:, None, :] - target[None, :, :]) ** 2).sum(axis=-1)
    return distances.argmin(axis=1)


def translate_tokens(sequences: list[np.ndarray], mapping: np.ndarray | None
                     ) -> list[np.ndarray]:
    """Each sequence's ids in the target codebook (unchanged when `mapping` is None)."""
    if mapping is None:
        return sequences
    return [mapping[np.asarray(seq, np.int64)] for seq in sequences]


def same_shape(model: ProsodicSequenceEncoder, kwargs: Mapping) -> bool:
    """Whether an encoder built with `kwargs` can take `model`'s weights (its vocabulary aside)."""
    return all(getattr(model, k) == kwargs[k] for k in SHAPE_KEYS)


def translated_state(model: ProsodicSequenceEncoder, mapping: np.ndarray | None,
                     vocab_size: int) -> dict[str, torch.Tensor]:
    """`model`'s state dict for an encoder of `vocab_size` base ids whose id i is `model`'s id
    `mapping[i]` (ids beyond the mapping, never in the data, take the model's own spares or id
    0). Padding and mask rows stay padding and mask; the prediction head is reordered the same
    way, so what training starts from predicts this codebook's ids."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if mapping is None and vocab_size == model.vocab_size:
        return state
    mapping = np.arange(model.vocab_size) if mapping is None else np.asarray(mapping, np.int64)
    spares = [i if i < model.vocab_size else 0 for i in range(len(mapping), vocab_size)]
    rows = torch.as_tensor(np.concatenate([mapping[:vocab_size], spares]).astype(np.int64))
    special = torch.tensor([model.pad_id, model.mask_id])
    state[EMBEDDING_ROWS] = state[EMBEDDING_ROWS][torch.cat([rows, special])]
    for key in HEAD_ROWS:
        state[key] = state[key][rows]
    return state
