"""Fused streaming steps of the recurrent families: gru, lstm, gru_attention.

Vendored into the submission zip (package ``lsrt_engine``): numpy and relative
imports only. Each group runs M members of one family and one config stacked
(glossary and layout in engine_ops.py); the step equations are those of the
family's docstring in models/, with two exact rewrites:

- ``in_proj`` is folded into the first layer's input weights (in float64):
  W_ih0 (W_in x + b_in) + b_ih0 = (W_ih0 W_in) x + (W_ih0 b_in + b_ih0),
  a [G*H, F] matrix instead of [H, F] then [G*H, H] (G = 3 gates for a GRU, 4 for
  an LSTM), which removes a quarter of the first layer's weight bytes.
- GRU: h' = (1 - z) n + z h is computed as n + z (h - n).

The input ``x`` is [F] when every member of the group reads the same feature
pipeline (one GEMV over all members' stacked first-layer rows) or [M, F].
"""

from __future__ import annotations

import numpy as np

from .engine_ops import DTYPE, WindowAttention, engine_block, head, linear, make_head, make_norm, norm, sigmoid, stack


def _first_layer(params: list[dict], input_proj: bool) -> dict:
    """Input weights of layer 0 as a stacked linear [M, G*H, F], in_proj folded in."""
    w_ih = np.stack([np.asarray(p["rnn.weight_ih_l0"], np.float64) for p in params])
    b_ih = np.stack([np.asarray(p["rnn.bias_ih_l0"], np.float64) for p in params])
    if input_proj:
        w_in = np.stack([np.asarray(p["in_proj.weight"], np.float64) for p in params])  # [M, H, F]
        b_in = np.stack([np.asarray(p["in_proj.bias"], np.float64) for p in params])    # [M, H]
        b_ih = b_ih + np.matmul(w_ih, b_in[:, :, None])[:, :, 0]
        w_ih = np.matmul(w_ih, w_in)
    return {"w": np.ascontiguousarray(w_ih, dtype=DTYPE), "b": np.ascontiguousarray(b_ih, dtype=DTYPE)}


class _Recurrent:
    """Shared parts of the GRU / LSTM stacks: per-layer weights, state, norm and head."""

    def __init__(self, config: dict, params: list[dict]):
        self.L, self.H, self.M = int(config["layers"]), int(config["hidden"]), len(params)
        self.inp = _first_layer(params, bool(config.get("input_proj", True)))
        self.w_ih = [None] + [{"w": stack(params, f"rnn.weight_ih_l{k}"), "b": stack(params, f"rnn.bias_ih_l{k}")}
                              for k in range(1, self.L)]
        self.w_hh = [{"w": stack(params, f"rnn.weight_hh_l{k}"), "b": stack(params, f"rnn.bias_hh_l{k}")}
                     for k in range(self.L)]
        self.norm = make_norm(config["norm"], params, "norm")
        self.head = make_head(config["head"], params)
        self.h = np.zeros((self.L, self.M, self.H), DTYPE)

    def reset(self) -> None:
        self.h.fill(0.0)

    def _layer_inputs(self, k: int, x: np.ndarray) -> np.ndarray:
        return linear(self.inp, x) if k == 0 else linear(self.w_ih[k], self.h[k - 1])

    def weight_bytes(self) -> int:
        """Bytes of weights one step reads (the step's memory-traffic floor)."""
        arrays = [self.inp["w"]] + [p["w"] for p in self.w_ih[1:] + self.w_hh]
        arrays += [p["w"] for p in (self.head["fc"], self.head["out"]) if p is not None]
        return int(sum(a.nbytes for a in arrays))


@engine_block("gru")
class GRUGroup(_Recurrent):
    """models/gru.py: stacked GRU layers -> norm -> head. State h [L, M, H]."""

    def _gru(self, x: np.ndarray) -> np.ndarray:
        H = self.H
        for k in range(self.L):
            gi = self._layer_inputs(k, x)
            gh = linear(self.w_hh[k], self.h[k])
            rz = sigmoid(gi[:, :2 * H] + gh[:, :2 * H])
            n = np.tanh(gi[:, 2 * H:] + rz[:, :H] * gh[:, 2 * H:])
            self.h[k] = n + rz[:, H:] * (self.h[k] - n)
        return self.h[-1]

    def step(self, x: np.ndarray, need: bool) -> np.ndarray | None:
        top = self._gru(x)
        return head(self.head, norm(self.norm, top)) if need else None


@engine_block("lstm")
class LSTMGroup(_Recurrent):
    """models/lstm.py: stacked LSTM layers -> norm -> head. State h, c [L, M, H]."""

    def __init__(self, config: dict, params: list[dict]):
        super().__init__(config, params)
        self.c = np.zeros_like(self.h)

    def reset(self) -> None:
        super().reset()
        self.c.fill(0.0)

    def step(self, x: np.ndarray, need: bool) -> np.ndarray | None:
        H = self.H
        for k in range(self.L):
            g = self._layer_inputs(k, x)
            g += linear(self.w_hh[k], self.h[k])
            s = sigmoid(g)                                   # i, f, (unused), o
            self.c[k] = s[:, H:2 * H] * self.c[k] + s[:, :H] * np.tanh(g[:, 2 * H:3 * H])
            self.h[k] = s[:, 3 * H:] * np.tanh(self.c[k])
        return head(self.head, norm(self.norm, self.h[-1])) if need else None


@engine_block("gru_attention")
class GRUAttentionGroup(GRUGroup):
    """models/gru_attention.py: GRU top state g; y = head(norm(g + attn(attn_norm(g))))."""

    def __init__(self, config: dict, params: list[dict]):
        super().__init__(config, params)
        self.attn_norm = make_norm(config["norm"], params, "attn_norm")
        self.attn = WindowAttention(params, "attn", int(config["heads"]), int(config["window"]))
        self.pos = 0

    def reset(self) -> None:
        super().reset()
        self.attn.reset()
        self.pos = 0

    def step(self, x: np.ndarray, need: bool) -> np.ndarray | None:
        g = self._gru(x)
        a = self.attn.step(norm(self.attn_norm, g), self.pos)
        self.pos += 1
        return head(self.head, norm(self.norm, g + a)) if need else None

    def weight_bytes(self) -> int:
        return super().weight_bytes() + self.attn.weight_bytes()
