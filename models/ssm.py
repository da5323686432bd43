"""Mamba-like selective state-space model in pure torch (no CUDA kernels).

The recurrence is Mamba-2's: a scalar decay per head, input-dependent step size dt, input
and output maps B, C, a short causal depthwise conv and a SiLU gate. A scalar decay per
head lets training run as chunked matrix products (``chunked_scan``), several times faster
on CPU than a per-channel decay, and exact against the step equations.

Glossary: B batch, T time, F features, D = hidden model width, L layers, M head hidden
(layers.py); E = expand * D inner width, nh = heads, P = E / nh per head, N = d_state,
K = d_conv, S scan chunk (SCAN_CHUNK).

Parameters (default config, 127,394 of them):
    in_proj                           Linear F -> D
    blocks.{l}.norm                   none | layer | rms over D
    blocks.{l}.mixer.in_proj          Linear D -> E + (E + 2N) + nh, no bias  (z | x B C | dt)
    blocks.{l}.mixer.conv             depthwise Conv1d over the E + 2N channels x B C,
                                      weight (E+2N, 1, K), bias (E+2N,)
    blocks.{l}.mixer.dt_bias, .A_log, .D   (nh,) each
    blocks.{l}.mixer.out_proj         Linear E -> D, no bias
    norm_f, head                      as in layers.py

Step equations of one mixer, u: (B, D); state h (B, nh, P, N), conv (B, E+2N, K-1):
    z, xbc, dt = split(u in_proj.weight^T)                          (B, E), (B, E+2N), (B, nh)
    w = [conv, xbc] (B, E+2N, K);  conv' = w[:, :, 1:]
    x, Bt, Ct = split(silu(sum_k w[:, :, k] * conv.weight[:, 0, k] + conv.bias))
                                                                    (B, nh, P), (B, N), (B, N)
    dt = softplus(dt + dt_bias);  A = -exp(A_log)                   (B, nh), (nh,)
    h' = exp(dt A)[:, :, None, None] * h + (dt[..., None] * x)[..., None] * Bt[:, None, None, :]
    y = h' Ct + D[:, None] * x                                      (B, nh, P)
    out = (flatten(y) * silu(z)) out_proj.weight^T                  (B, D)
Model step: u = in_proj(x_t); per layer u = u + mixer(norm(u)); y_t = head(norm_f(u)).
State: h (L, B, nh, P, N), conv (L, B, E+2N, K-1), all zeros at the start of a sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lobsweep.errors import UserError

from .layers import Head, check_common, make_norm, param_like
from .registry import register_model, require_positive

SCAN_CHUNK = 32  # S: per-chunk work is O(S^2), the sequential carry is T / S steps


@dataclass
class SSMConfig:
    n_features: int = 32
    hidden: int = 64
    layers: int = 4
    dropout: float = 0.0
    d_state: int = 32
    expand: int = 2
    d_conv: int = 4
    heads: int = 8  # SSM heads, each with its own decay and step size
    norm: str = "rms"
    head: str = "mlp"
    head_hidden: int = 64

    def __post_init__(self):
        check_common(self)
        require_positive(self, "d_state", "expand", "d_conv", "heads")
        if (self.expand * self.hidden) % self.heads:
            raise UserError(f"expand * hidden ({self.expand * self.hidden}) must be divisible by heads ({self.heads})")


def segsum(la: torch.Tensor) -> torch.Tensor:
    """la: (.., S) -> (.., S, S) with [t, s] = sum_{s < r <= t} la_r, and -inf for s > t.

    Summing the masked entries directly (not cumsum_t - cumsum_s) keeps every pair exact
    even when the cumulative sums are large.
    """
    S = la.shape[-1]
    rows = la[..., :, None].expand(*la.shape, S)  # [r, s] = la_r
    tril = torch.ones(S, S, dtype=torch.bool, device=la.device).tril
    seg = rows.masked_fill(~tril(-1), 0.0).cumsum(-2)
    return seg.masked_fill(~tril(0), float("-inf"))


def chunked_scan(x, dt, A, Bm, Cm, chunk: int = SCAN_CHUNK) -> torch.Tensor:
    """The scalar-decay selective scan of the step equations over all T, from h = 0.

    x: (B, T, nh, P), dt: (B, T, nh), A: (nh,), Bm, Cm: (B, T, N) -> y: (B, T, nh, P),
    without the D skip. Inside chunks of S steps: y = (C B^T * exp(segsum(dt A))) (dt x);
    across chunks: each chunk's end state is carried (T/S small steps) and read by C.
    """
    B, T = dt.shape[:2]
    S = min(chunk, T)
    n = -(-T // S)
    pad = n * S - T
    xdt = F.pad(x * dt[..., None], (0, 0, 0, 0, 0, pad)).unflatten(1, (n, S)).permute(0, 1, 3, 2, 4)  # (B,n,nh,S,P)
    la = F.pad(dt * A, (0, 0, 0, pad)).unflatten(1, (n, S)).transpose(2, 3)  # (B, n, nh, S), <= 0
    Bm, Cm = (F.pad(t, (0, 0, 0, pad)).unflatten(1, (n, S)) for t in (Bm, Cm))  # (B, n, S, N)
    decay = segsum(la).exp()  # (B, n, nh, S, S): decay from step s to step t
    y = ((Cm @ Bm.transpose(-1, -2))[:, :, None] * decay) @ xdt  # (B, n, nh, S, P)
    states = (xdt * decay[..., -1, :, None]).transpose(-1, -2) @ Bm[:, :, None]  # (B, n, nh, P, N)
    starts, h = [], torch.zeros_like(states[:, 0])
    for g_c, s_c in zip(la.sum(-1).exp().unbind(1), states.unbind(1)):
        starts.append(h)
        h = g_c[..., None, None] * h + s_c
    y_in = (torch.stack(starts, 1) @ Cm[:, :, None].transpose(-1, -2)).transpose(-1, -2)  # (B, n, nh, S, P)
    y = y + la.cumsum(-1).exp()[..., None] * y_in
    return y.permute(0, 1, 3, 2, 4).flatten(1, 2)[:, :T]


class Mixer(nn.Module):
    """Selective SSM mixer (B, T, D) -> (B, T, D): conv, input-dependent (dt, B, C), gate."""

    def __init__(self, c: SSMConfig):
        super().__init__()
        D, E, N, K, nh = c.hidden, c.expand * c.hidden, c.d_state, c.d_conv, c.heads
        self.E, self.N, self.K, self.nh, self.P = E, N, K, nh, E // nh
        self.in_proj = nn.Linear(D, 2 * E + 2 * N + nh, bias=False)
        self.conv = nn.Conv1d(E + 2 * N, E + 2 * N, K, groups=E + 2 * N)
        self.dt_bias = nn.Parameter(self._dt_bias_init(nh))
        self.A_log = nn.Parameter(torch.log(torch.empty(nh).uniform_(1.0, 16.0)))
        self.D = nn.Parameter(torch.ones(nh))
        self.out_proj = nn.Linear(E, D, bias=False)

    @staticmethod
    def _dt_bias_init(nh: int, dt_min: float = 1e-3, dt_max: float = 1e-1) -> torch.Tensor:
        """Inverse softplus of step sizes log-uniform in [dt_min, dt_max] (Mamba's init)."""
        dt = torch.exp(torch.rand(nh) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        return dt + torch.log(-torch.expm1(-dt))

    def _gates(self, xbc: torch.Tensor, dt: torch.Tensor):
        """Conv output (.., E+2N) and raw dt (.., nh) -> x (.., nh, P), dt, Bm, Cm."""
        x, Bm, Cm = F.silu(xbc).split([self.E, self.N, self.N], -1)
        return x.unflatten(-1, (self.nh, self.P)), F.softplus(dt + self.dt_bias), Bm, Cm

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B, T, D) -> (B, T, D)."""
        z, xbc, dt = self.in_proj(u).split([self.E, self.E + 2 * self.N, self.nh], -1)
        xbc = self.conv(F.pad(xbc.transpose(1, 2), (self.K - 1, 0))).transpose(1, 2)  # (B, T, E+2N)
        x, dt, Bm, Cm = self._gates(xbc, dt)
        y = chunked_scan(x, dt, -self.A_log.exp(), Bm, Cm) + self.D[:, None] * x  # (B, T, nh, P)
        return self.out_proj(y.flatten(-2) * F.silu(z))

    def step(self, u, h, conv):
        """u: (B, D), h: (B, nh, P, N), conv: (B, E+2N, K-1) -> (out (B, D), h', conv')."""
        z, xbc, dt = self.in_proj(u).split([self.E, self.E + 2 * self.N, self.nh], -1)
        w = torch.cat([conv, xbc[:, :, None]], -1)  # (B, E+2N, K)
        x, dt, Bm, Cm = self._gates((w * self.conv.weight[:, 0]).sum(-1) + self.conv.bias, dt)
        decay = torch.exp(dt * -self.A_log.exp())[..., None, None]  # (B, nh, 1, 1)
        h = decay * h + (dt[..., None] * x)[..., None] * Bm[:, None, None, :]
        y = (h @ Cm[:, None, :, None])[..., 0] + self.D[:, None] * x  # (B, nh, P)
        return self.out_proj(y.flatten(-2) * F.silu(z)), h, w[:, :, 1:]


class Block(nn.Module):
    """Pre-norm residual mixer block."""

    def __init__(self, c: SSMConfig):
        super().__init__()
        self.norm = make_norm(c.norm, c.hidden)
        self.mixer = Mixer(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.drop(self.mixer(self.norm(u)))


@register_model("ssm")
class SSMModel(nn.Module):
    """in_proj -> L selective-SSM blocks -> norm_f -> head."""

    Config = SSMConfig
    # the smallest config that still runs every code path (tests, smoke runs): tiny_hparams()
    TINY = dict(hidden=8, layers=2, expand=2, heads=2, d_state=4, d_conv=3, norm="rms", head_hidden=6)

    def __init__(self, config: SSMConfig):
        super().__init__()
        c = self.config = config
        self.in_proj = nn.Linear(c.n_features, c.hidden)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm_f = make_norm(c.norm, c.hidden)
        self.head = Head(c.hidden, c.head, c.head_hidden, c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F) -> y: (B, T, 2)."""
        u = self.in_proj(x)
        for block in self.blocks:
            u = block(u)
        return self.head(self.norm_f(u))

    def init_state(self, batch: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"h": zeros (L, B, nh, P, N), "conv": zeros (L, B, E+2N, K-1)}."""
        device, dtype = param_like(self, device, dtype)
        c = self.config
        E = c.expand * c.hidden
        return {
            "h": torch.zeros(c.layers, batch, c.heads, E // c.heads, c.d_state, device=device, dtype=dtype),
            "conv": torch.zeros(c.layers, batch, E + 2 * c.d_state, c.d_conv - 1, device=device, dtype=dtype),
        }

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]):
        """x_t: (B, F) -> (y_t (B, 2), new state); the input state is not modified."""
        u = self.in_proj(x_t)
        hs, convs = [], []
        for l, block in enumerate(self.blocks):
            a, h, conv = block.mixer.step(block.norm(u), state["h"][l], state["conv"][l])
            u = u + a
            hs.append(h)
            convs.append(conv)
        y = self.head(self.norm_f(u))
        return y, {"h": torch.stack(hs), "conv": torch.stack(convs)}
