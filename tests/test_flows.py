"""The Prefect flows: caching across runs, reruns of changed stages, retries, parameter checks.

The flow runs happen in-process against one ``prefect_test_harness`` server per
session. The three expensive stages (feature search, HPO sweep, retraining) are
replaced by stand-ins that write the same files the real ones do and count
their calls, so the test sees exactly which stages ran; ensemble, packaging,
scoring and the MLflow submission run are real, on two tiny trained bundles.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import importlib.util
import tomllib
import time

import numpy as np
import pandas as pd
import pytest
import torch

from lobsweep.cli import main as cli_main
from lobsweep.data.synth import write_dataset
from lobsweep.errors import UserError
from lobsweep.flows import identity, profiles, tasks
from lobsweep.training.member import train_member
from lobsweep.tuning.leaderboard import FORMAT as BOARD_FORMAT

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@pytest.fixture(scope="session")
def harness():
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("flows-data")
    write_dataset(str(d), n_train=16, n_valid=12, seed=1)
    return str(d)


@pytest.fixture(scope="module")
def bundles(data_dir, tmp_path_factory) -> list[str]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("flows-bundles")
    return [train_member(data_dir, "gru", str(root / f"gru-s{s}"), hparams={"hidden": 8, "layers": 1, "head": "linear"},
                         train_cfg={"epochs": 1, "batch_size": 8, "device": "cpu"}, seed=s,
                         prepare_kwargs={"max_train_seqs": 8}).path for s in range(2)]


class StandIns:
    """Feature search, sweep and retrain that write their real outputs from fixed bundles, counting calls."""

    def __init__(self, bundles):
        self.bundles, self.calls = bundles, {"feature-search": 0, "hpo": 0, "retrain": 0}
        self.budgets = {}                    # the stage budget each stand-in was given (seconds or None)
        self.called_at = {}                  # when each stand-in was called (time.time())

    def feature_search(self, data_dir, *, name, run_dir, **kw):
        self.calls["feature-search"] += 1
        self.budgets["feature-search"] = kw.get("time_budget_s")
        d = os.path.join(run_dir, "feature_search", name)
        os.makedirs(d)
        json.dump({"spec": {}}, open(os.path.join(d, "best_features.json"), "w"))
        return {"name": name}

    def sweep(self, data_dir, families, *, name, run_dir, **kw):
        self.calls["hpo"] += 1
        self.budgets["hpo"] = kw.get("time_budget_s")
        d = os.path.join(run_dir, "sweeps", name)
        os.makedirs(d, exist_ok=True)
        board = {"format": BOARD_FORMAT, "sweep": name, "top_k": 1, "counts": {}, "families": {}, "overall": []}
        path = os.path.join(d, "leaderboard.json")
        json.dump(board, open(path, "w"))
        return {"name": name, "sweep_dir": d, "leaderboard": path, "counts": {}, "n_trials": 0,
                "budget_exhausted": False, "mlflow": {}, "table": "stand-in leaderboard"}

    def retrain(self, leaderboard, *, run_dir, name, **kw):
        self.calls["retrain"] += 1
        self.budgets["retrain"] = kw.get("time_budget_s")
        self.called_at["retrain"] = time.time()
        out = os.path.join(run_dir, "checkpoints", name)
        results = []
        for b in self.bundles:
            dest = os.path.join(out, os.path.basename(b))
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(b, dest)
            results.append({"ok": True, "name": os.path.basename(b), "family": "gru", "seed": 0,
                            "metrics": json.load(open(os.path.join(b, "spec.json")))["metrics"]})
        return {"bundles_dir": out, "bundles": [r["name"] for r in results], "failed": [], "results": results}


@pytest.fixture
def stand_ins(bundles, monkeypatch):
    s = StandIns(bundles)
    monkeypatch.setattr("lobsweep.tuning.feature_search.run_feature_search", s.feature_search)
    monkeypatch.setattr("lobsweep.tuning.sweep.run_sweep", s.sweep)
    monkeypatch.setattr("lobsweep.tuning.retrain.run_retrain", s.retrain)
    return s


def ran(out) -> dict:
    return {st["stage"]: not st["cached"] for st in out["steps"]}


def test_full_search_is_cached_and_reruns_what_changed(harness, stand_ins, data_dir, tmp_path, capsys, caplog):
    from mlflow.tracking import MlflowClient
    from lobsweep.flows.full_search import full_search
    run_dir = str(tmp_path / "runs")
    kw = dict(data_dir=data_dir, run_dir=run_dir, families="gru", profile="smoke")

    caplog.set_level("INFO")
    first = full_search(**kw)
    assert all(ran(first).values()) and len(ran(first)) == 8
    zip_path = first["package"]["zip"]
    assert os.path.isfile(zip_path) and zip_path.startswith(run_dir)
    from lobsweep.data.loader import load
    from lobsweep.data.splits import split_roles
    valid = load(os.path.join(data_dir, "valid.parquet"))
    _, report = split_roles(valid.seq_ix)
    assert 0 < len(report) < len(valid.seq_ix)
    assert first["score"]["rows"] == int(valid.mask[report].sum())   # the report split's rows, every one
    printed = capsys.readouterr().out + caplog.text                  # stdout, or the flow run log
    for needle in ("stand-in leaderboard", "chosen on tune", "% of the oracle", f"zip: {zip_path}",
                   f"mlflow ui --backend-store-uri sqlite:///{run_dir}/mlflow.db --host 127.0.0.1"):
        assert needle in printed
    client = MlflowClient(tracking_uri=first["tracking_uri"])
    sub = client.get_run(first["submission_run"]["run_id"])
    assert sub.data.metrics["report_mean"] == pytest.approx(first["score"]["weighted_pearson"])
    assert "fraction_of_oracle" in sub.data.metrics and sub.data.tags["zip_path"] == zip_path
    assert "submission.zip" in [a.path for a in client.list_artifacts(sub.info.run_id)]

    second = full_search(**kw)
    assert not any(v for k, v in ran(second).items() if k != "data")
    assert stand_ins.calls == {"feature-search": 1, "hpo": 1, "retrain": 1}
    assert second["package"]["zip"] == zip_path and second["score"] == first["score"]

    third = full_search(**kw, budget_minutes=30.0)                     # an ensemble input changed
    assert ran(third) == {"data": True, "ensemble": True, "package": True, "score": True, "log-submission": True,
                          "feature-search": False, "hpo": False, "retrain": False}
    assert stand_ins.calls == {"feature-search": 1, "hpo": 1, "retrain": 1}

    train = os.path.join(data_dir, "train.parquet")
    st = os.stat(train)
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))      # the data changed: everything reruns
    fourth = full_search(**kw, budget_minutes=30.0, score=False)
    assert all(ran(fourth).values()) and "score" not in ran(fourth)
    assert stand_ins.calls == {"feature-search": 2, "hpo": 2, "retrain": 2}


def test_time_budget_is_shared_out_reported_and_does_not_break_the_cache(harness, stand_ins, data_dir, tmp_path,
                                                                           capsys, caplog):
    from mlflow.tracking import MlflowClient
    from lobsweep.flows.budget import FINISH_MIN_S, SHARES
    from lobsweep.flows.full_search import full_search
    kw = dict(data_dir=data_dir, run_dir=str(tmp_path / "runs"), families="gru", profile="smoke", time_budget="10m")
    caplog.set_level("INFO")
    t0 = time.time()
    first = full_search(**kw)
    b = stand_ins.budgets
    # the stand-ins return at once, so each stage's share of the time left is near its full share;
    # the smoke profile's own stage budgets (feature search 60 s, HPO 200 s) stay caps
    assert b["feature-search"] == 60.0                          # min(60, 15/95 of ~570 s)
    assert b["hpo"] == 200.0                                    # min(200, 45/80 of ~570 s)
    reserve = max(600 * SHARES["finish"], FINISH_MIN_S)         # the last training stage: all but finishing's
    left = 600 - (stand_ins.called_at["retrain"] - t0)         # at most this much had passed
    assert left - reserve - 1e-6 <= b["retrain"] <= 600 - reserve
    out = capsys.readouterr().out + caplog.text                 # stdout, or the flow run log
    assert "time budget 10:00" in out and "== time budget" in out
    client = MlflowClient(tracking_uri=first["tracking_uri"])
    arts = {a.path for a in client.list_artifacts(first["submission_run"]["run_id"])}
    assert "time_budget.json" in arts
    second = full_search(**kw)                                  # allotments differ, the cache still hits
    assert not any(v for k, v in ran(second).items() if k != "data"), ran(second)
    assert stand_ins.calls == {"feature-search": 1, "hpo": 1, "retrain": 1}
    third = full_search(**{**kw, "time_budget": "20m"})        # another budget is another run
    assert ran(third)["hpo"] and stand_ins.calls["hpo"] == 2


@pytest.mark.parametrize("exc, retried", [
    (UserError("bad value"), False), (ValueError("a bug"), False),
    (FileNotFoundError("runs/retrain/rt-1/retrain.json.tmp"), False), (PermissionError("read-only run folder"), False),
    (NotADirectoryError("run folder is a file"), False),
    (ConnectionRefusedError("tracking server down"), True), (TimeoutError(), True)])
def test_only_transient_errors_are_retried(harness, exc, retried):
    from prefect import flow
    calls = []

    @tasks.stage_task("flaky", retries=2, cache=False)
    def flaky():
        calls.append(1)
        raise exc

    @flow
    def once() -> bool:
        return flaky.with_options(retry_delay_seconds=0)(return_state=True).is_failed()

    assert once() and len(calls) == (3 if retried else 1)


def test_lost_ray_workers_are_transient_but_errors_raised_inside_tasks_are_judged_by_their_cause():
    from ray import exceptions as rex
    assert tasks.is_transient(rex.WorkerCrashedError())
    assert tasks.is_transient(rex.NodeDiedError("node gone"))
    for cause, transient in ((UserError("bad spec"), False), (FileNotFoundError("no folder"), False),
                             (ValueError("a bug"), False), (ConnectionResetError("server hung up"), True)):
        wrapped = rex.RayTaskError("train_member", "traceback", cause).as_instanceof_cause()
        assert tasks.is_transient(wrapped) is transient, cause


@pytest.mark.parametrize("args, needle", [
    (["--profile", "huge"], "unknown profile 'huge'"),
    (["--num-samples", "0"], "num_samples must be a whole number >= 1"),
    (["--families", "gru,nope"], "unknown model family 'nope'"),
    (["--resources", "cpu=0"], "cpu must be > 0"),
    (["--tracking-uri", "mlflow.db"], "--tracking-uri must be a URI"),
    (["--ray-address", "head node"], "--ray-address must be host:port"),
    (["--data", "/no/such/folder"], "/no/such/folder: not a directory"),
    (["--time-budget", "5 parsecs"], "--time-budget must look like 300, 90s, 5m or 2h"),
])
def test_bad_parameters_fail_in_one_line_before_anything_is_written(args, needle, tmp_path, capsys):
    run_dir = tmp_path / "runs"
    rc = cli_main(["full-search", "--run-dir", str(run_dir), *args])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not run_dir.exists()


def test_flow_checks_parameters_before_any_work(tmp_path):
    from lobsweep.flows.full_search import full_search
    from lobsweep.flows.stages import ensemble_flow
    with pytest.raises(UserError, match="max_epochs"):
        full_search.fn(run_dir=str(tmp_path / "a"), max_epochs=0)
    with pytest.raises(UserError, match="checkpoints must be a folder"):
        ensemble_flow.fn(checkpoints=str(tmp_path / "missing"), run_dir=str(tmp_path / "b"))
    assert os.listdir(tmp_path) == []


def test_smoke_profile_is_small_and_every_sample_builds_a_model():
    import itertools
    from lobsweep.models import create_model, list_models
    from lobsweep.search_spaces import sweep_space
    s = profiles.resolve("smoke")
    assert set(s.families) == set(list_models()) == set(profiles.SMOKE_SPACES)
    assert s.hpo["train_fixed"]["crop_len"] <= 256 and s.hpo["max_epochs"] <= 3 and s.retrain["seeds"] == 2
    for fam, space in s.hpo["spaces"].items():
        sweep_space(fam, **space)                                    # every key is a real field
        choices = {k: d["values"] for k, d in space["model"].items()}
        for combo in itertools.product(*choices.values()):
            model = create_model(fam, **dict(zip(choices, combo)))
            assert sum(p.numel() for p in model.parameters()) < 60_000
    full = profiles.resolve("full", max_epochs=2)
    assert full.hpo["grace_period"] == 2 and "spaces" not in full.hpo           # the families' own spaces
    assert full.resources["gpu"] > 0 and full.hpo["max_train_seqs"] is None


def test_identity_changes_when_a_file_is_rewritten_not_when_read(data_dir, bundles, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(data_dir, d)
    before = identity.data_identity(str(d))
    pd.read_parquet(d / "valid.parquet")
    assert identity.data_identity(str(d)) == before
    shutil.copy(d / "valid.parquet", d / "copy.parquet")
    os.replace(d / "copy.parquet", d / "valid.parquet")
    assert identity.data_identity(str(d)) != before
    pool = tmp_path / "pool"
    shutil.copytree(os.path.dirname(bundles[0]), pool)
    ids = identity.bundles_identity(str(pool))
    assert sorted(ids) == sorted(os.path.basename(b) for b in bundles)
    (pool / os.path.basename(bundles[0]) / "latency.json").write_text("{}")   # added by the ensemble stage
    assert identity.bundles_identity(str(pool)) == ids


def test_report_split_file_holds_the_report_sequences_whole_and_in_order(data_dir, tmp_path):
    from lobsweep.data.splits import split_roles
    valid = pd.read_parquet(os.path.join(data_dir, "valid.parquet"))
    out = tasks.write_report_split(os.path.join(data_dir, "valid.parquet"), {"tune_frac": 0.5, "seed": 0},
                                   str(tmp_path / "report.parquet"))
    rep = pd.read_parquet(out)
    ids = pd.unique(valid["seq_ix"])
    _, report_idx = split_roles(ids, 0.5, 0)
    assert list(pd.unique(rep["seq_ix"])) == [i for i in ids if i in set(ids[report_idx])]
    assert (rep.groupby("seq_ix").size() == 1000).all()
    np.testing.assert_array_equal(rep.to_numpy(), valid[valid["seq_ix"].isin(ids[report_idx])].to_numpy())


def test_library_digest_covers_every_installed_subpackage():
    import lobsweep
    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as fh:
        setup = tomllib.load(fh)["tool"]["setuptools"]
    assert sorted(identity.library_roots()) == sorted(setup["package-dir"])       # every mapped folder
    roots = list(identity.library_roots().values())
    for pkg in setup["packages"]:                                  # nested ones (lobsweep.cli) lie inside one
        folder = importlib.util.find_spec(pkg).submodule_search_locations[0]
        assert any(os.path.commonpath([folder, r]) == r for r in roots), pkg
    assert identity.library_digest().startswith(lobsweep.__version__ + "-")


def _library_copy(dest) -> str:
    """The installed package layout (lobsweep/, lobsweep/data/, ...) copied from this checkout under ``dest``."""
    root = dest / "lib"
    for name, src in identity.library_roots().items():
        shutil.copytree(src, root / name.replace(".", os.sep), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return str(root)


ENSEMBLE_RUN = """
import sys, lobsweep.ensemble.methods as m
from lobsweep.flows.stages import ensemble_flow
print("library at", m.__file__)
for _ in range(int(sys.argv[4])):
    ensemble_flow(checkpoints=sys.argv[1], data_dir=sys.argv[2], run_dir=sys.argv[3], score=True)
