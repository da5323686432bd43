"""The feature-search stage: space -> valid specs, an honest proxy, importance, outputs and errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from lobsweep.data.splits import split_roles
from lobsweep.errors import UserError
from lobsweep.features import FeaturePipeline
from lobsweep.search_spaces.adapter import encode_value, to_optuna
from lobsweep.tuning.feature_proxy import ProxyRun, ProxySettings
from lobsweep.tuning.feature_search import parse_budget, run_feature_search
from lobsweep.tuning.feature_space import (GROUPS, MADE_BY, SPACE, all_on_config, groups_on, sample_config,
                                           spec_from_config)
from lobsweep.tuning.importance import derangement, group_columns, permutation_importance

torch.set_num_threads(1)
TINY_PROXY = dict(max_epochs=2, max_train_seqs=8, crop_len=128)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from lobsweep.data.synth import write_dataset
    d = tmp_path_factory.mktemp("fsdata")
    write_dataset(str(d), n_train=24, n_valid=12, seed=0)
    return str(d)


# ------------------------------------------------------------------ the space
def _configs(n=300):
    rng = np.random.default_rng(0)
    yield all_on_config()
    for flags in range(2 ** len(GROUPS)):                  # every on/off pattern, other values random
        yield {**sample_config(rng), **{g: bool(flags >> i & 1) for i, g in enumerate(GROUPS)}}
    for _ in range(n):
        yield sample_config(rng)


def test_every_space_sample_maps_to_a_valid_pipeline_spec():
    to_optuna(SPACE)                                        # every dimension is well formed for the searcher
    X = np.random.default_rng(1).normal(1.0, 0.1, size=(3, 40, 32)).astype(np.float32)
    for i, cfg in enumerate(_configs()):
        spec = spec_from_config(cfg)
        assert spec == spec_from_config({k: encode_value(v) for k, v in cfg.items()})   # as Optuna hands it back
        pipe = FeaturePipeline.from_spec(json.loads(json.dumps(spec)))                    # binds every column name
        on = set(groups_on(spec))
        assert on <= {g for g in GROUPS if cfg[g]}
        used = list((spec.get("temporal") or {}).get("inputs", []))
        used += [c for pair in (spec.get("interactions") or {}).get("pairs", []) for c in pair]
        assert all(MADE_BY.get(c) in (None, *on) for c in used), (cfg, spec)   # a group that is off stays off
        if i < 20:
            F = pipe.fit(X).transform(X)
            assert F.shape == (3, 40, pipe.n_features_out) and np.isfinite(F).all()
            raw = set() if spec["normalize"].get("drop_raw") else {"raw"}
            assert set(pipe.groups().values()) == raw | on
    seen = [spec_from_config(c)["normalize"] for c in _configs()]
    assert {n["method"] for n in seen} == {"global", "warmup", "none"}       # the search can choose each
    assert any(n.get("drop_raw") for n in seen)


# ------------------------------------------------------------------ the proxy is honest
def _with_targets_changed(src: str, dst: str, which: str) -> str:
    """Copy the data folder; replace the targets of the valid file's ``which`` split with noise."""
    os.makedirs(dst)
    shutil.copy(os.path.join(src, "train.parquet"), dst)
    df = pd.read_parquet(os.path.join(src, "valid.parquet"))
    ids = pd.unique(df["seq_ix"])
    tune_idx, report_idx = split_roles(np.asarray(ids))
    rows = df["seq_ix"].isin(ids[report_idx if which == "report" else tune_idx]).to_numpy()
    rng = np.random.default_rng(7)
    for t in ("t0", "t1"):
        df.loc[rows, t] = rng.standard_t(3, rows.sum()).astype(np.float32)
    df.to_parquet(os.path.join(dst, "valid.parquet"), index=False)
    return dst


def _proxy_outcome(data_dir: str, spec: dict):
    run = ProxyRun(data_dir, spec, ProxySettings(**TINY_PROXY))
    history = [run.step() for _ in range(TINY_PROXY["max_epochs"])]
    final = run.finish(None)
    weights = {k: v.clone() for k, v in run.model.state_dict().items()}
    return [h["tune_mean"] for h in history], final, weights


def test_proxy_never_uses_the_report_split(synth_dir, tmp_path):
    spec = spec_from_config(all_on_config())
    base_hist, base_final, base_w = _proxy_outcome(synth_dir, spec)
    hist, final, w = _proxy_outcome(_with_targets_changed(synth_dir, str(tmp_path / "rep"), "report"), spec)
    assert hist == base_hist and final == base_final
    assert all(torch.equal(w[k], base_w[k]) for k in w)
    assert not any(k.startswith("report") for k in final)
    # the same change to the tune split does move the score: the comparison above can see a leak
    hist_t, _, _ = _proxy_outcome(_with_targets_changed(synth_dir, str(tmp_path / "tune"), "tune"), spec)
    assert hist_t != base_hist


# ------------------------------------------------------------------ permutation importance
def test_permutation_importance_is_zero_for_unused_groups_and_positive_for_the_used_one():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 60, 5)).astype(np.float32)
    Y = np.stack([X[..., 0] + 0.1 * rng.normal(size=(12, 60)), X[..., 1] - X[..., 0]], -1).astype(np.float32)
    mask = np.ones((12, 60), dtype=bool)
    names = [f"f{i}" for i in range(5)]
    cols = group_columns({"f0": "a", "f1": "b", "f2": "c", "f3": "c", "f4": "b"}, names)
    assert {g: c.tolist() for g, c in cols.items()} == {"a": [0], "b": [1, 4], "c": [2, 3]}
    predict = lambda Z: np.stack([Z[..., 0], Z[..., 1] - Z[..., 0]], -1)      # never reads group c
    res = permutation_importance(predict, X, Y, mask, cols, n_repeats=2)
    assert res["groups"]["c"]["importance"] == 0.0
    assert res["groups"]["a"]["importance"] > 0.3 and res["groups"]["b"]["importance"] > 0.1
    assert res["groups"]["b"]["n_features"] == 2
    for n in (2, 3, 17):
        p = derangement(n, rng)
        assert sorted(p.tolist()) == list(range(n)) and not (p == np.arange(n)).any()


