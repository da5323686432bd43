"""The real chain, end to end, where users keep their work: ``lobsweep full-search`` from a folder
150+ characters deep whose path contains a space.

Nothing is replaced: the real feature search, HPO sweep over all five families,
retraining, ensemble, packaging and step-by-step scoring run on a small
synthetic dataset at the smallest budget that still exercises every stage.
The test asserts on the zip, the printed report and the MLflow runs, then
runs the same command again and checks that every stage comes from the cache.
"""

from __future__ import annotations

import os
import shlex
import zipfile

import pytest

from lobsweep.data.synth import write_dataset
from lobsweep.models import list_models

# budgets far above what these counts need: the test checks the chain, not how a busy CI machine keeps time
SMALLEST = ["--profile", "smoke", "--families", "all", "--feature-samples", "2", "--num-samples", "1", "--max-epochs", "1",
            "--max-train-seqs", "16", "--top-k", "1", "--seeds", "1", "--retrain-epochs", "1",
            "--feature-budget", "900", "--hpo-budget", "1800"]


@pytest.mark.slow
def test_full_search_real_chain_from_a_deep_path_with_a_space(deep_dir, cli):
    home = deep_dir("my checkouts")
    data = os.path.join(home, "data")
    write_dataset(data, n_train=24, n_valid=16, seed=11)
    run_dir = os.path.join(home, "runs")
    env = {"MLFLOW_TRACKING_URI": "", "PREFECT_API_URL": "", "LOBSWEEP_RUN_DIR": ""}
    res = cli("full-search", "--data", data, "--run-dir", run_dir, *SMALLEST, cwd=home, env=env, timeout=1500)
    assert res.returncode == 0, res.stderr[-4000:]
    out = res.stdout

    for heading in ("== leaderboard", "== retrained members", "== ensemble comparison", "== submission",
                    "== MLflow"):
        assert heading in out, heading
    assert "report split: weighted pearson" in out and "% of the oracle" in out
    zip_line = next(line for line in out.splitlines() if line.startswith("zip: "))
    zip_path = zip_line[len("zip: "):].split(" (")[0]
    assert zip_path.startswith(run_dir) and os.path.isfile(zip_path)
    assert os.path.getsize(zip_path) <= 20_000_000
    with zipfile.ZipFile(zip_path) as z:
        assert "solution.py" in z.namelist()
    assert "Traceback" not in out + res.stderr
    log_line = next(line for line in out.splitlines() if "own output goes to" in line)
    assert os.path.isfile(log_line.split("goes to ")[1].split(" (-v")[0])       # Ray's and Prefect's noise
    assert "Checkpoint successfully created" not in out and "Token authentication" not in out + res.stderr
    ui = next(line for line in out.splitlines() if "mlflow ui --backend-store-uri" in line)
    assert shlex.split(ui.split("open the UI:")[1])[3] == f"sqlite:///{run_dir}/mlflow.db"   # pastes as is

    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{os.path.join(run_dir, 'mlflow.db')}")

    def runs(name: str):
        exp = client.get_experiment_by_name(name)
        assert exp is not None, f"no MLflow experiment {name!r}"
        return client.search_runs([exp.experiment_id])

    trials = [r for r in runs("hpo") if "mlflow.parentRunId" in r.data.tags]
    assert {r.data.tags["family"] for r in trials} == set(list_models())
    members = [r for r in runs("retrain") if "mlflow.parentRunId" in r.data.tags]
    assert {r.data.tags["family"] for r in members} == set(list_models())
    assert all(r.info.status == "FINISHED" for r in members)
    assert len(runs("feature-search")) >= 3                       # parent, the raw baseline, candidates
    [ens] = runs("ensemble")
    assert "ensemble.json" in {a.path for a in client.list_artifacts(ens.info.run_id)}
    [sub] = runs("submission")
    assert sub.data.tags["zip_path"] == zip_path and "report_mean" in sub.data.metrics

    again = cli("full-search", "--data", data, "--run-dir", run_dir, *SMALLEST, cwd=home, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    for stage in ("feature-search", "hpo", "retrain", "ensemble", "package", "score"):
        assert f"[{stage}] cached (inputs unchanged)" in again.stdout, stage
    assert f"zip: {zip_path}" in again.stdout


@pytest.mark.slow
def test_budgeted_full_search_ends_in_time_with_a_zip_never_below_its_floor(deep_dir, cli):
    """The default preset as a user runs it: ``--time-budget`` alone with ``--data`` (joint study,
    full-size recipes, adoption, the floor), from a path with a space; it ends within the budget
    plus its stated tolerance with a complete zip, and the ensemble's tune score is at least the
    floor's."""
    import json
    import time
    from lobsweep.flows.budget import TOLERANCE
    home = deep_dir("budget runs")
    data = os.path.join(home, "data")
    write_dataset(data, n_train=32, n_valid=16, seed=12)
    run_dir = os.path.join(home, "runs")
    env = {"MLFLOW_TRACKING_URI": "", "PREFECT_API_URL": "", "LOBSWEEP_RUN_DIR": ""}
    budget = 150
    t0 = time.time()
    res = cli("full-search", "--data", data, "--run-dir", run_dir, "--families", "gru,lstm",
              "--time-budget", f"{budget}s", cwd=home, env=env, timeout=1500)
    wall = time.time() - t0
    assert res.returncode == 0, res.stderr[-4000:]
    out = res.stdout
    assert "profile demo" in out and "one joint study" in out and "time budget 2:30" in out
    # the flow's own clock (start-up of the interpreter and Prefect aside) keeps the stated tolerance
    flow_s = float(out.split("\nflow ")[1].split(" s:")[0])
    assert flow_s <= budget * (1 + TOLERANCE), (flow_s, wall)
    assert "== time budget" in out and "started," in out and "cut by the budget" in out
    zip_path = next(line for line in out.splitlines() if line.startswith("zip: "))[5:].split(" (")[0]
    with zipfile.ZipFile(zip_path) as z:
        assert "solution.py" in z.namelist()
    pool = out.split("== retrained members (")[1].split(" bundles in ")[1].split(")")[0]
    floor = json.load(open(os.path.join(pool, "floor.json")))
    from lobsweep.search_spaces.recipes import RECIPES
    assert floor["recipe"] in RECIPES and floor["members"], floor           # the best recipe trial's members
    assert any(name.endswith("-trial") for name in os.listdir(pool))       # trials adopted as members
    spec_path = os.path.join(run_dir, "ensemble")
    [spec_file] = [os.path.join(r, f) for r, _, fs in os.walk(spec_path) for f in fs if f == "ensemble.json"]
    spec = json.load(open(spec_file))
    rows = {r["method"]: r for r in spec["table"]}
    assert "floor" in rows and spec["tune_score"] >= rows["floor"]["tune_cv_mean"] - 1e-12
    assert spec["reference"] in ("uniform", "floor")
