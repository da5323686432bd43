"""Search stage: the generic Ray Tune runner and the hyperparameter sweep built on it.

    run_sweep(data_dir, families, ...) -> summary dict    (sweep.py)
    load_leaderboard(name | sweep dir | file) -> dict      (leaderboard.json, read by retrain)
    run_experiment(builder, space, ctx, settings, ...)     (sweep.py: the feature search reuses it)

Importing this package does not import Ray, torch or MLflow.
"""

from .leaderboard import load_leaderboard
from .sweep import run_sweep

__all__ = ["load_leaderboard", "run_sweep"]
