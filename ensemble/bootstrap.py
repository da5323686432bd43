"""The metric in moment form: fast blend scoring and the sequence bootstrap.

The official weighted Pearson (``lobsweep.data.metric``) is a function of six
weighted sums per target: sum w, sum w*y, sum w*p, sum w*y*y, sum w*p*p,
sum w*y*p, with ``p`` the clipped prediction and ``w = max(|y|, floor)``.
Three things follow, and this module is them:

* ``TargetMoments``: a blend ``P @ a`` of members that all lie inside the
  clip on a row is never clipped there, so on those ("safe") rows the sums
  are linear and quadratic forms in ``a`` over a ``[M, M]`` Gram matrix;
  only the few rows where some member leaves +-CLIP are kept and scored
  directly. Any blend (and its gradient) is then scored exactly without a
  pass over all rows, which is what the greedy and fitted methods need;
* ``scaled_scores``: for ``s * p`` with ``s > 0`` the rows clipped are those
  with ``|p| > CLIP / s``, so after one sort by ``|p|`` every scale is scored
  from prefix sums (negative scales only flip the sign of the score);
* ``column_scores``: the direct, row-wise metric of many columns at once;
* resampling whole sequences only multiplies each sequence's sums by how
  often it was drawn, so a bootstrap replicate costs ``[n_boot, G] @ [G, 6]``
  instead of a pass over the rows (``bootstrap_scores``).

Shapes: ``y[N]`` or ``Y[N, 2]`` targets, ``pred[N, 2]``, ``P[N, M, 2]``,
``Pt[N, k]`` the members of one target, ``a[k]`` or ``A[k, j]`` blend
weights, ``groups[N]`` integer sequence ids, ``G`` distinct sequences.
"""

from __future__ import annotations

import numpy as np

from lobsweep.data.contract import CLIP, WEIGHT_FLOOR
from lobsweep.data.metric import score

__all__ = ["TargetMoments", "scaled_scores", "column_scores", "member_scores", "bootstrap_scores", "bootstrap_ci", "bootstrap_ci_per_target"]


