"""Figures of the ensemble stage (logged to MLflow): weights, correlation, comparison table."""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def weights_figure(names: list[str], W: np.ndarray):
    """Horizontal bars of each member's weight, one panel per target. W [M, 2]."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 1.2 + 0.3 * len(names)), sharey=True)
    y = np.arange(len(names))
    for k, ax in enumerate(axes):
        ax.barh(y, W[:, k], color="tab:blue" if k == 0 else "tab:orange")
        ax.set_title(f"t{k} weights"), ax.set_xlim(0, max(1e-9, float(W.max())) * 1.1)
    axes[0].set_yticks(y, names, fontsize=7)
    fig.tight_layout()
    return fig


def correlation_figure(names: list[str], P: np.ndarray):
    """Correlation of member predictions per target. P [rows, M, 2]."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.6 * len(names), 2.5 + 0.3 * len(names)))
    for k, ax in enumerate(axes):
        c = np.corrcoef(P[:, :, k].T) if P.shape[1] > 1 else np.ones((1, 1))
        im = ax.imshow(c, vmin=min(0.0, float(np.nanmin(c))), vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_title(f"t{k} member correlation")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def table_figure(spec: dict):
    """Report-split score with 95% bootstrap CI per method, the used one highlighted."""
    plt = _plt()
    rows = spec["table"]
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.5 * len(rows)))
    y = np.arange(len(rows))
    means = np.array([r["mean"] for r in rows])
    lo = means - np.array([r["ci_lo"] for r in rows])
    hi = np.array([r["ci_hi"] for r in rows]) - means
    colors = ["tab:green" if r["method"] == spec["method"] else "tab:gray" for r in rows]
    ax.barh(y, means, xerr=[lo, hi], color=colors, capsize=3)
    ax.set_yticks(y, [f"{r['method']} ({r['n_members']})" for r in rows])
    ax.set_xlabel("report split mean weighted Pearson (95% sequence-bootstrap CI)")
    ax.set_title(f"used: {spec['method']} (chosen on tune: {spec['chosen']})")
    fig.tight_layout()
    return fig
