"""Ensemble selection over saved member predictions, as pure functions.

Inputs are member predictions ``P[N, M, 2]`` on the tune and report splits,
targets ``Y[N, 2]`` and sequence ids ``groups[N]``; outputs are weights
``W[M, 2]`` per target (non-negative, each column sums to 1) and an optional
per-target post-scale ``[2]``. Packaging and tracking live elsewhere.

- ``methods``: uniform, greedy (Caruana) and fitted-blend weights, each
  optionally under a latency budget (sum of distinct members' costs).
- ``bootstrap``: the metric in moment form, vectorised, and the sequence
  bootstrap CI.
- ``selection``: sequence-grouped cross-fitting, ``select_ensemble`` and its
  ``EnsembleReport`` (with the fall-back to uniform), ``budget_from_minutes``.
"""

from .bootstrap import bootstrap_ci, bootstrap_ci_per_target, bootstrap_scores, column_scores, member_scores
from .methods import (
    BudgetError,
    blend,
    fit_post_scale,
    greedy_selection,
    top_members_within_budget,
    uniform_weights,
    weighted_blend,
)
from .selection import (
    METHODS,
    EnsembleReport,
    MethodResult,
    budget_from_minutes,
    crossfit,
    group_folds,
    select_ensemble,
)

__all__ = [
    "METHODS", "BudgetError", "EnsembleReport", "MethodResult",
    "blend", "bootstrap_ci", "bootstrap_ci_per_target", "bootstrap_scores", "budget_from_minutes",
    "column_scores", "crossfit", "fit_post_scale", "greedy_selection", "group_folds",
    "member_scores", "select_ensemble", "top_members_within_budget", "uniform_weights",
    "weighted_blend",
]