# ------------------------------------------------------------------ budget and user errors
def test_parse_budget():
    assert parse_budget(None) == {} and parse_budget("5") == {"num_samples": 5}
    assert parse_budget("samples=4,epochs=2,seqs=32,crop=0,time=2m") == {
        "num_samples": 4, "max_epochs": 2, "max_train_seqs": 32, "crop_len": 0, "time_budget_s": 120.0}
    for bad in ("samples=x", "foo=1", "epochs", "time=0", "time=5d", "samples=-1"):
        with pytest.raises(UserError, match="--budget"):
            parse_budget(bad)


@pytest.mark.parametrize("kwargs", [dict(num_samples=0), dict(max_epochs=0), dict(crop_len=10),
                                    dict(max_train_seqs=0), dict(time_budget_s=-1)])
def test_bad_settings_fail_before_anything_is_written(synth_dir, tmp_path, kwargs):
    with pytest.raises(UserError):
        run_feature_search(synth_dir, run_dir=str(tmp_path / "runs"), **kwargs)
    assert not (tmp_path / "runs").exists()


def _cli(*args, cwd):
    code = "import sys; from lobsweep.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "feature-search", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_bad_budget_or_missing_data_is_one_line_exit_2(synth_dir, tmp_path):
    before = sorted(os.listdir(synth_dir))
    for args, needle in ((["--data", synth_dir, "--budget", "samples=two"], "--budget"),
                         (["--data", synth_dir, "--budget", "epochs=0"], "epochs"),
                         (["--data", str(tmp_path / "nope")], "train.parquet")):
        r = _cli(*args, "--run-dir", str(tmp_path / "runs"), cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("lobsweep feature-search: error:")
        assert os.listdir(tmp_path) == [] and sorted(os.listdir(synth_dir)) == before


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_search_writes_the_winner_logs_mlflow_and_the_importance_plot(synth_dir, tmp_path):
    from mlflow.tracking import MlflowClient
    n = 3
    res = run_feature_search(synth_dir, name="t", num_samples=n, max_epochs=2, max_train_seqs=16, crop_len=128,
                             run_dir=str(tmp_path / "runs"), local_cpus=2)
    out = tmp_path / "runs" / "feature_search"
    best = json.load(open(res["best_features"]))
    latest = json.load(open(out / "latest.json"))
    assert latest["path"] == res["best_features"] == str(out / "t" / "best_features.json")
    pipe = FeaturePipeline.from_spec(best["spec"])
    trials = json.load(open(out / "t" / "trials.json"))
    done = [t for t in trials if t["status"] == "completed"]
    assert len(trials) == n and done
    assert isinstance(best["raw_proxy_tune_mean"], float) and best["raw_n_features"] == 32
    top = max(t["proxy_tune_mean"] for t in done)
    assert best["proxy_tune_mean"] == max(top, best["raw_proxy_tune_mean"])    # the search pays for itself
    if top > best["raw_proxy_tune_mean"]:
        assert best["n_features"] == next(t for t in done if t["trial_id"] == best["trial_id"])["metrics"]["n_features"]
        assert set(best["importance"]) == {"raw", *groups_on(best["spec"])}
    else:
        assert best["trial_id"] == "raw-baseline" and best["spec"] == {} and "raw inputs" in best["raw_kept"]
    assert pipe.spec == best["spec"]

    client = MlflowClient(res["mlflow"]["tracking_uri"])
    runs = client.search_runs([res["mlflow"]["experiment_id"]])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == res["mlflow"]["parent_run_id"]]
    assert [p.info.run_id for p in parents] == [res["mlflow"]["parent_run_id"]]
    assert len(children) == n + 1 and all(r.data.tags["stage"] == "feature-search" for r in runs)
    for r in children:
        assert {"proxy_tune_mean", "n_features", "tune_mean"} <= set(r.data.metrics)
        assert r.info.status == "FINISHED"
    raw = [r for r in children if r.data.tags.get("role") == "raw-baseline"]
    assert len(raw) == 1 and raw[0].data.metrics["proxy_tune_mean"] == pytest.approx(best["raw_proxy_tune_mean"])
    parent = parents[0]
    assert parent.data.metrics["raw_proxy_tune_mean"] == pytest.approx(best["raw_proxy_tune_mean"])
    assert parent.data.metrics["proxy_tune_mean"] == pytest.approx(best["proxy_tune_mean"])
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "best_features.json" in arts
    if best["trial_id"] != "raw-baseline":
        png = client.download_artifacts(parent.info.run_id, "importance.png", str(tmp_path))
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_budget_too_short_for_any_candidate_keeps_the_raw_pipeline_instead_of_failing(synth_dir, tmp_path):
    res = run_feature_search(synth_dir, name="short", num_samples=2, max_epochs=3, max_train_seqs=16, crop_len=128,
                             run_dir=str(tmp_path / "runs"), local_cpus=2, time_budget_s=1.0, track=False)
    best = json.load(open(res["best_features"]))
    assert best["spec"] == {} and best["trial_id"] == "raw-baseline"
    assert best["proxy_tune_mean"] == best["raw_proxy_tune_mean"]
    assert "no candidate finished within the budget" in best["raw_kept"]
