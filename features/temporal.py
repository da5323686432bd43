"""Causal temporal statistics of chosen columns, O(1) work per step.

For each input column c (K columns, raw or derived, named in ``inputs``) and
each parameter value, outputs in this order (type-major, then parameter, then c):

    c_lag{L}     x[t-L]                                  for L in ``lags``
    c_d{L}       x[t] - x[t-L]                           for L in ``deltas``
    c_mean{w}    mean of x[t-w+1..t]   (c_xmean{w} = x[t] - mean when ``relative``)
    c_std{w}     population std of x[t-w+1..t]           for w in ``windows``
    c_ema{h}     EMA, weights halving every h steps (c_xema{h} = x[t] - EMA when ``relative``)

Start of a sequence: steps before 0 count as x[0] for lags and deltas; windows
use the min(t + 1, w) rows seen; the EMA is bias-corrected (the a^k-weighted
mean of the rows seen), so no seed value is needed.

Streaming keeps a ring buffer of W = max(windows, lags + 1) rows of x - x[0]
plus running sums per window and an EMA accumulator per half-life. Values are
stored relative to x[0] so the variance from running sums does not lose
precision on price levels far from 0. Batch transform runs the same step over
all sequences at once, so batch and streaming agree to rounding.
lookback = max(lags, deltas, windows - 1), or UNBOUNDED when EMAs are present.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import UNBOUNDED, FeatureBuilder, FeatureSpecError, ema_alpha, register_builder, resolve


def _int_list(value: Any, what: str, minimum: int) -> None:
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
    if not ok or len(set(value)) != len(value):
        raise FeatureSpecError(f"temporal: {what} must be a list of distinct integers >= {minimum}, got {value!r}")


@register_builder("temporal")
class TemporalFeatures(FeatureBuilder):
    param_names = ("inputs", "lags", "deltas", "windows", "ema_halflives", "relative")
    stateful = True

    def __init__(self, inputs=("mid", "microprice"), lags=(), deltas=(1, 10), windows=(20,),
                 ema_halflives=(4, 16, 64), relative: bool = True):
        self.inputs = inputs
        self.lags = lags
        self.deltas = deltas
        self.windows = windows
        self.ema_halflives = ema_halflives
        self.relative = relative

    def validate_params(self) -> None:
        ins = self.inputs
        if not isinstance(ins, (list, tuple)) or not ins or not all(isinstance(c, str) for c in ins) \
                or len(set(ins)) != len(ins):
            raise FeatureSpecError(f"temporal: inputs must be a non-empty list of distinct column names, got {ins!r}")
        _int_list(self.lags, "lags", 1)
        _int_list(self.deltas, "deltas", 1)
        _int_list(self.windows, "windows", 2)
        hl = self.ema_halflives
        if not isinstance(hl, (list, tuple)) or len(set(hl)) != len(hl) or not all(
                isinstance(h, (int, float)) and not isinstance(h, bool) and h > 0 for h in hl):
            raise FeatureSpecError(f"temporal: ema_halflives must be a list of distinct positive numbers, got {hl!r}")
        if not (self.lags or self.deltas or self.windows or hl):
            raise FeatureSpecError("temporal: set at least one of lags, deltas, windows, ema_halflives")

    @property
    def lookback(self) -> float:
        if self.ema_halflives:
            return UNBOUNDED
        return max([*self.lags, *self.deltas, *(w - 1 for w in self.windows)], default=0)

    def _bind(self, names: list[str]) -> list[str]:
        self.input_idx_ = np.asarray(resolve(names, list(self.inputs), "temporal"), dtype=np.intp)
        offsets = np.asarray([*self.lags, *self.deltas, *self.windows], dtype=np.int64)
        ring = int(max([*self.windows, *(L + 1 for L in [*self.lags, *self.deltas])], default=1))
        # slots_[t % ring]: ring slots holding x[t - offset] - x0 for every offset, read before
        # x[t] is written (only an offset equal to ring shares x[t]'s slot, and windows want the old value)
        self.slots_ = (np.arange(ring)[:, None] - offsets[None, :]) % ring          # [ring, n_off]
        self.win_ = np.asarray(self.windows, dtype=np.float64)[:, None]            # [nW, 1]
        self.alpha_ = np.asarray([ema_alpha(h) for h in self.ema_halflives])[:, None]   # [H, 1]
        self.gain0_ = 1.0 - self.alpha_
        x = "x" if self.relative else ""
        out = [f"{c}_lag{L}" for L in self.lags for c in self.inputs]
        out += [f"{c}_d{L}" for L in self.deltas for c in self.inputs]
        out += [f"{c}_{x}mean{w}" for w in self.windows for c in self.inputs]
        out += [f"{c}_std{w}" for w in self.windows for c in self.inputs]
        out += [f"{c}_{x}ema{h:g}" for h in self.ema_halflives for c in self.inputs]
        return out

    def _new_state(self, lead: tuple[int, ...]) -> dict[str, Any]:
        k, n_w, n_h = len(self.inputs), len(self.windows), len(self.ema_halflives)
        return {
            "t": 0,
            "x0": np.zeros(lead + (1, k)),                       # first value of each input
            "buf": np.zeros(lead + (len(self.slots_), k)),       # ring of x - x0; unwritten slots are 0
            "s1": np.zeros(lead + (n_w, k)),                     # running sum of (x - x0) per window
            "s2": np.zeros(lead + (n_w, k)),                     # running sum of (x - x0)^2 per window
            "ema": np.zeros(lead + (n_h, k)),                    # EMA of x - x0 per half-life
            "ap": np.ones((n_h, 1)),                             # a^(t+1) after step t
        }

    def _step(self, st: dict[str, Any], x: np.ndarray) -> np.ndarray:
        """x[..., F_in] -> [..., F_out]; mutates st. Slots never written read as 0, i.e. as x0."""
        t = st["t"]
        v = x[..., None, self.input_idx_]                             # [..., 1, K]
        if t == 0:
            st["x0"][...] = v
        d = v - st["x0"]                                              # [..., 1, K]
        buf = st["buf"]
        ring = buf.shape[-2]
        past = buf[..., self.slots_[t % ring], :]                     # [..., n_off, K]
        buf[..., t % ring, :] = d[..., 0, :]
        n_l, n_d = len(self.lags), len(self.deltas)
        parts = []
        if n_l:
            parts.append(past[..., :n_l, :] + st["x0"])
        if n_d:
            parts.append(d - past[..., n_l:n_l + n_d, :])
        if len(self.windows):
            old = past[..., n_l + n_d:, :]                            # [..., nW, K] leaving the windows
            st["s1"] += d - old
            st["s2"] += d * d - old * old
            n = np.minimum(t + 1.0, self.win_)                        # [nW, 1] rows in each window
            mean = st["s1"] / n
            std = np.sqrt(np.maximum(st["s2"] / n - mean * mean, 0.0))
            parts += [d - mean if self.relative else mean + st["x0"], std]
        if len(self.ema_halflives):
            # bias-corrected EMA as ema += gain_t * (d - ema), gain_t = (1 - a) / (1 - a^(t+1))
            st["ap"] *= self.alpha_
            dev = d - st["ema"]                                       # [..., H, K]
            st["ema"] += self.gain0_ / (1.0 - st["ap"]) * dev
            parts.append(d - st["ema"] if self.relative else st["ema"] + st["x0"])
        st["t"] = t + 1
        out = np.concatenate(parts, axis=-2)                           # [..., n_stats, K]
        return out.reshape(out.shape[:-2] + (-1,))
