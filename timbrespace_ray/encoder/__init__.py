"""The Timbrespace sequence encoder, its checkpoints, and plain-torch training/embedding helpers."""
from .batching import (PaddedBatch, collate, length_buckets, padding_fraction, random_crop,
                       split_windows, token_batches)
from .checkpoint import (SAFE_GLOBALS, encoder_state_dict, load_checkpoint, load_encoder,
                         load_model, save_encoder)
from .inference import embed, embed_utterances, embed_windows, inference_model, pool_windows
from .normalization import NORMALIZATION_FILE, EmbeddingNormalization
from .masking import DEFAULT_MASK_SPAN_DIST, SpanMasker
from .model import PADDING_TOKEN_ID, ProsodicSequenceEncoder
from .training import make_optimizer, masked_accuracy, masked_lm_loss, warmup_cosine

__all__ = [
    "DEFAULT_MASK_SPAN_DIST",
    "EmbeddingNormalization",
    "NORMALIZATION_FILE",
    "PADDING_TOKEN_ID",
    "PaddedBatch",
    "ProsodicSequenceEncoder",
    "SAFE_GLOBALS",
    "SpanMasker",
    "collate",
    "embed",
    "embed_utterances",
    "embed_windows",
    "encoder_state_dict",
    "inference_model",
    "length_buckets",
    "load_checkpoint",
    "load_encoder",
    "load_model",
    "make_optimizer",
    "masked_accuracy",
    "masked_lm_loss",
    "padding_fraction",
    "pool_windows",
    "random_crop",
    "save_encoder",
    "split_windows",
    "token_batches",
    "warmup_cosine",
]
