"""Permutation importance of feature groups for a trained sequence model (replaces the seed's notebook).

Shapes: N sequences, T steps, F features.

For one group (the columns ``FeaturePipeline.groups()`` assigns to "raw",
"book", "trade", ...), the group's columns are swapped between sequences of
the split: sequence i gets the whole [T, |group|] block of sequence perm[i],
with perm a random permutation without fixed points. Each sequence keeps its
own other columns and the group keeps its marginal distribution and its
time structure; only the link between the group and the targets (and the
other groups) is broken. importance = base score - permuted score, in the
official metric, averaged over ``n_repeats`` permutations. A negative value
means the model did better without the group's information on this split.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..data.metric import score_masked


def group_columns(groups: dict[str, str], feature_names: list[str]) -> dict[str, np.ndarray]:
    """Group -> column indices into the feature axis, groups in first-seen order."""
    out: dict[str, list[int]] = {}
    for j, name in enumerate(feature_names):
        out.setdefault(groups[name], []).append(j)
    return {g: np.asarray(cols, dtype=np.intp) for g, cols in out.items()}


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(n) with no fixed point (n >= 2): a random cycle order, shifted by one."""
    order = rng.permutation(n)
    perm = np.empty(n, dtype=np.intp)
    perm[order] = np.roll(order, -1)
    return perm


def permutation_importance(predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray, Y: np.ndarray,
                           mask: np.ndarray, columns: dict[str, np.ndarray], n_repeats: int = 3,
                           seed: int = 0) -> dict:
    """Score drop per group when its columns are swapped across sequences.

    predict: X[N,T,F] -> P[N,T,2]; X, Y [N,T,2], mask [N,T] are one split
    (the tune split: the report split is never looked at).
    Returns ``{"base": score, "groups": {group: {"importance", "std", "n_features"}}}``.
    """
    X = np.asarray(X)
    if X.shape[0] < 2:
        raise ValueError("permutation importance needs at least 2 sequences to swap between")
    base = score_masked(Y, predict(X), mask)["mean"]
    rng = np.random.default_rng(seed)
    out = {}
    for group, cols in columns.items():
        drops = []
        for _ in range(max(1, int(n_repeats))):
            perm = derangement(X.shape[0], rng)
            Xp = np.array(X, copy=True)
            Xp[:, :, cols] = X[perm][:, :, cols]
            drops.append(base - score_masked(Y, predict(Xp), mask)["mean"])
        out[group] = {"importance": float(np.mean(drops)), "std": float(np.std(drops)), "n_features": int(len(cols))}
    return {"base": float(base), "groups": out}


def importance_figure(result: dict, title: str = ""):
    """Horizontal bars of importance per group (largest on top), error bars = std over repeats."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    items = sorted(result["groups"].items(), key=lambda kv: kv[1]["importance"])
    names = [f"{g} ({v['n_features']})" for g, v in items]
    vals = [v["importance"] for _, v in items]
    errs = [v["std"] for _, v in items]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(items) + 1.4))
    ax.barh(names, vals, xerr=errs, color=["tab:blue" if v >= 0 else "tab:red" for v in vals])
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(f"drop in tune score when shuffled (base {result['base']:.4f})")
    ax.set_title(title or "permutation importance per feature group", fontsize=9, wrap=True)
    fig.tight_layout()
    return fig
