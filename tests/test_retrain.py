"""The real retrain stage (Ray, MLflow, bundles), run from a deep run folder whose path has a space.

Two seeds of one tiny config; the second seed's bundle path is blocked by a
plain file, so that member fails the way a real path problem does. The other
member must still land, the failure must be reported, and a second attempt
with the same name must reuse the finished member instead of retraining it.
"""

from __future__ import annotations

import json
import os

import pytest

from lobsweep.data.synth import write_dataset
from lobsweep.tuning.retrain import run_retrain
from lobsweep.tuning.leaderboard import FORMAT as BOARD_FORMAT

TINY = {"hidden": 8, "layers": 1, "head": "linear", "input_proj": False}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("retrain-data")
    write_dataset(str(d), n_train=12, n_valid=8, seed=5)
    return str(d)


def leaderboard(tmp_path) -> str:
    entry = {"family": "gru", "trial_id": "t0", "hparams": TINY, "features": {}, "bundle": None,
             "train_config": {"epochs": 1, "batch_size": 4, "device": "cpu", "crop_len": 200, "burn_in": 20}}
    board = {"format": BOARD_FORMAT, "sweep": "tiny", "top_k": 1, "counts": {}, "families": {"gru": [entry]},
             "overall": [entry]}
    path = tmp_path / "leaderboard.json"
    path.write_text(json.dumps(board))
    return str(path)


@pytest.mark.slow
def test_retrain_lands_good_members_reports_failures_and_resumes(data_dir, tmp_path, deep_dir, capfd):
    run_dir = deep_dir("runs")
    board = leaderboard(tmp_path)
    pool = os.path.join(run_dir, "checkpoints", "rt-tiny")
    os.makedirs(pool)
    blocker = os.path.join(pool, "gru-t0-s1")
    open(blocker, "w").close()                  # seed 1's bundle cannot be written there

    first = run_retrain(board, top_k=1, seeds=2, data_dir=data_dir, run_dir=run_dir, name="rt-tiny")
    assert [os.path.basename(b) for b in first["bundles"]] == ["gru-t0-s0"]
    assert [f["name"] for f in first["failed"]] == ["gru-t0-s1"]
    assert "Error" in first["failed"][0]["error"]
    assert os.path.isfile(os.path.join(run_dir, "retrain", "rt-tiny", "retrain.json"))
    out = capfd.readouterr().out
    assert "gru-t0-s0: ok" in out and "gru-t0-s1: FAILED" in out
    good = os.path.join(pool, "gru-t0-s0", "weights.pt")
    stamp = os.stat(good).st_mtime_ns

    os.remove(blocker)                          # the problem is fixed; the same stage runs again
    second = run_retrain(board, top_k=1, seeds=2, data_dir=data_dir, run_dir=run_dir, name="rt-tiny")
    assert [os.path.basename(b) for b in second["bundles"]] == ["gru-t0-s0", "gru-t0-s1"]
    assert second["failed"] == []
    assert os.stat(good).st_mtime_ns == stamp  # reused, not retrained
    reused = {r["name"]: r.get("reused", False) for r in second["results"]}
    assert reused == {"gru-t0-s0": True, "gru-t0-s1": False}
    assert "1 of 2 members already in" in capfd.readouterr().out
