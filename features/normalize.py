"""Final z-normalisation of every column, fitted on training rows.

Replaces the table X[..., F] by clip((X - center_) / scale_, -clip, clip),
with +-inf mapped to +-clip and NaN to 0, so the output is always finite.

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

from .base import FeatureBuilder, FeatureSpecError, register_builder

_IQR_TO_STD = 1.349


@register_builder("normalize")
class Normalizer(FeatureBuilder):
    param_names = ("robust", "clip", "max_fit_rows")
    needs_data = True
    replaces_input = True

    def __init__(self, robust: bool = False, clip: float = 10.0, max_fit_rows: int = 200_000):
        self.robust = robust
        self.clip = clip
        self.max_fit_rows = max_fit_rows

    def validate_params(self) -> None:
        if not isinstance(self.robust, bool):
            raise FeatureSpecError(f"normalize: robust must be true or false, got {self.robust!r}")
        c = self.clip
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not (0 < c < math.inf):
            raise FeatureSpecError(f"normalize: clip must be a positive finite number, got {c!r}")
        m = self.max_fit_rows
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise FeatureSpecError(f"normalize: max_fit_rows must be a positive integer, got {m!r}")

    def _bind(self, names: list[str]) -> list[str]:
        return list(names)

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
        self.inv_scale_ = 1.0 / self.scale_
        del self._n, self._mean, self._m2, self._sample
        return super().end_fit()

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
        self.inv_scale_ = 1.0 / self.scale_

    def _compute(self, x: np.ndarray) -> np.ndarray:
        """x[..., F] -> finite z-scores [..., F], within [-clip, clip]."""
        c = float(self.clip)
        z = x - self.center_
        z *= self.inv_scale_
        np.minimum(z, c, out=z)
        np.maximum(z, -c, out=z)
        if math.isnan(z.sum()):              # one cheap pass; NaN needs a non-finite input
            z[np.isnan(z)] = 0.0
        return z
