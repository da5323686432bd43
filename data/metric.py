"""The official metric: weighted Pearson correlation per target.

For each target: clip y_pred to [-6, 6]; weights w = max(|y_true|, 1e-8);
score = w-weighted covariance / sqrt(w-weighted variances), 0 if either
variance is <= 0. The final score is the mean over t0 and t1, on rows with
need_prediction == True only (callers pass those rows).
"""

from __future__ import annotations

import numpy as np

from .contract import CLIP, WEIGHT_FLOOR


def weighted_pearson_1d(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Weighted Pearson of one target; inputs are 1-D and the same length."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.clip(np.asarray(y_pred, dtype=np.float64).ravel(), -CLIP, CLIP)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shape mismatch: y_true {y_true.shape} vs y_pred {y_pred.shape}")
    if y_true.size == 0:
        return 0.0
    w = np.maximum(np.abs(y_true), WEIGHT_FLOOR)
    sw = w.sum()
    mt = (w * y_true).sum() / sw
    mp = (w * y_pred).sum() / sw
    dt, dp = y_true - mt, y_pred - mp
    cov = (w * dt * dp).sum() / sw
    vt = (w * dt * dt).sum() / sw
    vp = (w * dp * dp).sum() / sw
    if vt <= 0 or vp <= 0:
        return 0.0
    return float(cov / np.sqrt(vt * vp))


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Official score of predictions ``[n, 2]`` against targets ``[n, 2]``.

    Returns ``{"t0": ..., "t1": ..., "mean": ...}``.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 2 or y_true.shape[1] != 2 or y_pred.shape != y_true.shape:
        raise ValueError(f"expected [n, 2] arrays, got {y_true.shape} and {y_pred.shape}")
    t0 = weighted_pearson_1d(y_true[:, 0], y_pred[:, 0])
    t1 = weighted_pearson_1d(y_true[:, 1], y_pred[:, 1])
    return {"t0": t0, "t1": t1, "mean": 0.5 * (t0 + t1)}


def score_masked(Y: np.ndarray, P: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Score ``[n_seq, T, 2]`` predictions on the rows where ``mask`` is True."""
    return score(Y[mask], P[mask])
