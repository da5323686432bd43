"""Blocks shared by the model families: norms, output heads, config checks, recurrent cells.

Glossary (also used by every family file):
    B  batch (sequences stepped together)      T  time steps (1000 per sequence)
    F  input features (``n_features``)         H  hidden width (``hidden``)
    L  stacked layers (``layers``)             M  head hidden width (``head_hidden``)

Norms (``norm`` field), applied over the last dim with weight g (and bias b for layer):
    none:  y = x
    layer: y = (x - mean(x)) / sqrt(var(x) + 1e-5) * g + b        (biased variance)
    rms:   y = x / sqrt(mean(x^2) + 1e-6) * g
Heads (``head`` field), x: (B, H) or (B, T, H) -> (.., 2):
    linear: y = x @ out.weight.T + out.bias
    mlp:    y = relu(x @ fc.weight.T + fc.bias) @ out.weight.T + out.bias
Recurrent cells use PyTorch's nn.GRU / nn.LSTM weight layout (gate rows stacked in
``weight_ih_l{k}``: GRU [r; z; n], LSTM [i; f; g; o]); equations at ``gru_cell``/``lstm_cell``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import require_choice, require_positive, require_range

NORMS = ("none", "layer", "rms")
HEADS = ("linear", "mlp")


def check_common(config) -> None:
    """Checks every family shares: widths > 0, dropout in [0, 1), norm/head choices."""
    require_positive(config, "n_features", "hidden", "layers", "head_hidden")
    require_range(config, "dropout", 0.0, 1.0)
    require_choice(config, "norm", NORMS)
    require_choice(config, "head", HEADS)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, over the last dim."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(kind: str, dim: int) -> nn.Module:
    """Norm module for the ``norm`` config field."""
    if kind == "layer":
        return nn.LayerNorm(dim, eps=1e-5)
    if kind == "rms":
        return RMSNorm(dim)
    return nn.Identity()


class Head(nn.Module):
    """Per-step output head (.., H) -> (.., 2): linear, or one ReLU hidden layer of width M."""

    def __init__(self, dim: int, kind: str, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(dim, hidden) if kind == "mlp" else None
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden if kind == "mlp" else dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc is not None:
            x = self.drop(F.relu(self.fc(x)))
        return self.out(x)


def param_like(module: nn.Module, device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """Device and dtype for new state tensors: the arguments, else those of the parameters."""
    p = next(module.parameters())
    return (p.device if device is None else torch.device(device)), (p.dtype if dtype is None else dtype)


def rnn_layer_weights(rnn: nn.RNNBase, k: int) -> tuple[torch.Tensor, ...]:
    """(weight_ih, weight_hh, bias_ih, bias_hh) of layer ``k`` of an nn.GRU / nn.LSTM."""
    return tuple(getattr(rnn, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """One GRU step, x: (B, I), h: (B, H) -> h' (B, H); identical to nn.GRU.

    gi = x W_ih^T + b_ih,  gh = h W_hh^T + b_hh,  each split into [r, z, n] blocks of H
    r = sigmoid(gi_r + gh_r);  z = sigmoid(gi_z + gh_z);  n = tanh(gi_n + r * gh_n)
    h' = (1 - z) * n + z * h
    """
    gi_r, gi_z, gi_n = F.linear(x, w_ih, b_ih).chunk(3, -1)
    gh_r, gh_z, gh_n = F.linear(h, w_hh, b_hh).chunk(3, -1)
    r = torch.sigmoid(gi_r + gh_r)
    z = torch.sigmoid(gi_z + gh_z)
    n = torch.tanh(gi_n + r * gh_n)
    return (1 - z) * n + z * h


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One LSTM step, x: (B, I), h, c: (B, H) -> (h', c'); identical to nn.LSTM.

    g = x W_ih^T + b_ih + h W_hh^T + b_hh, split into [i, f, g, o] blocks of H
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')
    """
    gi, gf, gg, go = (F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, -1)
    c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
    return torch.sigmoid(go) * torch.tanh(c), c


class RecurrentBody(nn.Module):
    """Shared body of the gru and lstm families: [in_proj] -> stacked RNN -> dropout -> norm -> head.

    Subclasses set ``rnn_class`` (nn.GRU or nn.LSTM) and write ``init_state`` and
    ``step`` with their own cell. Parameter names (in_proj, rnn, norm, head) are
    what the packaged engine reads.
    """

    rnn_class: type[nn.RNNBase] = nn.GRU

    def __init__(self, config):
        super().__init__()
        c = self.config = config
        self.in_proj = nn.Linear(c.n_features, c.hidden) if c.input_proj else None
        self.rnn = self.rnn_class(c.hidden if c.input_proj else c.n_features, c.hidden, c.layers,
                                  batch_first=True, dropout=c.dropout if c.layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.norm = make_norm(c.norm, c.hidden)
        self.head = Head(c.hidden, c.head, c.head_hidden, c.dropout)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.in_proj(x) if self.in_proj is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F) -> y: (B, T, 2)."""
        out, _ = self.rnn(self._embed(x))  # (B, T, H)
        return self.head(self.norm(self.drop(out)))

    def _zeros(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        device, dtype = param_like(self, device, dtype)
        return torch.zeros(self.config.layers, batch, self.config.hidden, device=device, dtype=dtype)


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi slopes 2^(-8 (i+1) / heads), i = 0..heads-1: the initial per-head distance penalty."""
    return torch.pow(2.0, -8.0 * torch.arange(1, heads + 1) / heads)


