"""Quality bar: the default GRU learns the planted signal within a CI-sized CPU budget.

On ``synth --n-train 512 --n-valid 128`` the ``gru`` default config (about 211K
parameters) on the raw z-normalised features must reach 70% of the oracle's mean
score on the report split, and clearly beat a per-step ridge regression on the
same 32 raw features (which cannot see history). Budget: 6 epochs of 400-step
crops, about 1-3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lobsweep.data.metric import score_masked
from lobsweep.data.synth import write_dataset
from lobsweep.training.member import train_member
from lobsweep.training.prepare import oracle_scores, prepare

BUDGET = {"epochs": 6, "batch_size": 16, "crop_len": 400, "burn_in": 100, "lr": 3e-3, "loss": "mse"}


def ridge_report_score(prep, lam: float = 1e-3) -> dict:
    """Per-step ridge on the current 32 z-normalised raw features, fit on fit rows, scored on report."""
    X = prep.fit.X[prep.fit.mask].astype(np.float64)
    Y = prep.fit.Y[prep.fit.mask].astype(np.float64)
    A = np.c_[X, np.ones(len(X))]
    coef = np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ Y)
    R = prep.report
    P = np.c_[R.X.reshape(-1, R.X.shape[-1]), np.ones(R.X.shape[0] * R.X.shape[1])] @ coef
    return score_masked(R.Y, P.reshape(R.X.shape[:2] + (2,)).astype(np.float32), R.mask)


@pytest.mark.slow
def test_default_gru_reaches_70_percent_of_oracle(tmp_path):
    torch.set_num_threads(2)
    data = str(tmp_path / "data")
    write_dataset(data, n_train=512, n_valid=128, seed=0)
    prep = prepare(data, {})
    oracle = oracle_scores(prep)["report"]["mean"]
    ridge = ridge_report_score(prep)["mean"] / oracle

    b = train_member(data, "gru", str(tmp_path / "gru"), train_cfg=BUDGET, seed=0, prep=prep)
    frac = b.spec["metrics"]["fraction_of_oracle"]
    print(f"gru default: {100 * frac:.1f}% of oracle on report; per-step ridge {100 * ridge:.1f}%")
    assert b.spec["n_params"] == pytest.approx(211_000, rel=0.03)
    assert frac >= 0.70
    assert ridge <= 0.60
    assert frac >= ridge + 0.2
