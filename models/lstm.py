"""Multi-layer LSTM with a per-step head: the GRU family's shape with a cell state.

Glossary: B batch, T time, F features, H hidden, L layers, M head hidden (see layers.py).

Parameters (default config, 213,554 of them):
    in_proj            Linear F -> H            (absent when input_proj=False; then the LSTM reads F)
    rnn                nn.LSTM, L layers of width H (weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k})
    norm               none | layer | rms over H
    head               linear H -> 2, or mlp H -> M -> 2 (ReLU)

Step equations, x_t: (B, F), state h, c: (L, B, H):
    u_0 = x_t in_proj.weight^T + in_proj.bias                             (B, H)
    for k in 0..L-1:  h[k], c[k] = lstm_cell(u_k, h[k], c[k]);  u_{k+1} = h[k]   (layers.py)
    y_t = head(norm(u_L))                                                  (B, 2)
Dropout (training only) sits between LSTM layers and before the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import RecurrentBody, check_common, lstm_cell, rnn_layer_weights
from .registry import register_model


@dataclass
class LSTMConfig:
    n_features: int = 32
    hidden: int = 112  # 4 gates instead of 3: 112 keeps the size next to the 128-wide GRU
    layers: int = 2
    dropout: float = 0.0
    input_proj: bool = True
    norm: str = "none"
    head: str = "mlp"
    head_hidden: int = 64

    def __post_init__(self):
        check_common(self)


@register_model("lstm")
class LSTMModel(RecurrentBody):
    """Stacked LSTM -> norm -> head; streaming state is the L (h, c) pairs."""

    Config = LSTMConfig
    # the smallest config that still runs every code path (tests, smoke runs): tiny_hparams()
    TINY = dict(hidden=8, layers=2, norm="rms", head="linear", input_proj=False)
    rnn_class = nn.LSTM

    def init_state(self, batch: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"h": zeros (L, B, H), "c": zeros (L, B, H)}."""
        return {"h": self._zeros(batch, device, dtype), "c": self._zeros(batch, device, dtype)}

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]):
        """x_t: (B, F) -> (y_t (B, 2), new state); the input state is not modified."""
        u = self._embed(x_t)
        hs, cs = [], []
        for k in range(self.config.layers):
            u, c = lstm_cell(u, state["h"][k], state["c"][k], *rnn_layer_weights(self.rnn, k))
            hs.append(u)
            cs.append(c)
        return self.head(self.norm(u)), {"h": torch.stack(hs), "c": torch.stack(cs)}
