"""The pipeline's final stage: which table columns come out, and how they are scaled.

``method`` chooses the scaling of the table X[..., F]:

- ``global`` (default): clip((X - center_) / scale_, -clip, clip) with
  statistics fitted on training rows (below).
- ``none``: finite values pass unchanged (the organisers' baseline feeds the
  raw columns as they are); only non-finite values are handled.
- ``warmup``: per-sequence statistics of the first ``warmup`` steps (99: the
  steps 0..98 that need no prediction). It is causal and streamable because
  the statistics are *running* until step warmup-1 and *frozen* after it: the
  output at step t uses the mean and variance of rows 0..min(t, warmup-1),
  never a later row. z = (x - m_seq) / sqrt(v_seq + (floor * scale_)^2),
  clipped: the fitted global ``scale_`` times ``WARMUP_SCALE_FLOOR`` floors the
  per-sequence scale, so a column that is constant during the warm-up (and
  step 0, where v_seq = 0) maps to small values rather than to noise / 0.
  Sums are taken relative to the sequence's first row, so price columns far
  from 0 keep their precision.

In every method +-inf maps to +-clip and NaN to 0, so the output is always
finite. ``drop_raw=True`` leaves the 32 raw columns out of the output (a
pipeline of derived features only); statistics are still fitted on every
table column, so dropping is a pure selection.

Global statistics:

- ``robust=False``: center_ = mean, scale_ = population std, both exact over
  all fitted rows, accumulated chunk by chunk (Chan's parallel update) so a
  pipeline can fit on data larger than memory.
- ``robust=True``: center_ = median, scale_ = IQR / 1.349 (equal to the std for
  Gaussian data), from a deterministic subsample of at most ``max_fit_rows``
  rows (every k-th fitted row). Sparse columns (e.g. trade counts, mostly 0)
  have IQR 0: they fall back to the subsample's std.

A column whose scale is 0 up to rounding (a constant) gets scale 1, so it
maps to 0 rather than to amplified noise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import RAW_COLUMNS, UNBOUNDED, FeatureBuilder, FeatureSpecError, register_builder

_IQR_TO_STD = 1.349
METHODS = ("global", "none", "warmup")
WARMUP_STEPS = 99            # steps 0..98 carry no prediction (the contract's warm-up)
WARMUP_SCALE_FLOOR = 0.1     # per-sequence scale floor, as a fraction of the global scale


@register_builder("normalize")
class Normalizer(FeatureBuilder):
    param_names = ("robust", "clip", "max_fit_rows", "method", "warmup", "drop_raw")
    needs_data = True
    replaces_input = True

    def __init__(self, robust: bool = False, clip: float = 10.0, max_fit_rows: int = 200_000,
                 method: str = "global", warmup: int = WARMUP_STEPS, drop_raw: bool = False):
        self.robust = robust
        self.clip = clip
        self.max_fit_rows = max_fit_rows
        self.method = method
        self.warmup = warmup
        self.drop_raw = drop_raw

    @property
    def stateful(self) -> bool:                 # per-sequence statistics need a state
        return self.method == "warmup"

    @property
    def lookback(self) -> float:
        """warmup: the output at step t reads rows 0..min(t, warmup-1) (position-bound, not a window)."""
        return UNBOUNDED if self.method == "warmup" else 0

    def validate_params(self) -> None:
        if self.method not in METHODS:
            raise FeatureSpecError(f"normalize: method must be one of {', '.join(METHODS)}, got {self.method!r}")
        w = self.warmup
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise FeatureSpecError(f"normalize: warmup must be a positive integer (steps), got {w!r}")
        if not isinstance(self.drop_raw, bool):
            raise FeatureSpecError(f"normalize: drop_raw must be true or false, got {self.drop_raw!r}")
        if not isinstance(self.robust, bool):
            raise FeatureSpecError(f"normalize: robust must be true or false, got {self.robust!r}")
        c = self.clip
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not (0 < c < math.inf):
            raise FeatureSpecError(f"normalize: clip must be a positive finite number, got {c!r}")
        m = self.max_fit_rows
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise FeatureSpecError(f"normalize: max_fit_rows must be a positive integer, got {m!r}")

    def _bind(self, names: list[str]) -> list[str]:
        raw = set(RAW_COLUMNS) if self.drop_raw else set()
        self.keep_ = np.array([i for i, n in enumerate(names) if n not in raw], dtype=np.intp)
        if self.keep_.size == 0:
            raise FeatureSpecError("normalize: drop_raw leaves no column; turn on a builder "
                                   "(book, trade, temporal or interactions)")
        self._all_kept = self.keep_.size == len(names)
        return [names[i] for i in self.keep_]

    def begin_fit(self, names: list[str], n_rows: int | None = None) -> Normalizer:
        super().begin_fit(names, n_rows)
        f = len(names)
        self._n, self._mean, self._m2 = 0, np.zeros(f), np.zeros(f)
        self._stride = max(1, math.ceil((n_rows or 0) / self.max_fit_rows))
        self._seen, self._sample = 0, []
        return self

    def partial_fit(self, X: np.ndarray, mask: np.ndarray | None = None) -> Normalizer:
        """Accumulate rows of X[N,T,F] where mask[N,T] (all rows if None)."""
        X = np.asarray(X, dtype=np.float64)
        rows = X.reshape(-1, X.shape[-1]) if mask is None else X[np.asarray(mask, dtype=bool)]
        m = rows.shape[0]
        if m == 0:
            return self
        if self.robust:
            keep = (self._seen + np.arange(m)) % self._stride == 0
            self._sample.append(rows[keep])
            self._seen += m
            return self
        mean_b = rows.mean(axis=0)
        m2_b = ((rows - mean_b) ** 2).sum(axis=0)
        total = self._n + m
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (m / total)
        self._m2 = self._m2 + m2_b + delta * delta * (self._n * m / total)
        self._n = total
        return self

    def end_fit(self) -> Normalizer:
        if self.robust:
            sample = np.concatenate(self._sample) if self._sample else np.zeros((0, len(self.input_names_)))
            center, scale = self._robust_stats(sample)
        else:
            center = self._mean
            scale = np.sqrt(self._m2 / self._n) if self._n else np.ones_like(self._mean)
        self.center_ = center
        self.scale_ = np.where(scale > 1e-12 * (1.0 + np.abs(center)), scale, 1.0)
        self._derive()
        del self._n, self._mean, self._m2, self._sample
        return super().end_fit()

    def _derive(self) -> None:
        """Kept columns' statistics, as the transforms use them."""
        self.inv_scale_ = 1.0 / self.scale_
        self._center_k, self._inv_k = self.center_[self.keep_], self.inv_scale_[self.keep_]
        self._floor2_k = (WARMUP_SCALE_FLOOR * self.scale_[self.keep_]) ** 2

    @staticmethod
    def _robust_stats(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = sample.shape[1]
        if sample.shape[0] == 0:
            return np.zeros(f), np.ones(f)
        q25, center, q75 = np.percentile(sample, [25, 50, 75], axis=0)
        scale = (q75 - q25) / _IQR_TO_STD
        return center, np.where(scale > 0, scale, sample.std(axis=0))

    def _stats(self) -> dict[str, Any]:
        return {"center": self.center_.tolist(), "scale": self.scale_.tolist()}

    def _load_stats(self, stats: dict[str, Any]) -> None:
        self.center_ = np.asarray(stats["center"], dtype=np.float64)
        self.scale_ = np.asarray(stats["scale"], dtype=np.float64)
        self._derive()

    def _select(self, x: np.ndarray) -> np.ndarray:
        """x[..., F] -> a float64 copy of the kept columns [..., K]."""
        return np.array(x, dtype=np.float64) if self._all_kept else x[..., self.keep_]

    def _finish(self, z: np.ndarray, clip_finite: bool = True) -> np.ndarray:
        """In place: clip to [-clip, clip] (or only +-inf when not clip_finite), NaN -> 0."""
        c = float(self.clip)
        if clip_finite:
            np.minimum(z, c, out=z)
            np.maximum(z, -c, out=z)
        elif not math.isfinite(z.sum()):
            z[z == math.inf], z[z == -math.inf] = c, -c
        if math.isnan(z.sum()):              # one cheap pass; NaN needs a non-finite input
            z[np.isnan(z)] = 0.0
        return z

    def _compute(self, x: np.ndarray) -> np.ndarray:
        """x[..., F] -> finite [..., K]: global z-scores within [-clip, clip], or raw values (none)."""
        z = self._select(x)
        if self.method == "none":
            return self._finish(z, clip_finite=False)
        z -= self._center_k
        z *= self._inv_k
        return self._finish(z)

    # ---- warmup: running per-sequence statistics, frozen after `warmup` rows ----
    def _new_state(self, lead: tuple[int, ...]) -> dict[str, Any]:
        k = (*lead, self.keep_.size)
        return {"n": 0, "x0": np.zeros(k), "s1": np.zeros(k), "s2": np.zeros(k),
                "center": np.zeros(k), "inv": np.zeros(k)}

    def _step(self, st: dict[str, Any], x: np.ndarray) -> np.ndarray:
        """x[..., F] (one row, or the same step of B sequences) -> [..., K]."""
        z = self._select(x)
        if st["n"] < int(self.warmup):
            xs = np.where(np.isfinite(z), z, 0.0)           # statistics never see NaN / inf
            if st["n"] == 0:
                st["x0"][...] = xs
            d = xs - st["x0"]
            st["s1"] += d
            st["s2"] += d * d
            st["n"] += 1
            mean = st["s1"] / st["n"]
            var = np.maximum(st["s2"] / st["n"] - mean * mean, 0.0)
            st["center"][...] = st["x0"] + mean
            st["inv"][...] = 1.0 / np.sqrt(var + self._floor2_k)
        z -= st["center"]
        z *= st["inv"]
        return self._finish(z)
