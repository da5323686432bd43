"""Ensemble weighting methods: uniform, greedy (Caruana) and a fitted blend.

Every method is a pure function of member predictions and targets and
returns weights per target. Dimension letters used throughout:

    N  rows (steps with need_prediction == True, all sequences stacked)
    M  members
    2  targets (t0, t1)

    P  float[N, M, 2]   member predictions
    Y  float[N, 2]      targets
    W  float[M, 2]      weights; each column is non-negative and sums to 1

The metric clips predictions to +-CLIP, so a blend keeps the members' scale
(a convex combination) and an optional per-target ``scale`` is fitted apart.

Latency budgets: ``costs[M]`` is each member's streaming cost (for example
ms per step) and ``budget`` the most the packaged ensemble may spend. The
cost of an ensemble is the sum over DISTINCT members with weight in either
target, because a member runs once per step and feeds both targets.
"""

from __future__ import annotations

import numpy as np

from lobsweep.data.contract import CLIP, WEIGHT_FLOOR

from .scoring import (
    BudgetError,
    check_inputs,
    check_costs,
    column_scores,
    member_scores,
)

__all__ = [
    "BudgetError",
    "uniform_weights",
    "greedy_selection",
    "weighted_blend",
    "fit_post_scale",
    "top_members_within_budget",
]


def uniform_weights(n_members: int, subset=None) -> np.ndarray:
    """Equal weights ``[M, 2]`` over all members, or over ``subset`` only."""
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    W = np.zeros((n_members, 2))
    idx = np.arange(n_members) if subset is None else np.unique(np.asarray(subset, dtype=int))
    if idx.size == 0:
        raise ValueError("uniform_weights: empty subset")
    W[idx] = 1.0 / idx.size
    return W


def top_members_within_budget(P, Y, *, costs=None, budget=None) -> list[int]:
    """Members in order of tune score (mean of t0, t1), skipping those that
    would push the distinct-member cost over ``budget``. All members when no
    budget is given."""
    P, Y = check_inputs(P, Y)
    n_members = P.shape[1]
    costs = check_costs(costs, budget, n_members)
    if budget is None:
        return list(range(n_members))
    order = np.argsort(-member_scores(P, Y).mean(axis=1), kind="stable")
    chosen, spent = [], 0.0
    for m in order:
        if spent + costs[m] <= budget:
            chosen.append(int(m))
            spent += costs[m]
    return chosen


def greedy_selection(P, Y, *, rounds=50, init_top=3, candidates=None, costs=None, budget=None) -> np.ndarray:
    """Caruana ensemble selection with replacement, per target.

    Starts from the ``init_top`` best members (sorted initialisation, added
    one at a time), then adds ``rounds`` members, each the one whose addition
    scores best. Every state is remembered and each target is trimmed to its
    best state, so the result never scores below the best single candidate on
    the data it was fitted on. Under a budget the two targets advance in
    turns over one shared set of distinct members; re-adding a member already
    in either target is free. Returns ``W[M, 2]`` (counts / total).
    """
    P, Y = check_inputs(P, Y)
    n_rows, n_members, _ = P.shape
    costs = check_costs(costs, budget, n_members)
    pool = np.arange(n_members) if candidates is None else np.unique(np.asarray(candidates, dtype=int))
    if pool.size == 0 or pool.min() < 0 or pool.max() >= n_members:
        raise ValueError(f"candidates must be non-empty indices in [0, {n_members})")
    if budget is not None and costs[pool].min() > budget:
        raise BudgetError(f"no candidate member fits the latency budget {budget:g} "
                          f"(cheapest costs {costs[pool].min():g}); raise the budget")

    singles = member_scores(P[:, pool], Y)                               # [len(pool), 2]
    counts = np.zeros((n_members, 2))
    sums = np.zeros((n_rows, 2))
    history = [[], []]                                                   # (score, counts) per target

    def fits(m: int) -> bool:
        if budget is None:
            return True
        used = counts.sum(axis=1) > 0
        if used[m]:
            return True
        return costs[used].sum() + costs[m] <= budget

    def add(t: int, m: int, new_sum: np.ndarray, new_score: float) -> None:
        counts[m, t] += 1
        sums[:, t] = new_sum
        history[t].append((new_score, counts[:, t].copy()))

    n_init = max(1, min(init_top, pool.size))
    for t in (0, 1):
        for m in pool[np.argsort(-singles[:, t], kind="stable")]:
            if len([c for c in counts[:, t] if c > 0]) >= n_init:
                break
            if fits(m):
                k = counts[:, t].sum()
                new_sum = sums[:, t] + P[:, m, t]
                add(t, int(m), new_sum, float(column_scores(Y[:, t], (new_sum / (k + 1))[:, None])[0]))

    for _ in range(rounds):
        for t in (0, 1):
            allowed = np.array([m for m in pool if fits(m)], dtype=int)
            if allowed.size == 0:
                continue
            k = counts[:, t].sum()
            trial = (sums[:, t, None] + P[:, allowed, t]) / (k + 1)       # [N, len(allowed)]
            trial_scores = column_scores(Y[:, t], trial)
            best = int(np.argmax(trial_scores))
            m = int(allowed[best])
            add(t, m, sums[:, t] + P[:, m, t], float(trial_scores[best]))

    W = np.zeros((n_members, 2))
    for t in (0, 1):
        best_counts = max(history[t], key=lambda h: h[0])[1]
        W[:, t] = best_counts / best_counts.sum()
    return W