def column_scores(y: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Official metric of each column of ``preds[N, k]`` against ``y[N]`` -> ``[k]``.

    Equal to ``weighted_pearson_1d(y, preds[:, j])`` for every j, including
    the clip and the 0 returned when a variance is not positive.
    """
    y = np.asarray(y, dtype=np.float64)
    pc = np.clip(np.asarray(preds, dtype=np.float64), -CLIP, CLIP)
    if y.size == 0:
        return np.zeros(pc.shape[1])
    w = np.maximum(np.abs(y), WEIGHT_FLOOR)
    w = w / w.sum()
    dt = y - w @ y                                                       # [N]
    dp = pc - w @ pc                                                     # [N, k]
    cov = (w * dt) @ dp
    vt = w @ (dt * dt)
    vp = w @ (dp * dp)
    ok = (vp > 0) & (vt > 0)
    out = np.zeros(pc.shape[1])
    out[ok] = cov[ok] / np.sqrt(vt * vp[ok])
    return out


class TargetMoments:
    """Weighted sums of one target against ``k`` member columns, to score
    any blend ``a[k]`` exactly in O(k^2 + risky rows).

    Members are shifted by their weighted means ``mu[k]`` (the score is shift
    invariant where nothing is clipped), so the raw-moment formulas do not
    cancel. Weights are normalised to sum to 1. Blends must be convex
    (``a >= 0``, ``sum(a) == 1``): only then does a safe row stay unclipped.
    """

    def __init__(self, y: np.ndarray, Pt: np.ndarray):
        y = np.asarray(y, dtype=np.float64)
        Pt = np.asarray(Pt, dtype=np.float64)
        w = np.maximum(np.abs(y), WEIGHT_FLOOR)
        w = w / w.sum()
        self.mu = w @ Pt                                                 # [k]
        yc = y - w @ y
        safe = np.all(np.abs(Pt) <= CLIP, axis=1)
        xs, ws = Pt[safe] - self.mu, w[safe]
        self.G = (xs * ws[:, None]).T @ xs                               # [k, k]
        self.m1 = ws @ xs                                                # [k]
        self.c = (ws * yc[safe]) @ xs                                    # [k]
        self.sy, self.syy = float(w @ yc), float(w @ (yc * yc))
        self.rP, self.rw, self.ry = Pt[~safe], w[~safe], yc[~safe]       # risky rows, raw
        xr = self.rP - self.mu
        self.G_full = self.G + (xr * self.rw[:, None]).T @ xr            # unclipped, for WLS
        self.c_full = self.c + (self.rw * self.ry) @ xr

    def subset(self, idx) -> "TargetMoments":
        """The same sums restricted to members ``idx`` (rows safe for all
        members stay safe for any subset)."""
        idx = np.asarray(idx, dtype=int)
        out = object.__new__(TargetMoments)
        out.__dict__.update(self.__dict__)
        out.mu, out.m1, out.c, out.c_full = self.mu[idx], self.m1[idx], self.c[idx], self.c_full[idx]
        out.G, out.G_full = self.G[np.ix_(idx, idx)], self.G_full[np.ix_(idx, idx)]
        out.rP = self.rP[:, idx]
        return out

    @staticmethod
    def _check_convex(A: np.ndarray) -> None:
        if np.any(A < -1e-12) or not np.allclose(A.sum(axis=0), 1.0, atol=1e-9):
            raise ValueError("TargetMoments scores convex blends only (a >= 0, sum(a) == 1)")

    def _finish(self, sq, sqq, syq):
        vy = self.syy - self.sy ** 2
        vq = sqq - sq ** 2
        cov = syq - self.sy * sq
        ok = (vq > 1e-12 * np.maximum(sqq, 1e-300)) & (vy > 0)
        r = np.where(ok, cov / np.sqrt(np.where(ok, vy * vq, 1.0)), 0.0)
        return r, vy, vq, ok

    def score(self, A: np.ndarray) -> np.ndarray:
        """Scores ``[j]`` of the blends in the columns of ``A[k, j]`` (``[]`` for ``a[k]``)."""
        A = np.asarray(A, dtype=np.float64)
        A2 = A.reshape(A.shape[0], -1)
        self._check_convex(A2)
        sq = self.m1 @ A2
        sqq = np.einsum("kj,kj->j", A2, self.G @ A2)
        syq = self.c @ A2
        if self.rw.size:
            Q = np.clip(self.rP @ A2, -CLIP, CLIP) - self.mu @ A2         # [R, j]
            sq = sq + self.rw @ Q
            sqq = sqq + self.rw @ (Q * Q)
            syq = syq + (self.rw * self.ry) @ Q
        r = self._finish(sq, sqq, syq)[0]
        return r.reshape(A.shape[1:]) if A.ndim > 1 else r[0]

    def score_and_grad(self, a: np.ndarray) -> tuple[float, np.ndarray]:
        """Score of blend ``a[k]`` and its gradient ``[k]`` (zero through
        clipped rows, the metric's own subgradient)."""
        a = np.asarray(a, dtype=np.float64)
        self._check_convex(a)
        Ga = self.G @ a
        sq, sqq, syq = self.m1 @ a, a @ Ga, self.c @ a
        dsq, dsqq, dsyq = self.m1.copy(), 2.0 * Ga, self.c.copy()
        if self.rw.size:
            p = self.rP @ a
            inside = (np.abs(p) < CLIP).astype(np.float64)
            q = np.clip(p, -CLIP, CLIP) - self.mu @ a

            def dsum(coef):                                  # d/da sum coef*q, dq/da = inside*p - mu
                return (coef * inside) @ self.rP - coef.sum() * self.mu

            dsq += dsum(self.rw)
            dsqq += dsum(2.0 * self.rw * q)
            dsyq += dsum(self.rw * self.ry)
            sq, sqq, syq = sq + self.rw @ q, sqq + self.rw @ (q * q), syq + (self.rw * self.ry) @ q
        r, vy, vq, ok = self._finish(np.atleast_1d(sq), np.atleast_1d(sqq), np.atleast_1d(syq))
        if not ok[0]:
            return 0.0, np.zeros_like(a)
        r, vq = float(r[0]), float(vq[0])
        dcov = dsyq - self.sy * dsq
        dvq = dsqq - 2.0 * sq * dsq
        return r, dcov / np.sqrt(vy * vq) - 0.5 * r * dvq / vq


def scaled_scores(y: np.ndarray, p: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Official metric of ``s * p`` against ``y[N]`` for every ``s`` in
    ``scales[j]`` -> ``[j]``, in O(N log N + j)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)
    w = np.maximum(np.abs(y), WEIGHT_FLOOR)
    w = w / w.sum()
    yc = y - w @ y
    order = np.argsort(np.abs(p), kind="stable")
    ap, p, w, yc = np.abs(p)[order], p[order], w[order], yc[order]
    sg = np.sign(p)

    def prefix(v):                                            # prefix[i] = sum of v[:i]
        return np.concatenate([[0.0], np.cumsum(v)])

    lin = [prefix(w * p), prefix(w * p * p), prefix(w * yc * p)]
    cl = [prefix(w * sg), prefix(w), prefix(w * yc * sg)]
    mag = np.abs(scales)
    safe = mag > 0
    cut = np.searchsorted(ap, CLIP / np.where(safe, mag, 1.0), side="right")
    out_of = [c[-1] - c[cut] for c in cl]                     # sums over clipped rows
    sq = mag * lin[0][cut] + CLIP * out_of[0]
    sqq = mag ** 2 * lin[1][cut] + CLIP ** 2 * out_of[1]
    syq = mag * lin[2][cut] + CLIP * out_of[2]
    vy = w @ (yc * yc)
    vq = sqq - sq ** 2
    ok = safe & (vq > 1e-12 * np.maximum(sqq, 1e-300)) & (vy > 0)
    r = np.where(ok, syq / np.sqrt(np.where(ok, vy * vq, 1.0)), 0.0)   # sum w*yc == 0
    return np.sign(scales) * r


def member_scores(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Score of every member on each target: ``P[N, M, 2]``, ``Y[N, 2]`` -> ``[M, 2]``."""
    return np.stack([column_scores(Y[:, t], P[:, :, t]) for t in (0, 1)], axis=1)


def _group_index(groups: np.ndarray, n_rows: int) -> tuple[np.ndarray, int]:
    """Dense ids ``[N]`` in 0..G-1 and G, checking one id per row."""
    groups = np.asarray(groups).ravel()
    if groups.shape[0] != n_rows:
        raise ValueError(f"groups has {groups.shape[0]} rows, predictions have {n_rows}")
    _, inv = np.unique(groups, return_inverse=True)
    return inv, int(inv.max()) + 1 if inv.size else 0


def _group_moments(y: np.ndarray, p: np.ndarray, inv: np.ndarray, n_groups: int) -> np.ndarray:
    """Per-sequence weighted sums ``[G, 6]`` for one target.

    y and p are centred by their overall weighted means first (the score is
    shift invariant once p is clipped), which keeps the raw-moment formula
    free of cancellation.
    """
    w = np.maximum(np.abs(y), WEIGHT_FLOOR)
    pc = np.clip(p, -CLIP, CLIP)
    yc = y - (w @ y) / w.sum()
    pc = pc - (w @ pc) / w.sum()
    cols = np.stack([w, w * yc, w * pc, w * yc * yc, w * pc * pc, w * yc * pc], axis=1)
    return np.stack([np.bincount(inv, weights=col, minlength=n_groups) for col in cols.T], axis=1)


def _scores_from_moments(m: np.ndarray) -> np.ndarray:
    """Weighted Pearson from summed moments ``[..., 6]`` -> ``[...]``."""
    sw, sy, sp, syy, spp, syp = np.moveaxis(m, -1, 0)
    my, mp = sy / sw, sp / sw
    cov = syp / sw - my * mp
    vt = syy / sw - my * my
    vp = spp / sw - mp * mp
    ok = (vt > 0) & (vp > 0)
    return np.where(ok, cov / np.sqrt(np.where(ok, vt * vp, 1.0)), 0.0)


def bootstrap_scores(y, pred, groups, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """Scores of ``n_boot`` sequence-resampled replicates -> ``[n_boot, 3]``
    (t0, t1, mean). Each replicate draws G whole sequences with replacement."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != 2 or pred.shape != y.shape:
        raise ValueError(f"expected [N, 2] arrays, got {y.shape} and {pred.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    inv, n_groups = _group_index(groups, y.shape[0])
    if n_groups < 2:
        raise ValueError("the sequence bootstrap needs at least 2 sequences")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float64)
    out = np.empty((n_boot, 3))
    for t in (0, 1):
        out[:, t] = _scores_from_moments(counts @ _group_moments(y[:, t], pred[:, t], inv, n_groups))
    out[:, 2] = out[:, :2].mean(axis=1)
    return out


def bootstrap_ci_per_target(y, pred, groups, n_boot: int = 200, seed: int = 0,
                            alpha: float = 0.05) -> dict[str, tuple[float, float, float]]:
    """Point score and percentile CI for t0, t1 and their mean.

    Returns ``{"t0": (score, lo, hi), "t1": ..., "mean": ...}``; the point
    score is the official metric on all rows, the interval the
    ``alpha/2, 1 - alpha/2`` percentiles of the sequence bootstrap.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    point = score(np.asarray(y), np.asarray(pred))
    boots = bootstrap_scores(y, pred, groups, n_boot=n_boot, seed=seed)
    lo = np.quantile(boots, alpha / 2, axis=0)
    hi = np.quantile(boots, 1 - alpha / 2, axis=0)
    return {k: (float(point[k]), float(lo[i]), float(hi[i])) for i, k in enumerate(("t0", "t1", "mean"))}


def bootstrap_ci(y, pred, groups, n_boot: int = 200, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float, float]:
    """``(score_mean_of_t0_t1, lo, hi)``: the official mean score and its
    sequence-bootstrap percentile interval (``bootstrap_ci_per_target`` gives
    the same for each target)."""
    return bootstrap_ci_per_target(y, pred, groups, n_boot=n_boot, seed=seed, alpha=alpha)["mean"]