class WindowAttention(nn.Module):
    """Causal multi-head attention over the last W positions (the current one included).

    Extra glossary: D model width, nh heads, dh = D / nh, W window, o = t - s offset in [0, W).
    Position enters only through ``rel_bias[nh, W]``, a learned bias per head and offset
    (initialised to ALiBi, -slope * o), so batch and streaming modes see identical scores.

    For query step t with x_t: (B, D):
        q, k, v = split(x_t qkv.weight^T + qkv.bias) -> each (B, nh, dh)
        score_s = q . k_s / sqrt(dh) + rel_bias[:, t - s]     for s in [max(0, t-W+1), t]
        a_t = softmax_s(score) . v_s   -> (B, D) (heads concatenated)
        out_t = a_t out.weight^T + out.bias
    Streaming keeps k, v in a ring of W slots: step t writes slot t % W; slot j then holds
    offset o_j = (t - j) mod W and is valid when o_j <= t.
    """

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window, self.dh = heads, window, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        offsets = torch.arange(window, dtype=torch.float32)
        self.rel_bias = nn.Parameter(-alibi_slopes(heads)[:, None] * offsets[None, :])

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # (.., D) -> 3 x (.., nh, dh)
        return tuple(t.unflatten(-1, (self.heads, self.dh)) for t in self.qkv(x).chunk(3, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D). Blocks of C = W queries each see their 2W-long key span."""
        B, T, D = x.shape
        W = C = self.window
        n = -(-T // C)
        q, k, v = (t.transpose(1, 2) for t in self._split(x))  # (B, nh, T, dh)
        q = F.pad(q, (0, 0, 0, n * C - T)).unflatten(2, (n, C))  # (B, nh, n, C, dh)
        k, v = (F.pad(t, (0, 0, W, n * C - T)).unfold(2, C + W, C) for t in (k, v))  # (B, nh, n, dh, C+W)
        scores = torch.einsum("bhncd,bhndk->bhnck", q, k) / self.dh**0.5
        i = torch.arange(C, device=x.device)[:, None]
        j = torch.arange(C + W, device=x.device)[None, :]
        offset = i + W - j  # (C, C+W): query i of a block vs key j of its span
        key_pos = torch.arange(n, device=x.device)[:, None] * C - W + j  # (n, C+W)
        valid = ((offset >= 0) & (offset < W))[None] & (key_pos >= 0)[:, None, :]  # (n, C, C+W)
        bias = self.rel_bias[:, offset.clamp(0, W - 1)]  # (nh, C, C+W)
        scores = (scores + bias[None, :, None]).masked_fill(~valid, float("-inf"))
        att = torch.einsum("bhnck,bhndk->bhncd", scores.softmax(-1), v)  # (B, nh, n, C, dh)
        att = att.flatten(2, 3)[:, :, :T].transpose(1, 2).reshape(B, T, D)
        return self.out(att)

    def init_cache(self, batch: int, device, dtype) -> torch.Tensor:
        """Zeroed k (or v) ring: (B, nh, W, dh)."""
        return torch.zeros(batch, self.heads, self.window, self.dh, device=device, dtype=dtype)

    def step(self, x_t, k_cache, v_cache, pos):
        """x_t: (B, D), caches (B, nh, W, dh), pos: (B,) int64 index of this step -> (out, k, v)."""
        q, k, v = self._split(x_t)  # (B, nh, dh)
        slots = torch.arange(self.window, device=x_t.device)
        write = (slots[None, :] == (pos % self.window)[:, None])[:, None, :, None]  # (B, 1, W, 1)
        k_cache = torch.where(write, k[:, :, None], k_cache)
        v_cache = torch.where(write, v[:, :, None], v_cache)
        offset = (pos[:, None] - slots[None, :]) % self.window  # (B, W)
        scores = torch.einsum("bhd,bhwd->bhw", q, k_cache) / self.dh**0.5
        scores = scores + self.rel_bias[:, offset].transpose(0, 1)  # (B, nh, W)
        scores = scores.masked_fill(~(offset <= pos[:, None])[:, None], float("-inf"))
        att = torch.einsum("bhw,bhwd->bhd", scores.softmax(-1), v_cache).flatten(1)
        return self.out(att), k_cache, v_cache
