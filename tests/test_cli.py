"""The command line end to end on tiny data: the JSON score contract, models table, one-line errors."""

from __future__ import annotations

import json
import os

from conftest import make_frame
from lobsweep.models import describe_models


def test_baseline_zip_scores_with_the_json_keys(tmp_path, cli):
    d = tmp_path / "data"
    d.mkdir()
    make_frame(3, seed=1).to_parquet(d / "train.parquet", index=False)
    make_frame(2, seed=2).to_parquet(d / "valid.parquet", index=False)
    zip_path = str(tmp_path / "baseline.zip")
    res = cli("baseline", "--data", str(d), "--out", zip_path)
    assert res.returncode == 0, res.stderr
    res = cli("score", zip_path, "--data", str(d), "--json")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    for key in ("t0", "t1", "weighted_pearson", "rows", "seconds", "ms_per_row", "projected_minutes_1500_seq"):
        assert key in out
    assert out["rows"] == 2 * 901 and "predictions" not in out
    assert out["weighted_pearson"] == (out["t0"] + out["t1"]) / 2


def test_models_table_lists_every_family_with_its_size(cli):
    res = cli("models")
    assert res.returncode == 0
    for name, n in describe_models():
        assert name in res.stdout and f"{n:,}" in res.stdout


def test_bad_parameters_are_one_line_and_write_nothing(tmp_path, cli):
    out = tmp_path / "synth"
    cases = [("synth", "--out", str(out), "--n-train", "1"),
             ("synth", "--out", str(out), "--n-train", "abc"),
             ("score", str(tmp_path / "missing.zip"), "--data", str(tmp_path)),
             ("ensemble", "--checkpoints", str(tmp_path / "nope"), "--no-mlflow"),
             ("leaderboard", "--stage", "hpo", "--top", "0")]
    for args in cases:
        res = cli(*args, env={"LOBSWEEP_RUN_DIR": str(tmp_path / "runs")})
        assert res.returncode == 2, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, (args, res.stderr)
    assert not os.path.exists(out)
