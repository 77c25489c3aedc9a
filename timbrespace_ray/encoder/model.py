"""ProsodicSequenceEncoder: the Timbrespace transformer over prosodic token sequences.

Built from the original toolkit's documented interface and its published state-dict layout
(parameter names and shapes match exactly, so its checkpoints load; see `checkpoint.py`):

- token ids `0 .. vocab_size - 1` form the base vocabulary; the embedding table has two more
  rows, internal padding (`vocab_size`) and mask (`vocab_size + 1`);
- token embedding scaled by sqrt(hidden_dim), then LayerNorm; fixed sinusoidal positions
  (`pos_encoder.pe`, a buffer of pos_max_len positions);
- a post-norm `nn.TransformerEncoder` (GELU, feed-forward 4 x hidden), then a final LayerNorm;
- a two-layer prediction head (hidden -> 2 x hidden -> GELU -> dropout -> vocab_size) predicting
  the original token over the whole base vocabulary: the layout's head has vocab_size (122)
  outputs, so with 120 k-means clusters ids 120 and 121 are valid but never occur in the data.

`forward(x, training=True)` masks spans (see `masking.py`) and returns what masked-token training
needs; `forward(x)` returns the mean of the final hidden states over real tokens. The `training`
argument chooses masking and the output; dropout follows the module's own `train()`/`eval()`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .masking import DEFAULT_MASK_SPAN_DIST, SpanMasker

PADDING_TOKEN_ID = -100


class TokenEmbedding(nn.Module):
    """Scaled embedding followed by LayerNorm (`token_embedding.embedding/.layer_norm`)."""

    def __init__(self, num_embeddings: int, hidden_dim: int, padding_idx: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, hidden_dim, padding_idx=padding_idx)
        self.layer_norm = nn.LayerNorm(hidden_dim)
        self.scale = math.sqrt(hidden_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.embedding(tokens) * self.scale)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds fixed sine/cosine positions: pe[p, 2i] = sin(p w_i), pe[p, 2i+1] = cos(p w_i)."""

    def __init__(self, hidden_dim: int, max_len: int, dropout_rate: float) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        freq = torch.exp(torch.arange(0, hidden_dim, 2, dtype=torch.float32)
                         * (-math.log(10000.0) / hidden_dim))
        pe = torch.zeros(1, max_len, hidden_dim)
        pe[0, :, 0::2] = torch.sin(position * freq)
        pe[0, :, 1::2] = torch.cos(position * freq)
        # persistent: the original's state dict carries it
        self.register_buffer("pe", pe)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]].to(x.dtype))


