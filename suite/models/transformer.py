"""Transformer parts shared by the ViT and the LM: attention, feed-forward, block.

At bnn these are paper 1's binary attention (BATL) and transformer block (BTFB): Q, K, V and the
output projection are separate binary normalized layers, so each is thresholded at its own mean and
normalised over its own features before the heads are split (a fused QKV layer would share one
threshold and one normalisation across the three).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from suite.quant import QuantConfig, QuantLinear, make_norm


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qconfig: QuantConfig, causal: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}")
        self.heads = heads
        self.causal = causal
        self.q_proj = QuantLinear(dim, dim, qconfig=qconfig)
        self.k_proj = QuantLinear(dim, dim, qconfig=qconfig)
        self.v_proj = QuantLinear(dim, dim, qconfig=qconfig)
        self.out_proj = QuantLinear(dim, dim, qconfig=qconfig)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, heads, T, D / heads)
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        # Real -inf masking (paper 1's Algorithm 6 prints -1e-10, which would mask nothing).
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, qconfig: QuantConfig) -> None:
        super().__init__()
        self.up = QuantLinear(dim, hidden, qconfig=qconfig)
        self.down = QuantLinear(hidden, dim, qconfig=qconfig)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """``post``: x = norm(x + attn(x)); x = norm(x + ffn(x))   (paper 1, original Transformer).
    ``pre``:  x = x + attn(norm(x)); x = x + ffn(norm(x))    (GPT-2 / ViT; needs a final norm)."""

    def __init__(self, dim: int, heads: int, ff_hidden: int, qconfig: QuantConfig, causal: bool,
                 post_norm: bool) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.attn = Attention(dim, heads, qconfig, causal)
        self.norm1 = make_norm(qconfig, dim)
        self.ffn = FeedForward(dim, ff_hidden, qconfig)
        self.norm2 = make_norm(qconfig, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            x = self.norm1(x + self.attn(x))
            return self.norm2(x + self.ffn(x))
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))
