"""Pre-norm causal transformer with sliding-window attention of width W.

Each layer attends to the previous layer's outputs at the last W steps, so training uses
the very window mask streaming has, and the streaming cache is a fixed ring of W keys
and values per layer. Positions enter only as a learned bias per head and offset inside
the window (ALiBi at init), identical in both modes. The receptive field is L (W - 1) + 1.

Glossary: B batch, T time, F features, D = hidden model width, L layers, M head hidden
(layers.py); nh heads, dh = D / nh, W window (WindowAttention in layers.py); R = mlp_ratio.

Parameters (default config, 157,250 of them):
    in_proj                        Linear F -> D
    blocks.{l}.norm1 / .norm2      none | layer | rms over D
    blocks.{l}.attn                WindowAttention(D, nh, W): qkv, out, rel_bias
    blocks.{l}.mlp.fc / .mlp.proj  Linear D -> R D, Linear R D -> D
    norm_f                         none | layer | rms over D
    head                           linear D -> 2, or mlp D -> M -> 2

Step equations, x_t: (B, F); state k, v (L, B, nh, W, dh), pos (B,) int64:
    u = x_t in_proj.weight^T + in_proj.bias                                   (B, D)
    for l in 0..L-1:
        a, k[l], v[l] = blocks[l].attn.step(norm1(u), k[l], v[l], pos);  u = u + a
        u = u + proj(gelu_tanh(fc(norm2(u))))
    y_t = head(norm_f(u));  pos += 1
    gelu_tanh(z) = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lobsweep.errors import UserError

from .layers import Head, WindowAttention, check_common, make_norm, param_like
from .registry import register_model, require_positive


@dataclass
class TransformerConfig:
    n_features: int = 32
    hidden: int = 64
    layers: int = 3
    dropout: float = 0.0
    window: int = 64  # receptive field L (W - 1) + 1 = 190 steps at the defaults
    heads: int = 4
    mlp_ratio: int = 4
    norm: str = "layer"
    head: str = "mlp"
    head_hidden: int = 64

    def __post_init__(self):
        check_common(self)
        require_positive(self, "window", "heads", "mlp_ratio")
        if self.hidden % self.heads:
            raise UserError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")


class MLP(nn.Module):
    """(.., D) -> (.., D): Linear D -> R D, tanh-approximated GELU, Linear R D -> D."""

    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.fc = nn.Linear(dim, ratio * dim)
        self.proj = nn.Linear(ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm residual block: window attention then MLP."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.norm1 = make_norm(c.norm, c.hidden)
        self.attn = WindowAttention(c.hidden, c.heads, c.window)
        self.norm2 = make_norm(c.norm, c.hidden)
        self.mlp = MLP(c.hidden, c.mlp_ratio)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B, T, D) -> (B, T, D)."""
        u = u + self.drop(self.attn(self.norm1(u)))
        return u + self.drop(self.mlp(self.norm2(u)))

    def step(self, u, k_cache, v_cache, pos):
        """u: (B, D), caches (B, nh, W, dh) -> (u', k_cache', v_cache')."""
        a, k_cache, v_cache = self.attn.step(self.norm1(u), k_cache, v_cache, pos)
        u = u + a
        return u + self.mlp(self.norm2(u)), k_cache, v_cache


@register_model("transformer")
class TransformerModel(nn.Module):
    """in_proj -> L pre-norm window-attention blocks -> norm_f -> head."""

    Config = TransformerConfig
    # the smallest config that still runs every code path (tests, smoke runs): tiny_hparams()
    TINY = dict(hidden=8, layers=2, heads=2, window=7, mlp_ratio=2, norm="layer", head_hidden=6)

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = self.config = config
        self.in_proj = nn.Linear(c.n_features, c.hidden)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm_f = make_norm(c.norm, c.hidden)
        self.drop = nn.Dropout(c.dropout)
        self.head = Head(c.hidden, c.head, c.head_hidden, c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F) -> y: (B, T, 2)."""
        u = self.drop(self.in_proj(x))
        for block in self.blocks:
            u = block(u)
        return self.head(self.norm_f(u))

    def init_state(self, batch: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"k", "v": zeros (L, B, nh, W, dh), "pos": zeros (B,) int64}."""
        device, dtype = param_like(self, device, dtype)
        c = self.config
        shape = (c.layers, batch, c.heads, c.window, c.hidden // c.heads)
        return {
            "k": torch.zeros(shape, device=device, dtype=dtype),
            "v": torch.zeros(shape, device=device, dtype=dtype),
            "pos": torch.zeros(batch, dtype=torch.int64, device=device),
        }

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]):
        """x_t: (B, F) -> (y_t (B, 2), new state); the input state is not modified."""
        u = self.in_proj(x_t)
        ks, vs = [], []
        for l, block in enumerate(self.blocks):
            u, k_cache, v_cache = block.step(u, state["k"][l], state["v"][l], state["pos"])
            ks.append(k_cache)
            vs.append(v_cache)
        y = self.head(self.norm_f(u))
        return y, {"k": torch.stack(ks), "v": torch.stack(vs), "pos": state["pos"] + 1}
