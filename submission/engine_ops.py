"""Stacked numpy building blocks of the fused engine: every op runs M members at once.

Vendored verbatim into the submission zip (package ``lsrt_engine``): numpy and
relative imports only.

Glossary: M members stacked in one group, I input width, O output width,
H hidden, nh heads, dh head width, W attention window.

A stacked linear layer holds ``w [M, O, I]`` (PyTorch's ``weight`` layout, one
slab per member) and ``b [M, O]`` or None; ``linear(p, x[M, I]) -> [M, O]`` is one
batched GEMV (``np.matmul`` loops over M inside C, no Python per member). All
arrays are float32: a streaming step reads every weight once, so its cost is
bounded by the bytes of weights per step, and float32 halves them against
float64 while keeping parity with the float32 batch forward to ~1e-6.
"""

from __future__ import annotations

import numpy as np

DTYPE = np.float32

# Each model family's streaming block, by the family's registered name (models/registry.py):
# ``@engine_block("gru")`` on the group class in engine_rnn.py or engine_blocks.py.
BLOCKS: dict[str, type] = {}


def engine_block(family: str):
    """Class decorator: the fused streaming step of model family ``family``."""
    def register(cls):
        if family in BLOCKS:
            raise ValueError(f"model family {family!r} has two engine blocks")
        BLOCKS[family] = cls
        return cls
    return register
_GELU_C = float(np.sqrt(2.0 / np.pi))


def stack(params: list[dict], key: str, dtype=DTYPE) -> np.ndarray:
    """``params[m][key]`` of every member stacked on a new leading axis M (contiguous)."""
    return np.ascontiguousarray(np.stack([np.asarray(p[key], dtype=np.float64) for p in params]), dtype=dtype)


def stacked_linear(params: list[dict], prefix: str, bias: bool = True) -> dict:
    """``{"w": [M, O, I], "b": [M, O] | None}`` from ``prefix.weight`` / ``prefix.bias``."""
    return {"w": stack(params, prefix + ".weight"),
            "b": stack(params, prefix + ".bias") if bias and prefix + ".bias" in params[0] else None}


def linear(p: dict, x: np.ndarray) -> np.ndarray:
    """x [M, I] -> [M, O] = w @ x (+ b), one GEMV per member in a single numpy call.

    x [I] is one input shared by every member: then the M slabs are read as one
    [M*O, I] matrix and the whole group is a single GEMV.
    """
    w = p["w"]
    if x.ndim == 1:
        y = (w.reshape(-1, w.shape[2]) @ x).reshape(w.shape[:2])
    else:
        y = np.matmul(w, x[:, :, None])[:, :, 0]
    if p["b"] is not None:
        y += p["b"]
    return y


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) as 0.5 + 0.5 tanh(x / 2): one transcendental, no overflow."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def silu(x: np.ndarray) -> np.ndarray:
    return x * sigmoid(x)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), finite for every finite x (torch's threshold 20 differs by < 3e-9)."""
    return np.logaddexp(np.zeros((), x.dtype), x)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), torch's approximate='tanh'."""
    return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + 0.044715 * x * x * x)))


def make_norm(kind: str, params: list[dict], prefix: str) -> dict:
    """Stacked norm parameters: kind "none" | "layer" (g, b [M, H]) | "rms" (g [M, H]).

    ``inv`` [H] holds 1/H: means over H are GEMVs ``x @ inv``, one C call each.
    """
    if kind == "none":
        return {"kind": "none"}
    out = {"kind": kind, "g": stack(params, prefix + ".weight")}
    out["inv"] = np.full(out["g"].shape[1], 1.0 / out["g"].shape[1], DTYPE)
    if kind == "layer":
        out["b"] = stack(params, prefix + ".bias")
    return out


def norm(p: dict, x: np.ndarray) -> np.ndarray:
    """x [M, H] -> normalised [M, H]; equations in models/layers.py (eps 1e-5 layer, 1e-6 rms)."""
    kind = p["kind"]
    if kind == "none":
        return x
    if kind == "layer":
        c = x - (x @ p["inv"])[:, None]
        return c * (1.0 / np.sqrt((c * c) @ p["inv"] + 1e-5))[:, None] * p["g"] + p["b"]
    return x * (1.0 / np.sqrt((x * x) @ p["inv"] + 1e-6))[:, None] * p["g"]


def make_head(kind: str, params: list[dict]) -> dict:
    """Output head: "linear" (out) or "mlp" (fc, ReLU, out)."""
    return {"fc": stacked_linear(params, "head.fc") if kind == "mlp" else None,
            "out": stacked_linear(params, "head.out")}


def head(p: dict, x: np.ndarray) -> np.ndarray:
    """x [M, H] -> y [M, 2]."""
    if p["fc"] is not None:
        x = np.maximum(linear(p["fc"], x), 0.0)
    return linear(p["out"], x)


class WindowAttention:
    """Causal attention over the last W positions, stacked over M members (models/layers.py).

    Parameters: qkv (w [M, 3D, D]), out (w [M, D, D]), rel_bias [M, nh, W]. The q rows of
    qkv are pre-multiplied by 1/sqrt(dh) (exact when dh is a power of 4), and the bias is
    pre-gathered per ring slot: ``bias[slot] = rel_bias[:, :, offsets[slot]]`` [W, M, nh, W].
    Cache: k, v [M, nh, W, dh]; step t writes ring slot t % W, and slot j holds
    offset (t - j) mod W, valid while that offset is <= t.
    """

    def __init__(self, params: list[dict], prefix: str, heads: int, window: int):
        self.qkv = stacked_linear(params, prefix + ".qkv")
        self.out = stacked_linear(params, prefix + ".out")
        self.M, self.D = self.out["w"].shape[:2]
        self.nh, self.W, self.dh = heads, window, self.D // heads
        scale = 1.0 / np.sqrt(self.dh)
        self.qkv["w"][:, :self.D] *= DTYPE(scale)
        self.qkv["b"][:, :self.D] *= DTYPE(scale)
        slots = np.arange(window)
        self.offsets = (slots[:, None] - slots[None, :]) % window  # [slot of t, j] -> offset of slot j
        rel_bias = stack(params, prefix + ".rel_bias")            # [M, nh, W]
        self.bias = np.ascontiguousarray(rel_bias[:, :, self.offsets].transpose(2, 0, 1, 3))
        self.k = np.zeros((self.M, heads, window, self.dh), DTYPE)
        self.v = np.zeros_like(self.k)

    def reset(self) -> None:
        self.k.fill(0.0)
        self.v.fill(0.0)

    def step(self, x: np.ndarray, pos: int) -> np.ndarray:
        """x [M, D] at sequence step ``pos`` -> attention output [M, D]; updates the ring."""
        M, nh, dh = self.M, self.nh, self.dh
        q, k, v = linear(self.qkv, x).reshape(M, 3, nh, dh).transpose(1, 0, 2, 3)
        slot = pos % self.W
        self.k[:, :, slot] = k
        self.v[:, :, slot] = v
        s = np.matmul(self.k, q[..., None])[..., 0]                # [M, nh, W]
        s += self.bias[slot]
        if pos < self.W - 1:
            s[:, :, self.offsets[slot] > pos] = -np.inf
        s -= np.maximum.reduce(s, axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= np.add.reduce(s, axis=-1, keepdims=True)
        a = np.matmul(s[:, :, None, :], self.v)[:, :, 0, :]        # [M, nh, dh]
        return linear(self.out, a.reshape(M, self.D))

    def weight_bytes(self) -> int:
        return self.qkv["w"].nbytes + self.out["w"].nbytes + self.bias[0].nbytes
