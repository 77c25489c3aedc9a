"""ProsodicSequenceEncoder: the Timbrespace transformer over prosodic token sequences.

Built from the original toolkit's documented interface and its published state-dict layout
(parameter names and shapes match exactly, so its checkpoints load; see `checkpoint.py`):

- token ids `0 .. vocab_size - 1` form the base vocabulary; the embedding table has two more
  rows, internal padding (`vocab_size`) and mask (`vocab_size + 1`);
- token embedding scaled by sqrt(hidden_dim), then LayerNorm; fixed sinusoidal positions
  (`pos_encoder.pe`, a buffer of pos_max_len positions);
- a post-norm `nn.TransformerEncoder` (GELU, feed-forward 4 x hidden), then a final LayerNorm;
  its layers are `nn.TransformerEncoderLayer`s whose self-attention runs through
  `scaled_dot_product_attention` (see `EncoderLayer`: same parameters, same numbers, no
  [B, heads, T, T] weight matrix kept for the backward pass);
- a two-layer prediction head (hidden -> 2 x hidden -> GELU -> dropout -> vocab_size) predicting
  the original token over the whole base vocabulary: the layout's head has vocab_size (122)
  outputs, so with 120 k-means clusters ids 120 and 121 are valid but never occur in the data.

`activation_checkpointing = True` recomputes each layer in the backward pass instead of keeping its
activations (training memory per token drops about ten-fold; see `memory.py`).

`forward(x, training=True)` masks spans (see `masking.py`) and returns what masked-token training
needs; `forward(x)` returns the mean of the final hidden states over real tokens. The `training`
argument chooses masking and the output; dropout follows the module's own `train()`/`eval()`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

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


# Elements of one [B, heads, queries, keys] block of attention weights that the CPU fallback with
# attention dropout materialises at a time (x ~4 float copies in its backward: ~256 MB).
ATTENTION_CHUNK_ELEMENTS = 1 << 24


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      allowed: torch.Tensor | None, dropout_p: float,
                      chunk_elements: int = ATTENTION_CHUNK_ELEMENTS) -> torch.Tensor:
    """`scaled_dot_product_attention` over blocks of queries, each recomputed in the backward.

    For the kernel that materialises the weights (PyTorch's CPU kernel with dropout): each block
    holds at most `chunk_elements` weights and only q, k, v are kept for the backward pass (the
    recomputation replays the same dropout draws: checkpoint preserves the RNG state).
    """
    b, h, t_q, t_k = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    step = max(1, chunk_elements // max(1, b * h * t_k))
    if step >= t_q:
        return F.scaled_dot_product_attention(q, k, v, allowed, dropout_p)
    return torch.cat([checkpoint(F.scaled_dot_product_attention, q[:, :, i:i + step], k, v,
                                 allowed, dropout_p, use_reentrant=False)
                      for i in range(0, t_q, step)], dim=2)


class EncoderLayer(nn.TransformerEncoderLayer):
    """Post-norm `nn.TransformerEncoderLayer` (same parameters and state dict) whose
    self-attention calls `scaled_dot_product_attention` on the `self_attn` projections.

    `nn.MultiheadAttention` hands SDPA a [B, heads, T, T] float mask and, with attention dropout
    on CPU, gets the math kernel that keeps several B x heads x T x T tensors per layer for the
    backward pass (16 x 8 x 2,000 x 2,000 floats = 2 GB each). Here the key-padding mask stays a
    broadcast [B, 1, 1, T] boolean: without dropout (eval, or dropout 0) on CPU the fused flash
    kernel runs, on CUDA the memory-efficient one (dropout included); with dropout on CPU the
    queries go in blocks (`chunked_attention`). Identical to the stock layer up to rounding.
    """

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        if src_mask is not None or is_causal or self.norm_first or src.dim() != 3:
            raise ValueError("EncoderLayer supports batch-first [B, T, H] input with a key "
                             "padding mask only (post-norm)")
        x = self.norm1(src + self._attention_block(src, src_key_padding_mask))
        return self.norm2(x + self._ff_block(x))

    def _attention_block(self, x: torch.Tensor,
                         key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        attn = self.self_attn
        b, t, e = x.shape
        heads = attn.num_heads
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
        # in_proj rows are [q; k; v], each split into heads of e // heads: [3, B, heads, T, d]
        q, k, v = qkv.view(b, t, 3, heads, e // heads).permute(2, 0, 3, 1, 4)
        allowed = None
        if key_padding_mask is not None:
            allowed = ~key_padding_mask.to(torch.bool).view(b, 1, 1, t)
        p = attn.dropout if self.training else 0.0
        if p > 0 and x.device.type == "cpu" and torch.is_grad_enabled():
            out = chunked_attention(q, k, v, allowed, p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, allowed, p)
        return self.dropout1(attn.out_proj(out.transpose(1, 2).reshape(b, t, e)))


class LayerStack(nn.TransformerEncoder):
    """`nn.TransformerEncoder` (same state dict: `layers.<i>.*`) running its layers in a plain
    loop, each optionally under activation checkpointing (`checkpointing`, training only)."""

    def __init__(self, layer: nn.TransformerEncoderLayer, num_layers: int) -> None:
        super().__init__(layer, num_layers, enable_nested_tensor=False)
        self.checkpointing = False

    def forward(self, src: torch.Tensor, mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None,
                is_causal: bool | None = None) -> torch.Tensor:
        if mask is not None or is_causal:
            raise ValueError("LayerStack supports a key padding mask only")
        h = src
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                h = checkpoint(layer, h, None, src_key_padding_mask, use_reentrant=False)
            else:
                h = layer(h, src_key_padding_mask=src_key_padding_mask)
        return h if self.norm is None else self.norm(h)


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
        layer = EncoderLayer(hidden_dim, nhead, 4 * hidden_dim, dropout_rate,
                             activation="gelu", batch_first=True, norm_first=False)
        self.transformer_encoder = LayerStack(layer, num_layers)
        self.prediction_head = nn.Sequential(
            nn.Linear(hidden_dim, 2 * hidden_dim), nn.GELU(), nn.Dropout(dropout_rate),
            nn.Linear(2 * hidden_dim, vocab_size))
        self.final_norm = nn.LayerNorm(hidden_dim)

    @property
    def mask_prob(self) -> float:
        return self.masker.mask_prob

    @property
    def activation_checkpointing(self) -> bool:
        """Recompute each layer's activations in the backward pass (a runtime choice: not part
        of `config` or the state dict)."""
        return self.transformer_encoder.checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, on: bool) -> None:
        self.transformer_encoder.checkpointing = bool(on)

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
        if bool(real.all()):
            # no padding (one window, or windows of one length): attention runs without a
            # mask, to the same numbers, and faster (PyTorch's CPU flash kernel reads a mask
            # block for every block of scores)
            key_padding = None
        else:
            key_padding = ~real
            # a row with no real token would attend to nothing (NaN); let it see its first slot
            key_padding[:, 0] &= real.any(dim=1)
        h = self.pos_encoder(self.token_embedding(tokens))
        h = self.transformer_encoder(h, src_key_padding_mask=key_padding)
        return self.final_norm(h)
