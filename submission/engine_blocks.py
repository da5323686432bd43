"""Fused streaming steps of the residual-block families: transformer and ssm.

Vendored into the submission zip (package ``lsrt_engine``): numpy and relative
imports only. Each group runs M members of one family and one config stacked
(glossary and layout in engine_ops.py; E inner width, N state size, K conv
width); the step equations are those of models/transformer.py and models/ssm.py,
written over a leading member axis.
"""

from __future__ import annotations

import numpy as np

from .engine_ops import (DTYPE, WindowAttention, engine_block, gelu_tanh, head, linear, make_head, make_norm,
                         norm, silu, softplus, stack, stacked_linear)


class _Blocks:
    """in_proj -> L residual blocks -> norm_f -> head; subclasses define the blocks."""

    def __init__(self, config: dict, params: list[dict]):
        self.L, self.M = int(config["layers"]), len(params)
        self.inp = stacked_linear(params, "in_proj")
        self.norm_f = make_norm(config["norm"], params, "norm_f")
        self.head = make_head(config["head"], params)

    def _blocks(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def step(self, x: np.ndarray, need: bool) -> np.ndarray | None:
        u = self._blocks(linear(self.inp, x))
        return head(self.head, norm(self.norm_f, u)) if need else None

    def _linears(self) -> list[dict]:
        return [self.inp] + [p for p in (self.head["fc"], self.head["out"]) if p is not None]

    def weight_bytes(self) -> int:
        """Bytes of weights one step reads (the step's memory-traffic floor)."""
        return int(sum(p["w"].nbytes for p in self._linears()))


@engine_block("transformer")
class TransformerGroup(_Blocks):
    """Pre-norm window-attention blocks; state: per layer k, v rings [M, nh, W, dh], shared pos."""

    def __init__(self, config: dict, params: list[dict]):
        super().__init__(config, params)
        heads, window = int(config["heads"]), int(config["window"])
        self.layers = []
        for l in range(self.L):
            b = f"blocks.{l}"
            self.layers.append({
                "norm1": make_norm(config["norm"], params, b + ".norm1"),
                "attn": WindowAttention(params, b + ".attn", heads, window),
                "norm2": make_norm(config["norm"], params, b + ".norm2"),
                "fc": stacked_linear(params, b + ".mlp.fc"),
                "proj": stacked_linear(params, b + ".mlp.proj"),
            })
        self.pos = 0

    def reset(self) -> None:
        for layer in self.layers:
            layer["attn"].reset()
        self.pos = 0

    def _blocks(self, u: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            u = u + layer["attn"].step(norm(layer["norm1"], u), self.pos)
            u = u + linear(layer["proj"], gelu_tanh(linear(layer["fc"], norm(layer["norm2"], u))))
        self.pos += 1
        return u

    def _linears(self) -> list[dict]:
        out = super()._linears()
        for layer in self.layers:
            out += [layer["fc"], layer["proj"]]
        return out

    def weight_bytes(self) -> int:
        return super().weight_bytes() + sum(layer["attn"].weight_bytes() for layer in self.layers)


@engine_block("ssm")
class SSMGroup(_Blocks):
    """Mamba-2-style mixer blocks (models/ssm.py): scalar decay per SSM head.

    Extra glossary: nh SSM heads, P = E / nh, C_in = E + 2N conv channels.
    State per layer: h [M, nh, P, N], conv [M, C_in, K-1].
    """

    def __init__(self, config: dict, params: list[dict]):
        super().__init__(config, params)
        D = int(config["hidden"])
        self.E, self.N, self.K = int(config["expand"]) * D, int(config["d_state"]), int(config["d_conv"])
        self.nh = int(config["heads"])
        self.P = self.E // self.nh
        self.layers = []
        for l in range(self.L):
            b = f"blocks.{l}"
            mx = b + ".mixer"
            self.layers.append({
                "norm": make_norm(config["norm"], params, b + ".norm"),
                "in_proj": stacked_linear(params, mx + ".in_proj", bias=False),    # D -> E + (E + 2N) + nh
                "conv_w": stack(params, mx + ".conv.weight")[:, :, 0, :].copy(),  # [M, C_in, K]
                "conv_b": stack(params, mx + ".conv.bias"),                       # [M, C_in]
                "dt_bias": stack(params, mx + ".dt_bias"),                        # [M, nh]
                "A": (-np.exp(stack(params, mx + ".A_log", np.float64))).astype(DTYPE),  # [M, nh]
                "D": stack(params, mx + ".D")[:, :, None],                        # [M, nh, 1]
                "out_proj": stacked_linear(params, mx + ".out_proj", bias=False),
            })
        self.h = np.zeros((self.L, self.M, self.nh, self.P, self.N), DTYPE)
        self.conv = np.zeros((self.L, self.M, self.E + 2 * self.N, self.K - 1), DTYPE)

    def reset(self) -> None:
        self.h.fill(0.0)
        self.conv.fill(0.0)

    def _mixer(self, l: int, u: np.ndarray) -> np.ndarray:
        """u [M, D] -> mixer output [M, D]; updates h[l] and conv[l]."""
        p, E, N, M = self.layers[l], self.E, self.N, self.M
        zxd = linear(p["in_proj"], u)
        z, xbc, dt = zxd[:, :E], zxd[:, E:2 * E + 2 * N], zxd[:, 2 * E + 2 * N:]
        w = np.concatenate([self.conv[l], xbc[:, :, None]], axis=2)        # [M, C_in, K]
        self.conv[l] = w[:, :, 1:]
        s = silu(np.add.reduce(w * p["conv_w"], axis=2) + p["conv_b"])
        x, Bm, Cm = s[:, :E].reshape(M, self.nh, self.P), s[:, E:E + N], s[:, E + N:]
        dt = softplus(dt + p["dt_bias"])                                   # [M, nh]
        h = self.h[l]
        h *= np.exp(dt * p["A"])[:, :, None, None]
        h += (dt[:, :, None] * x)[..., None] * Bm[:, None, None, :]
        y = np.matmul(h, Cm[:, None, :, None])[..., 0] + p["D"] * x       # [M, nh, P]
        return linear(p["out_proj"], y.reshape(M, E) * silu(z))

    def _blocks(self, u: np.ndarray) -> np.ndarray:
        for l, layer in enumerate(self.layers):
            u = u + self._mixer(l, norm(layer["norm"], u))
        return u

    def _linears(self) -> list[dict]:
        out = super()._linears()
        for p in self.layers:
            out += [p["in_proj"], p["out_proj"]]
        return out
