"""Token ids read across k-means codebooks, and the pretrained encoder shipped with the package."""
import json
import re

import numpy as np
import pytest
import torch

from helpers.data import N120_MODEL, REPO
from timbrespace_ray.clustering.model import KMeansModel
from timbrespace_ray.config import RECIPE
from timbrespace_ray.encoder import EmbeddingNormalization, ProsodicSequenceEncoder, embed_utterances
from timbrespace_ray.encoder import load_encoder
from timbrespace_ray.encoder.codebook import (PRETRAINED, token_map, translate_tokens,
                                              translated_state)


def test_a_token_is_read_as_the_nearest_centre_of_the_other_codebook():
    target = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    source = np.array([[9.0, 1.0], [1.0, 1.0], [1.0, 8.0], [6.0, 0.0]])
    assert token_map(source, target).tolist() == [1, 0, 2, 1]
    assert token_map(target, target.copy()) is None  # the same codebook: ids unchanged
    assert translate_tokens([np.array([0, 3, 1])], token_map(source, target))[0].tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="dimensions"):
        token_map(source, np.zeros((3, 6)))


def test_a_translated_encoder_embeds_translated_tokens_as_the_original_did():
    torch.manual_seed(0)
    old = ProsodicSequenceEncoder(vocab_size=12, hidden_dim=16, num_layers=1, nhead=2,
                                  pos_max_len=64).eval()
    # the new codebook lists the old one's 10 centres in another order, then 2 unused ids
    perm = np.random.default_rng(0).permutation(10)
    new = ProsodicSequenceEncoder(vocab_size=12, hidden_dim=16, num_layers=1, nhead=2,
                                  pos_max_len=64).eval()
    new.load_state_dict(translated_state(old, perm, 12))
    seqs = [np.random.default_rng(i).integers(0, 10, 30) for i in range(4)]
    np.testing.assert_allclose(embed_utterances(new, seqs, 4),
                               embed_utterances(old, [perm[s] for s in seqs], 4), atol=1e-5)
    # padding and mask rows stay themselves; the head predicts the new ids
    state = translated_state(old, perm, 12)
    emb = old.state_dict()["token_embedding.embedding.weight"]
    assert torch.equal(state["token_embedding.embedding.weight"][12:], emb[12:])
    assert torch.equal(state["prediction_head.3.bias"][:10], old.state_dict()["prediction_head.3.bias"][perm])
    # a smaller codebook (6 clusters, vocabulary 8): rows for its ids only
    small = translated_state(old, np.array([3, 3, 0, 9, 1, 2]), 8)
    assert small["token_embedding.embedding.weight"].shape == (10, 16)
    assert small["prediction_head.3.weight"].shape[0] == 8
    smaller = ProsodicSequenceEncoder(vocab_size=8, hidden_dim=16, num_layers=1, nhead=2,
                                      pos_max_len=64)
    smaller.load_state_dict(small)


def test_the_shipped_encoder_is_whole_and_says_what_it_was_trained_on():
    model = load_encoder(PRETRAINED)
    for key in ("hidden_dim", "num_layers", "nhead"):
        assert getattr(model, key) == RECIPE[key]  # so that training with the defaults starts from it
    codebook = KMeansModel.load(str(PRETRAINED))
    assert codebook.n_clusters == model.vocab_size - 2
    norm = EmbeddingNormalization.from_json((PRETRAINED / "normalization.json").read_text())
    assert norm.mean.shape == (model.hidden_dim,)
    size = sum(p.stat().st_size for p in PRETRAINED.iterdir())
    assert size < 5 << 20
    record = json.loads((PRETRAINED / "training.json").read_text())
    assert record["init"] == "scratch" and record["step"] > 0
    # every package it learned from is named, with its licence, and NOTICE credits each
    notice = (REPO / "NOTICE").read_text()
    packages = {name: doc for voice in record["corpus"].values()
                for name, doc in voice["packages"].items()}
    assert len(record["corpus"]) >= 2 and packages
    for name, doc in packages.items():
        assert doc["licence"] and not re.search(r"\bGPL", doc["licence"]), name
        assert name in notice, f"NOTICE does not credit {name}"


def test_the_shipped_encoder_reads_another_codebooks_tokens():
    model = load_encoder(PRETRAINED).eval()
    published = KMeansModel.load(str(N120_MODEL)).feature_space_centers()
    mapping = token_map(published, KMeansModel.load(str(PRETRAINED)).feature_space_centers())
    assert mapping is not None and len(mapping) == 120 and len(set(mapping.tolist())) > 40
    seqs = translate_tokens([np.arange(120) % 120, np.zeros(50, np.int64)], mapping)
    vectors = embed_utterances(model, seqs, 2)
    assert vectors.shape == (2, model.hidden_dim) and np.isfinite(vectors).all()