def _project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v[k]`` onto {a >= 0, sum(a) = 1}."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u - css / np.arange(1, v.size + 1) > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1), 0.0)


def _wls_start(Pt: np.ndarray, y: np.ndarray, n_iter: int = 300) -> np.ndarray:
    """Non-negative weighted least squares ``min_a sum |y| (y - Pc a)^2``
    (w-centred, so intercept free) by projected gradient on the [k, k] Gram
    matrix, normalised to the simplex. Uniform if every coefficient is 0."""
    k = Pt.shape[1]
    w = np.maximum(np.abs(y), WEIGHT_FLOOR)
    w = w / w.sum()
    Pc = Pt - w @ Pt
    yc = y - w @ y
    G = (Pc * w[:, None]).T @ Pc                                         # [k, k]
    b = (Pc * w[:, None]).T @ yc                                         # [k]
    lip = np.linalg.eigvalsh(G)[-1]
    if lip <= 0:
        return np.full(k, 1.0 / k)
    a = np.full(k, 1.0 / k)
    for _ in range(n_iter):
        a = np.maximum(a - (G @ a - b) / lip, 0.0)
    return a / a.sum() if a.sum() > 0 else np.full(k, 1.0 / k)


def _metric_and_grad(Pt: np.ndarray, y: np.ndarray, a: np.ndarray) -> tuple[float, np.ndarray]:
    """Weighted Pearson of ``clip(Pt @ a)`` against ``y`` and its gradient in
    ``a[k]`` (zero through clipped rows, the metric's own subgradient)."""
    p = Pt @ a
    inside = np.abs(p) < CLIP
    pc = np.clip(p, -CLIP, CLIP)
    w = np.maximum(np.abs(y), WEIGHT_FLOOR)
    w = w / w.sum()
    dt = y - w @ y
    dp = pc - w @ pc
    cov, vt, vp = w @ (dt * dp), w @ (dt * dt), w @ (dp * dp)
    if vt <= 0 or vp <= 0:
        return 0.0, np.zeros_like(a)
    r = cov / np.sqrt(vt * vp)
    g_rows = w * (dt / np.sqrt(vt * vp) - r * dp / vp) * inside
    return float(r), Pt.T @ g_rows


def _fit_target(Pt: np.ndarray, y: np.ndarray, n_iter: int = 60) -> np.ndarray:
    """Simplex weights ``[k]`` for one target: WLS start, then projected
    gradient ascent on the metric itself with a backtracking step."""
    k = Pt.shape[1]
    if k == 1:
        return np.ones(1)
    starts = [_wls_start(Pt, y), np.full(k, 1.0 / k)]
    a, r = max(((s, _metric_and_grad(Pt, y, s)[0]) for s in starts), key=lambda x: x[1])
    step = 0.5
    for _ in range(n_iter):
        r, g = _metric_and_grad(Pt, y, a)
        norm = np.linalg.norm(g)
        if norm < 1e-12:
            break
        while step > 1e-6:
            cand = _project_simplex(a + step * g / norm)
            r_cand = _metric_and_grad(Pt, y, cand)[0]
            if r_cand > r:
                a, step = cand, min(step * 2.0, 1.0)
                break
            step *= 0.5
        else:
            break
    return a


