"""GRU followed by causal attention over its last W hidden states.

The GRU summarises the whole past; the attention lets each step look back sharply at
the last W states (a recent regime change, a burst of trades) without the GRU having
to hold them. Streaming keeps the attention keys/values of the last W steps in a ring.

Glossary: B batch, T time, F features, H hidden, L GRU layers, M head hidden (layers.py);
nh heads, dh = H / nh, W window (WindowAttention in layers.py).

Parameters (default config, 159,138 of them):
    in_proj    Linear F -> H (absent when input_proj=False)
    rnn        nn.GRU, L layers of width H
    attn_norm  none | layer | rms over H        attn  WindowAttention(H, nh, W): qkv, out, rel_bias
    norm       none | layer | rms over H        head  linear H -> 2 or mlp H -> M -> 2

Step equations, x_t: (B, F); state h (L, B, H), k, v (B, nh, W, dh), pos (B,) int64:
    g_t = top GRU state after the GRU step of gru.py                    (B, H)
    a_t, k, v = attn.step(attn_norm(g_t), k, v, pos)                    (ring write at pos % W)
    y_t = head(norm(g_t + a_t));  pos += 1
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lobsweep.errors import UserError

from .layers import RecurrentBody, WindowAttention, check_common, gru_cell, make_norm, param_like, rnn_layer_weights
from .registry import register_model, require_positive


@dataclass
class GRUAttentionConfig:
    n_features: int = 32
    hidden: int = 96
    layers: int = 2
    dropout: float = 0.0
    input_proj: bool = True
    window: int = 64  # steps of GRU states each step attends to, itself included
    heads: int = 4
    norm: str = "layer"
    head: str = "mlp"
    head_hidden: int = 64

    def __post_init__(self):
        check_common(self)
        require_positive(self, "window", "heads")
        if self.hidden % self.heads:
            raise UserError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")


@register_model("gru_attention")
class GRUAttentionModel(RecurrentBody):
    """Stacked GRU -> residual window attention -> norm -> head."""

    Config = GRUAttentionConfig
    # the smallest config that still runs every code path (tests, smoke runs): tiny_hparams()
    TINY = dict(hidden=8, layers=1, heads=2, window=5, norm="rms", head_hidden=6)

    rnn_class = nn.GRU

    def __init__(self, config: GRUAttentionConfig):
        super().__init__(config)          # in_proj, rnn, drop, norm, head as in the gru family
        self.attn_norm = make_norm(config.norm, config.hidden)
        self.attn = WindowAttention(config.hidden, config.heads, config.window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F) -> y: (B, T, 2)."""
        g, _ = self.rnn(self._embed(x))  # (B, T, H)
        g = g + self.drop(self.attn(self.attn_norm(g)))
        return self.head(self.norm(self.drop(g)))

    def init_state(self, batch: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"h": (L, B, H), "k", "v": (B, nh, W, dh), "pos": (B,) int64}, all zero."""
        device, dtype = param_like(self, device, dtype)
        return {
            "h": torch.zeros(self.config.layers, batch, self.config.hidden, device=device, dtype=dtype),
            "k": self.attn.init_cache(batch, device, dtype),
            "v": self.attn.init_cache(batch, device, dtype),
            "pos": torch.zeros(batch, dtype=torch.int64, device=device),
        }

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]):
        """x_t: (B, F) -> (y_t (B, 2), new state); the input state is not modified."""
        g = self._embed(x_t)
        hs = []
        for k in range(self.config.layers):
            g = gru_cell(g, state["h"][k], *rnn_layer_weights(self.rnn, k))
            hs.append(g)
        a, k_cache, v_cache = self.attn.step(self.attn_norm(g), state["k"], state["v"], state["pos"])
        y = self.head(self.norm(g + a))
        return y, {"h": torch.stack(hs), "k": k_cache, "v": v_cache, "pos": state["pos"] + 1}