"""


@pytest.mark.slow
def test_editing_the_library_reruns_the_stages_it_computes(harness, data_dir, bundles, tmp_path):
    from prefect.settings import PREFECT_API_URL
    lib = _library_copy(tmp_path)
    pool, run_dir = tmp_path / "pool", tmp_path / "runs"
    for b in bundles:
        shutil.copytree(b, pool / os.path.basename(b))
    env = {**os.environ, "PYTHONPATH": lib, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_LOGGING_LEVEL": "INFO"}

    def run(times: int) -> list[str]:
        r = subprocess.run([sys.executable, "-c", ENSEMBLE_RUN, str(pool), data_dir, str(run_dir), str(times)],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out = r.stdout + r.stderr
        assert f"library at {lib}" in out                              # the copy, not the checkout
        return [line.split("] ", 1)[1].split(" in ")[0] for line in out.splitlines()
                if any(f"[{st}] " in line for st in ("ensemble", "package", "score")) and " in " in line
                and ("cached" in line or "done" in line)]

    assert run(2) == ["done"] * 3 + ["cached (inputs unchanged)"] * 3     # same code: the second run is cached
    methods = os.path.join(lib, "lobsweep", "ensemble", "methods.py")
    with open(methods, "a") as fh:
        fh.write("\n\ndef _edited_after_the_first_run():\n    return 1\n")
    assert run(1) == ["done"] * 3                                         # edited library: recomputed


def test_precision_ships_a_compact_zip_behind_the_gate(harness, stand_ins, data_dir, tmp_path):
    """``precision`` reaches the ensemble's costs and the packager: a float16 zip that the score
    gate passed, scored step by step; a mode that does not exist is one line before anything runs."""
    from lobsweep.errors import UserError
    from lobsweep.flows.full_search import full_search
    from lobsweep.submission.package import read_manifest, zip_precisions
    run_dir = str(tmp_path / "runs")
    out = full_search(data_dir=data_dir, run_dir=run_dir, families="gru", profile="smoke", precision="float16")
    zip_path = out["package"]["zip"]
    assert zip_precisions(zip_path) == {"float16"} and out["package"]["precision"] == "float16"
    assert read_manifest(zip_path)["members"] and np.isfinite(out["score"]["weighted_pearson"])
    spec = json.load(open(out["ensemble"]["spec_path"]))
    assert spec["precision"] == "float16"                             # costs measured in the shipped mode
    with pytest.raises(UserError, match="precision must be one of"):
        full_search(data_dir=data_dir, run_dir=str(tmp_path / "bad"), families="gru", profile="smoke",
                    precision="bf16")
    assert not os.path.exists(str(tmp_path / "bad"))


def test_report_split_file_is_all_of_valid_when_tune_is_carved_from_train(data_dir, tmp_path):
    valid = pd.read_parquet(os.path.join(data_dir, "valid.parquet"))
    out = tasks.write_report_split(os.path.join(data_dir, "valid.parquet"),
                                   {"tune_frac": 0.5, "seed": 0, "tune_from": "train"}, str(tmp_path / "r.parquet"))
    np.testing.assert_array_equal(pd.read_parquet(out).to_numpy(), valid.to_numpy())
