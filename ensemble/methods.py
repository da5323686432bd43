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

from lobsweep.errors import UserError

from .bootstrap import TargetMoments, member_scores, scaled_scores

__all__ = [
    "BudgetError",
    "blend",
    "uniform_weights",
    "greedy_selection",
    "weighted_blend",
    "fit_post_scale",
    "top_members_within_budget",
]


class BudgetError(UserError):
    """No member, or no requested ensemble, fits the latency budget."""


def check_inputs(P, Y) -> tuple[np.ndarray, np.ndarray]:
    """``P[N, M, 2]`` and ``Y[N, 2]`` as float64, or a ValueError naming the shapes."""
    P = np.asarray(P, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if P.ndim != 3 or P.shape[2] != 2 or Y.shape != (P.shape[0], 2) or P.shape[1] < 1:
        raise ValueError(f"expected P[N, M, 2] and Y[N, 2], got {P.shape} and {Y.shape}")
    return P, Y


def check_costs(costs, budget, n_members: int) -> np.ndarray | None:
    """Per-member costs ``[M]`` as float64 (None if not given), checked
    against the budget rules; a budget without costs is an error."""
    if costs is None:
        if budget is not None:
            raise UserError("a latency budget needs per-member costs (ms per step); pass costs")
        return None
    costs = np.asarray(costs, dtype=np.float64).ravel()
    if costs.shape != (n_members,) or np.any(costs < 0) or not np.all(np.isfinite(costs)):
        raise UserError(f"costs must be {n_members} finite non-negative numbers, got shape {costs.shape}")
    if budget is not None and not budget > 0:
        raise UserError(f"the latency budget must be positive, got {budget}")
    return costs


def blend(P, W, scale=None) -> np.ndarray:
    """Blended predictions ``[N, 2]`` from ``P[N, M, 2]``, ``W[M, 2]`` and an
    optional per-target post-scale ``[2]``."""
    out = np.einsum("nmt,mt->nt", np.asarray(P, dtype=np.float64), np.asarray(W, dtype=np.float64))
    return out if scale is None else out * np.asarray(scale, dtype=np.float64)[None, :]


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
    if not chosen:
        raise BudgetError(f"no member fits the latency budget {budget:g} "
                          f"(cheapest costs {costs.min():g}); raise the budget")
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
    n_members = P.shape[1]
    costs = check_costs(costs, budget, n_members)
    pool = np.arange(n_members) if candidates is None else np.unique(np.asarray(candidates, dtype=int))
    if pool.size == 0 or pool.min() < 0 or pool.max() >= n_members:
        raise ValueError(f"candidates must be non-empty indices in [0, {n_members})")
    if budget is not None and costs[pool].min() > budget:
        raise BudgetError(f"no candidate member fits the latency budget {budget:g} "
                          f"(cheapest costs {costs[pool].min():g}); raise the budget")

    moments = [TargetMoments(Y[:, t], P[:, :, t]) for t in (0, 1)]
    eye = np.eye(n_members)
    counts = np.zeros((n_members, 2))
    history = [[], []]                                                   # (score, counts) per target

    def fits(m: int) -> bool:
        used = counts.max(axis=1) > 0
        return budget is None or bool(used[m]) or costs[used].sum() + costs[m] <= budget

    def step(t: int, allowed: np.ndarray) -> None:
        """Add to target t the allowed member whose addition scores best."""
        trial = (counts[:, t, None] + eye[:, allowed]) / (counts[:, t].sum() + 1)   # [M, len(allowed)]
        scores = moments[t].score(trial)
        best = int(np.argmax(scores))
        counts[allowed[best], t] += 1
        history[t].append((float(scores[best]), counts[:, t].copy()))

    n_init = max(1, min(init_top, pool.size))
    for t in (0, 1):
        singles = moments[t].score(eye[:, pool])
        for m in pool[np.argsort(-singles, kind="stable")]:
            if np.count_nonzero(counts[:, t]) >= n_init:
                break
            if fits(m):
                step(t, np.array([m]))

    for _ in range(rounds):
        for t in (0, 1):
            allowed = np.array([m for m in pool if fits(m)], dtype=int)
            if allowed.size:
                step(t, allowed)

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


def _wls_start(mom: TargetMoments, n_iter: int = 300) -> np.ndarray:
    """Non-negative weighted least squares ``min_a sum |y| (y - Pc a)^2``
    (members and target w-centred, so intercept free) by projected gradient
    on the ``[k, k]`` Gram matrix, normalised to the simplex; uniform if every
    coefficient is 0."""
    k = mom.G_full.shape[0]
    lip = np.linalg.eigvalsh(mom.G_full)[-1]
    a = np.full(k, 1.0 / k)
    if lip <= 0:
        return a
    for _ in range(n_iter):
        a = np.maximum(a - (mom.G_full @ a - mom.c_full) / lip, 0.0)
    return a / a.sum() if a.sum() > 0 else np.full(k, 1.0 / k)


def _fit_target(mom: TargetMoments, n_iter: int = 100) -> np.ndarray:
    """Simplex weights ``[k]`` for one target: the better of a WLS start and
    uniform, then projected gradient ascent on the metric itself with a
    backtracking step."""
    k = mom.G.shape[0]
    if k == 1:
        return np.ones(1)
    starts = [_wls_start(mom), np.full(k, 1.0 / k)]
    a = max(starts, key=mom.score)
    step = 0.5
    for _ in range(n_iter):
        r, g = mom.score_and_grad(a)
        norm = np.linalg.norm(g)
        if norm < 1e-12:
            break
        while step > 1e-7:
            cand = _project_simplex(a + step * g / norm)
            if mom.score(cand) > r:
                a, step = cand, min(step * 2.0, 1.0)
                break
            step *= 0.5
        else:
            break
    return a


def _fit_subset(moments: list[TargetMoments], subset: list[int], n_members: int) -> tuple[np.ndarray, float]:
    """Fitted ``W[M, 2]`` over ``subset`` and its mean score on the fitted data."""
    W = np.zeros((n_members, 2))
    scores = []
    for t in (0, 1):
        mom = moments[t].subset(subset)
        W[subset, t] = _fit_target(mom)
        scores.append(mom.score(W[subset, t]))
    return W, float(np.mean(scores))


def _budgeted_members(moments, costs, budget) -> list[int]:
    """Forward selection of distinct members by marginal gain in mean score
    per unit cost, while the budget allows and the gain is positive."""
    chosen: list[int] = []
    current = 0.0
    spent = 0.0
    while True:
        best = None
        for m in range(costs.size):
            if m in chosen or spent + costs[m] > budget:
                continue
            _, s = _fit_subset(moments, chosen + [m], costs.size)
            ratio = (s - current) / max(costs[m], 1e-12)
            if s > current and (best is None or ratio > best[0]):
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
    moments = [TargetMoments(Y[:, t], P[:, :, t]) for t in (0, 1)]
    if budget is None:
        selected = list(range(n_members))
    else:
        if costs.min() > budget:
            raise BudgetError(f"no member fits the latency budget {budget:g} "
                              f"(cheapest costs {costs.min():g}); raise the budget")
        selected = _budgeted_members(moments, costs, budget)
        if not selected:
            affordable = np.where(costs <= budget, member_scores(P, Y).mean(axis=1), -np.inf)
            selected = [int(np.argmax(affordable))]
    W_fit = _fit_subset(moments, selected, n_members)[0] if shrinkage < 1.0 else np.zeros((n_members, 2))
    return (1.0 - shrinkage) * W_fit + shrinkage * uniform_weights(n_members, selected)


def fit_post_scale(pred2, Y, grid=None) -> np.ndarray:
    """Per-target scalar ``scale[2]`` maximising the metric of ``scale * pred``.

    The metric is scale invariant except through the +-CLIP clip and the
    sign, so the search is a grid over both signs and magnitudes (1 always
    included, so the result never scores below no scaling on this data;
    among equal scores the magnitude nearest 1 wins).
    Use it only when a cross-fitted check shows it helps on held-out rows.
    """
    pred2 = np.asarray(pred2, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if pred2.ndim != 2 or pred2.shape[1] != 2 or pred2.shape != Y.shape:
        raise ValueError(f"expected [N, 2] arrays, got {pred2.shape} and {Y.shape}")
    mags = np.geomspace(0.02, 50.0, 161) if grid is None else np.asarray(grid, dtype=np.float64)
    cands = np.unique(np.concatenate([[1.0], mags, -mags]))
    scale = np.ones(2)
    for t in (0, 1):
        s = scaled_scores(Y[:, t], pred2[:, t], cands)
        if s.max() > s[cands == 1.0][0]:
            tied = np.nonzero(s >= s.max() - 1e-12)[0]                  # prefer the scale nearest 1
            scale[t] = cands[tied[np.argmin(np.abs(np.log(np.abs(cands[tied]))))]]
    return scale