def _fit_subset(P: np.ndarray, Y: np.ndarray, subset: list[int]) -> tuple[np.ndarray, float]:
    """Fitted ``W[M, 2]`` over ``subset`` and its mean score on (P, Y)."""
    W = np.zeros((P.shape[1], 2))
    for t in (0, 1):
        W[subset, t] = _fit_target(P[:, subset, t], Y[:, t])
    blended = np.einsum("nmt,mt->nt", P, W)
    s = [column_scores(Y[:, t], blended[:, t, None])[0] for t in (0, 1)]
    return W, float(np.mean(s))


def _budgeted_members(P, Y, costs, budget) -> list[int]:
    """Forward selection of distinct members by marginal gain in mean score
    per unit cost, while the budget allows and the gain is positive."""
    chosen: list[int] = []
    current = -np.inf
    spent = 0.0
    while True:
        best = None
        for m in range(P.shape[1]):
            if m in chosen or spent + costs[m] > budget:
                continue
            _, s = _fit_subset(P, Y, chosen + [m])
            gain = s - current if chosen else s
            ratio = gain / max(costs[m], 1e-12)
            if gain > 0 and (best is None or ratio > best[0]):
                best = (ratio, m, s)
        if best is None:
            return chosen
        chosen.append(best[1])
        current, spent = best[2], spent + costs[best[1]]


def weighted_blend(P, Y, *, shrinkage=0.3, costs=None, budget=None) -> np.ndarray:
    """Non-negative weights per target that maximise the metric, shrunk
    toward uniform: ``w = (1 - s) * w_fit + s * uniform(selected)``.

    The fit is a non-negative weighted least-squares start refined by
    projected gradient on the metric. Without a budget every member is
    selected; under one, members are added greedily by marginal gain per cost
    (both targets share the set). Returns ``W[M, 2]``.
    """
    P, Y = check_inputs(P, Y)
    n_members = P.shape[1]
    costs = check_costs(costs, budget, n_members)
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    if budget is None:
        selected = list(range(n_members))
    else:
        if costs.min() > budget:
            raise BudgetError(f"no member fits the latency budget {budget:g} "
                              f"(cheapest costs {costs.min():g}); raise the budget")
        selected = _budgeted_members(P, Y, costs, budget)
        if not selected:
            selected = [int(np.argmax(member_scores(P, Y).mean(axis=1) - np.inf * (costs > budget)))]
    W_fit = _fit_subset(P, Y, selected)[0] if shrinkage < 1.0 else np.zeros((n_members, 2))
    return (1.0 - shrinkage) * W_fit + shrinkage * uniform_weights(n_members, selected)


def fit_post_scale(pred2, Y, grid=None) -> np.ndarray:
    """Per-target scalar ``scale[2]`` maximising the metric of ``scale * pred``.

    The metric is scale invariant except through the +-CLIP clip and the
    sign, so the search is a grid over both signs and magnitudes (1 always
    included, so the result never scores below no scaling on this data).
    Use it only when a cross-fitted check shows it helps on held-out rows.
    """
    pred2 = np.asarray(pred2, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if pred2.ndim != 2 or pred2.shape[1] != 2 or pred2.shape != Y.shape:
        raise ValueError(f"expected [N, 2] arrays, got {pred2.shape} and {Y.shape}")
    mags = np.geomspace(0.05, 20.0, 49) if grid is None else np.asarray(grid, dtype=np.float64)
    cands = np.unique(np.concatenate([[1.0], mags, -mags]))
    scale = np.ones(2)
    for t in (0, 1):
        s = column_scores(Y[:, t], pred2[:, t, None] * cands[None, :])
        best = int(np.argmax(s))
        if s[best] > s[cands == 1.0][0]:
            scale[t] = cands[best]
    return scale
