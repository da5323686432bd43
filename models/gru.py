"""Multi-layer GRU with a per-step head: the default family.

The organisers' baseline is this family with ``input_proj=False`` (the GRU
reads the F inputs directly), 3 layers and a linear head; the recipe
``organiser-baseline`` (search_spaces/recipes.py) sets exactly that. The
defaults below are lob-sweep's own starting point, not the baseline.

Glossary: B batch, T time, F features, H hidden, L layers, M head hidden (see layers.py).

Parameters (default config, 210,754 of them):
    in_proj            Linear F -> H            (absent when input_proj=False; then the GRU reads F)
    rnn                nn.GRU, L layers of width H (weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k})
    norm               none | layer | rms over H
    head               linear H -> 2, or mlp H -> M -> 2 (ReLU)

Step equations, x_t: (B, F), state h: (L, B, H):
    u_0 = x_t in_proj.weight^T + in_proj.bias                    (B, H)
    for k in 0..L-1:  h[k] = gru_cell(u_k, h[k]);  u_{k+1} = h[k]   (gru_cell in layers.py)
    y_t = head(norm(u_L))                                         (B, 2)
Dropout (training only) sits between GRU layers and before the head; it is the identity
in eval mode, so the equations above are the whole inference path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import RecurrentBody, check_common, gru_cell, rnn_layer_weights
from .registry import register_model


@dataclass
class GRUConfig:
    n_features: int = 32
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.0
    input_proj: bool = True  # Linear F -> H before the GRU (the organisers' baseline has none)
    norm: str = "none"
    head: str = "mlp"
    head_hidden: int = 64

    def __post_init__(self):
        check_common(self)


@register_model("gru")
class GRUModel(RecurrentBody):
    """Stacked GRU -> norm -> head; streaming state is the L hidden vectors."""

    Config = GRUConfig
    # the smallest config that still runs every code path (tests, smoke runs): tiny_hparams()
    TINY = dict(hidden=8, layers=2, norm="layer", head="mlp", head_hidden=6)
    rnn_class = nn.GRU

    def init_state(self, batch: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"h": zeros (L, B, H)}."""
        return {"h": self._zeros(batch, device, dtype)}

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]):
        """x_t: (B, F) -> (y_t (B, 2), new state); the input state is not modified."""
        u = self._embed(x_t)
        hs = []
        for k in range(self.config.layers):
            u = gru_cell(u, state["h"][k], *rnn_layer_weights(self.rnn, k))
            hs.append(u)
        return self.head(self.norm(u)), {"h": torch.stack(hs)}
