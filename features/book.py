"""Order-book shape features computed from one snapshot (stateless, lookback 0).

Inputs are the raw columns p0..p5 (bid prices, best first), p6..p11 (ask
prices), v0..v11 (volumes at the same levels). L = ``levels`` (1..6) levels are
used. Outputs, in order (L' = L - 1):

    mid                 (p0 + p6) / 2
    spread0..spread{L'} ask_i - bid_i per level
    microprice          volume-weighted touch price, mid + spread0/2 * imb0
    imb0..imb{L'}       (bid_v - ask_v) / (|bid_v| + |ask_v| + eps) per level
    cimb1..cimb{L'}     the same over cumulative volume of levels 0..k
    log_bid_depth, log_ask_depth   slog of total volume over L levels
    lv0..lv{L'}, lv6..lv{6+L'}     slog of each volume (if log_volumes)

Volumes may be 0 (or negative if the organisers' normalisation centred them):
every ratio uses absolute values plus EPS in the denominator, and logs are the
signed ``slog``, so outputs are finite for any finite input.
"""

from __future__ import annotations

import numpy as np

from .base import EPS, N_LEVELS, FeatureBuilder, FeatureSpecError, register_builder, resolve, slog


@register_builder("book")
class BookFeatures(FeatureBuilder):
    param_names = ("levels", "log_volumes")

    def __init__(self, levels: int = N_LEVELS, log_volumes: bool = True):
        self.levels = levels
        self.log_volumes = log_volumes

    def validate_params(self) -> None:
        if not isinstance(self.levels, int) or not 1 <= self.levels <= N_LEVELS:
            raise FeatureSpecError(f"book: levels must be an integer in 1..{N_LEVELS}, got {self.levels!r}")

    def _bind(self, names: list[str]) -> list[str]:
        n = self.levels
        lv = range(n)
        cols = [f"p{i}" for i in lv] + [f"p{N_LEVELS + i}" for i in lv]
        cols += [f"v{i}" for i in lv] + [f"v{N_LEVELS + i}" for i in lv]
        self.input_idx_ = np.asarray(resolve(names, cols, "book"), dtype=np.intp)   # [4L]
        self.linear_, self.denominator_ = _linear_maps(n)
        out = ["mid"] + [f"spread{i}" for i in lv] + ["microprice"]
        out += [f"imb{i}" for i in lv] + [f"cimb{i}" for i in range(1, n)]
        out += ["log_bid_depth", "log_ask_depth"]
        if self.log_volumes:
            out += [f"lv{i}" for i in lv] + [f"lv{N_LEVELS + i}" for i in lv]
        return out

    def _compute(self, x: np.ndarray) -> np.ndarray:
        """x[..., F_in] -> [..., F_out]; the same code serves a batch and one row."""
        n = self.levels
        g = x[..., self.input_idx_]                        # [..., 4L] bid p, ask p, bid v, ask v
        lin = g @ self.linear_                             # [..., 1 + L + 2L-1 + 2]
        vol = g[..., 2 * n:]                               # [..., 2L]
        ratio = lin[..., n + 1:3 * n] / (np.abs(vol) @ self.denominator_ + EPS)   # imb, cimb
        micro = lin[..., :1] + 0.5 * lin[..., 1:2] * ratio[..., :1]
        logs = np.concatenate([lin[..., 3 * n:], vol], axis=-1) if self.log_volumes else lin[..., 3 * n:]
        return np.concatenate([lin[..., :n + 1], micro, ratio, slog(logs)], axis=-1)


def _linear_maps(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrices giving the linear outputs from the gathered row g[4L] and |volumes|[2L].

    linear [4L, 3L+2]: mid, spread per level, imbalance numerators (bid - ask) per
    level then cumulative over levels 0..k (k >= 1), total bid and ask volume.
    denominator [2L, 2L-1]: the matching |bid| + |ask| sums.
    """
    bp, ap, bv, av = (np.arange(n) + k * n for k in range(4))
    lin = np.zeros((4 * n, 3 * n + 2))
    lin[bp[0], 0] = lin[ap[0], 0] = 0.5
    lin[ap, 1 + np.arange(n)] = 1.0
    lin[bp, 1 + np.arange(n)] = -1.0
    cum = np.triu(np.ones((n, n)))[:, 1:]                  # level i counts in cimb k for i <= k
    num = np.concatenate([np.eye(n), cum], axis=1)         # [L, 2L-1]
    lin[bv, n + 1:3 * n] = num
    lin[av, n + 1:3 * n] = -num
    lin[bv, 3 * n] = lin[av, 3 * n + 1] = 1.0
    den = np.concatenate([num, num], axis=0)               # [2L, 2L-1] over |bid v| then |ask v|
    return lin, den