class ProsodicSequenceEncoder(nn.Module):
    """Masked-token transformer encoder over prosodic token sequences (see module doc)."""

    def __init__(self, vocab_size: int = 122, hidden_dim: int = 768, num_layers: int = 8,
                 nhead: int = 8, pos_max_len: int = 2000,
                 padding_token_id: int = PADDING_TOKEN_ID, dropout_rate: float = 0.1,
                 mask_prob: float = 0.15,
                 mask_span_dist: Mapping[int | str, float] | None = None) -> None:
        super().__init__()
        # plain Python numbers (hyper-parameters may arrive as numpy scalars) keep config JSON-able
        self.vocab_size = vocab_size = int(vocab_size)
        self.hidden_dim = hidden_dim = int(hidden_dim)
        self.num_layers = num_layers = int(num_layers)
        self.nhead = nhead = int(nhead)
        self.pos_max_len = pos_max_len = int(pos_max_len)
        self.padding_token_id = int(padding_token_id)
        self.dropout_rate = dropout_rate = float(dropout_rate)
        if vocab_size < 1 or hidden_dim % nhead or hidden_dim % 2:
            raise ValueError(f"need vocab_size >= 1 and an even hidden_dim divisible by nhead, "
                             f"got vocab_size={vocab_size} hidden_dim={hidden_dim} nhead={nhead}")
        self.pad_id = vocab_size
        self.mask_id = vocab_size + 1
        self.masker = SpanMasker(vocab_size, self.mask_id, mask_prob,
                                 DEFAULT_MASK_SPAN_DIST if mask_span_dist is None
                                 else mask_span_dist)

        self.token_embedding = TokenEmbedding(vocab_size + 2, hidden_dim, self.pad_id)
        self.pos_encoder = SinusoidalPositionalEncoding(hidden_dim, pos_max_len, dropout_rate)
        layer = nn.TransformerEncoderLayer(hidden_dim, nhead, 4 * hidden_dim, dropout_rate,
                                           activation="gelu", batch_first=True,
                                           norm_first=False)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers)
        self.prediction_head = nn.Sequential(
            nn.Linear(hidden_dim, 2 * hidden_dim), nn.GELU(), nn.Dropout(dropout_rate),
            nn.Linear(2 * hidden_dim, vocab_size))
        self.final_norm = nn.LayerNorm(hidden_dim)

    @property
    def mask_prob(self) -> float:
        return self.masker.mask_prob

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-ready) that rebuild this architecture."""
        return {"vocab_size": self.vocab_size, "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers, "nhead": self.nhead,
                "pos_max_len": self.pos_max_len, "padding_token_id": self.padding_token_id,
                "dropout_rate": self.dropout_rate, "mask_prob": self.mask_prob,
                "mask_span_dist": dict(self.masker.span_dist)}

    def update_mask_prob(self, prob: float) -> None:
        """Change the fraction of real tokens chosen as targets (e.g. a curriculum)."""
        self.masker.mask_prob = prob

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                training: bool = False, generator: torch.Generator | None = None):
        """Encode `x` ([B, T] token ids, `padding_token_id` where padded).

        `lengths` ([B]) marks positions >= length as padding too. With `training=True` returns
        `(logits [B, T, vocab_size], hidden_states [B, T, H], target_mask [B, T] bool,
        original_tokens [B, T])` where original tokens use internal ids (padding = vocab_size);
        `generator` (on x's device) makes the masking reproducible. Otherwise returns the
        [B, H] mean of the final hidden states over real tokens (zeros for an empty row).
        """
        tokens, real = self._internal_tokens(x, lengths)
        if not training:
            hidden = self._encode(tokens, real)
            weights = real.unsqueeze(-1).to(torch.float32)
            # pooled in float32 whatever the autocast dtype
            summed = (hidden.float() * weights).sum(dim=1)
            return summed / weights.sum(dim=1).clamp(min=1.0)
        inputs, target_mask = self.masker(tokens, real, generator)
        hidden = self._encode(inputs, real)
        return self.prediction_head(hidden), hidden, target_mask, tokens

    def _internal_tokens(self, x: torch.Tensor,
                         lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 2 or x.shape[1] == 0:
            raise ValueError(f"expected token ids of shape [batch, time >= 1], "
                             f"got {tuple(x.shape)}")
        if x.shape[1] > self.pos_max_len:
            raise ValueError(f"sequence of {x.shape[1]} tokens exceeds pos_max_len="
                             f"{self.pos_max_len}; cut it with split_windows()")
        x = x.long()
        real = x != self.padding_token_id
        if lengths is not None:
            positions = torch.arange(x.shape[1], device=x.device)
            real &= positions.unsqueeze(0) < lengths.to(x.device).unsqueeze(1)
        if bool((real & ((x < 0) | (x >= self.vocab_size))).any()):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}) or "
                             f"{self.padding_token_id} (padding)")
        return torch.where(real, x, self.pad_id), real

    def _encode(self, tokens: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        key_padding = ~real
        # a row with no real token would attend to nothing (NaN); let it see its first slot
        key_padding[:, 0] &= real.any(dim=1)
        h = self.pos_encoder(self.token_embedding(tokens))
        h = self.transformer_encoder(h, src_key_padding_mask=key_padding)
        return self.final_norm(h)
