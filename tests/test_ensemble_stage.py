"""The ensemble stage over bundles, and importing bundles trained elsewhere (real MLflow, sqlite)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from lobsweep.data.synth import write_dataset
from lobsweep.ensemble.stage import REGISTERED_MODEL, format_table, run_ensemble
from lobsweep.errors import UserError
from lobsweep.training.member import train_member

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A synthetic dataset and three small members (two GRU seeds and an LSTM)."""
    root = tmp_path_factory.mktemp("ens")
    data = str(root / "data")
    write_dataset(data, n_train=24, n_valid=16, seed=5)
    members = []
    for fam, seed in (("gru", 0), ("gru", 1), ("lstm", 0)):
        b = train_member(data, fam, str(root / "pool" / f"{fam}-s{seed}"), hparams={"hidden": 16, "layers": 1},
                         train_cfg={"epochs": 2, "batch_size": 4, "crop_len": 400, "burn_in": 50, "lr": 5e-3},
                         seed=seed)
        members.append(b.path)
    return {"root": root, "data": data, "pool": str(root / "pool"), "members": members}


def test_spec_table_and_honest_roles(pool, tmp_path):
    s = run_ensemble(checkpoints=pool["pool"], run_dir=str(tmp_path / "runs"), n_boot=50, use_mlflow=False)
    spec = json.load(open(s["spec_path"]))
    methods = [r["method"] for r in spec["table"]]
    assert methods == ["uniform", "greedy", "weighted", "best_single"]
    for r in spec["table"]:
        assert r["ci_lo"] <= r["mean"] <= r["ci_hi"]
        assert all(np.isfinite([r["t0"], r["t1"], r["mean"]]))
    W = np.array(spec["weights"])
    assert W.shape == (len(spec["members"]), 2) and np.allclose(W.sum(0), 1) and (W >= 0).all()
    assert spec["cost_ms_per_step"] <= spec["budget_ms_per_step"]
    costs = [json.load(open(os.path.join(m, "latency.json")))["ms_per_step"] for m in spec["members"]]
    assert spec["cost_ms_per_step"] == pytest.approx(sum(costs))          # the cost model: the members' sum
    assert spec["measured_ms_per_step"] > 0                               # and the fused engine, measured
    assert spec["fraction_of_oracle"] is not None
    assert spec["method"] in ("uniform", "greedy", "weighted")
    if spec["method"] != spec["chosen"]:
        assert spec["fell_back_to_uniform"] and "uniform" in spec["reason"]
    assert "<- used" in format_table(spec)


def test_tight_budget_gives_a_smaller_ensemble_that_fits(pool, tmp_path):
    loose = run_ensemble(checkpoints=pool["pool"], run_dir=str(tmp_path / "a"), n_boot=20, use_mlflow=False)
    costs = sorted(json.load(open(os.path.join(m, "latency.json")))["ms_per_step"] for m in pool["members"])
    # a budget that fits the cheapest member only: minutes = ms * 1500 seq * 1000 steps * safety / 60000
    minutes = (costs[0] + 0.5 * (costs[1] - costs[0])) * 1500 * 1000 * 2.0 / 60000 + 0.05 * 1500 * 1000 * 2 / 60000
    tight = run_ensemble(checkpoints=pool["pool"], run_dir=str(tmp_path / "b"), n_boot=20, use_mlflow=False,
                         budget_minutes=minutes)
    assert len(tight["spec"]["members"]) < len(pool["members"]) <= 3
    assert tight["spec"]["cost_ms_per_step"] <= tight["spec"]["budget_ms_per_step"]
    assert len(loose["spec"]["members"]) >= len(tight["spec"]["members"])


def test_mlflow_logging_and_champion_alias(pool, tmp_path):
    """The alias follows the tune score: a weak first ensemble holds it until a better one comes,
    and a weaker one after that is registered without taking it."""
    import mlflow
    from mlflow.tracking import MlflowClient
    run_dir = str(tmp_path / "runs")
    # an untrained member (learning rate 1e-9): about as weak as a model can be
    weak = tmp_path / "weak"
    train_member(pool["data"], "gru", str(weak / "untrained"), hparams={"hidden": 16, "layers": 1},
                 train_cfg={"epochs": 1, "batch_size": 4, "crop_len": 400, "burn_in": 50, "lr": 1e-9}, seed=3)
    first = run_ensemble(checkpoints=str(weak), run_dir=run_dir, n_boot=20)
    assert first["champion"] is True                        # the first ensemble registered takes the alias
    client = MlflowClient()                                  # run_ensemble points MLflow at run_dir's store
    second = run_ensemble(checkpoints=pool["pool"], run_dir=run_dir, n_boot=20)
    t1, t2 = first["spec"]["tune_score"], second["spec"]["tune_score"]
    assert t2 > t1 + 0.02, (t1, t2)                          # trained members beat the untrained one on tune
    assert second["champion"] is True and second["previous_champion_tune_mean"] == pytest.approx(t1)
    assert client.get_model_version_by_alias(REGISTERED_MODEL, "champion").run_id == second["mlflow_run_id"]
    third = run_ensemble(checkpoints=str(weak), run_dir=run_dir, n_boot=20)
    assert third["champion"] is False and third["previous_champion_tune_mean"] == pytest.approx(t2)
    assert client.get_model_version_by_alias(REGISTERED_MODEL, "champion").run_id == second["mlflow_run_id"]
    versions = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
    assert len(versions) == 3                                # every ensemble is registered, alias or not
    arts = {a.path for a in client.list_artifacts(second["mlflow_run_id"])}
    assert {"weights_per_target.png", "member_correlation.png", "comparison_table.png",
            "comparison_table.txt", "ensemble.json"} <= arts
    assert client.get_run(second["mlflow_run_id"]).data.metrics["tune_mean"] == pytest.approx(t2)
    assert mlflow.get_tracking_uri().startswith("sqlite:")


def _report_perturbed_load(how: str):
    """``load`` with the valid file's report-role targets shuffled across rows or noised.

    Done at the array level after loading: a rewritten parquet would change the
    valid fingerprint and every bundle would (rightly) be rejected.
    """
    from lobsweep.data.loader import load
    from lobsweep.data.splits import split_roles

    def patched(path, *a, **kw):
        data = load(path, *a, **kw)
        if os.path.basename(path) != "valid.parquet":
            return data
        _, rep = split_roles(data.seq_ix, 0.5, 0)
        Y = np.array(data.Y)
        rng = np.random.default_rng(7)
        sub = Y[rep]
        m = data.mask[rep]
        if how == "shuffle":
            sub[m] = sub[m][rng.permutation(int(m.sum()))]
        else:
            sub[m] = sub[m] + rng.normal(scale=3.0, size=sub[m].shape).astype(np.float32)
        Y[rep] = sub
        data.Y = Y
        return data
    return patched


DECISIONS = ("members", "weights", "post_scale", "method", "chosen", "fell_back_to_uniform", "reason",
             "tune_gain", "tune_score")


@pytest.mark.parametrize("how", ["shuffle", "noise"])
def test_report_targets_decide_nothing_in_the_stage(pool, tmp_path, monkeypatch, how):
    """Method, members, weights, post-scale and the champion alias are bit-identical when the
    report targets are perturbed; the report numbers change."""
    import lobsweep.ensemble.stage as stage
    weak = tmp_path / "weak"
    shutil.copytree(pool["members"][2], weak / "only")

    def world(name):
        run_dir = str(tmp_path / name)
        a = run_ensemble(checkpoints=pool["pool"], run_dir=run_dir, n_boot=20)
        b = run_ensemble(checkpoints=str(weak), run_dir=run_dir, n_boot=20)
        return a, b

    base = world("base")
    monkeypatch.setattr(stage, "load", _report_perturbed_load(how))
    alt = world("alt")
    for x, y in zip(base, alt):
        assert {k: x["spec"][k] for k in DECISIONS} == {k: y["spec"][k] for k in DECISIONS}
        assert x["champion"] == y["champion"]
        assert x["spec"]["report"]["mean"] != y["spec"]["report"]["mean"]


def test_import_checkpoints_accepts_good_rejects_bad(pool, tmp_path, cli):
    incoming = tmp_path / "incoming"
    shutil.copytree(pool["members"][0], incoming / "good")
    shutil.copytree(pool["members"][1], incoming / "wrong-data")
    spec = json.load(open(incoming / "wrong-data" / "spec.json"))
    spec["data"]["valid_fingerprint"] = "f" * 32
    json.dump(spec, open(incoming / "wrong-data" / "spec.json", "w"))
    shutil.copytree(pool["members"][2], incoming / "truncated")
    with open(incoming / "truncated" / "weights.pt", "r+b") as f:
        f.truncate(100)
    run_dir = tmp_path / "runs"
    res = cli("import-checkpoints", str(incoming), "--data", pool["data"], "--no-event",
              env={"LOBSWEEP_RUN_DIR": str(run_dir), "MLFLOW_TRACKING_URI": ""})
    assert res.returncode == 1, res.stderr                    # partial import
    out = res.stdout
    assert "imported" in out and "good" in out
    assert "wrong-data" in out and "not this valid file" in out
    assert "truncated" in out and "weights_only" in out
    imported = run_dir / "checkpoints" / "imported"
    assert sorted(os.listdir(imported)) == ["good"]
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("retrain").experiment_id])
    assert [r.data.tags.get("stage") for r in runs] == ["imported"]
    measured = json.load(open(imported / "good" / "latency.json"))["ms_per_step"]
    assert runs[0].data.metrics["ms_per_step"] == pytest.approx(measured)     # its cost, measured here
    # the ensemble reruns from the pool alone and includes the imported member
    s = run_ensemble(checkpoints=str(run_dir / "checkpoints"), run_dir=str(run_dir), n_boot=10, use_mlflow=False,
                     data_dir=pool["data"])
    assert any(p.endswith("imported/good") for p in s["spec"]["candidates"])


def test_ensemble_bad_inputs(pool, tmp_path):
    with pytest.raises(UserError, match="exactly one of"):
        run_ensemble(run_dir=str(tmp_path))
    with pytest.raises(UserError, match="no bundles"):
        os.makedirs(tmp_path / "empty")
        run_ensemble(checkpoints=str(tmp_path / "empty"), run_dir=str(tmp_path))
    with pytest.raises(UserError, match="budget"):
        run_ensemble(checkpoints=pool["pool"], budget_minutes=-1, run_dir=str(tmp_path))


def test_tune_from_train_end_to_end(pool, tmp_path):
    """Members whose tune split was carved out of train: selected on their train tune rows, reported on all of valid."""
    out = tmp_path / "carved"
    for seed in (0, 1):
        train_member(pool["data"], "gru", str(out / f"gru-s{seed}"), hparams={"hidden": 8, "layers": 1},
                     train_cfg={"epochs": 1, "batch_size": 4, "crop_len": 300, "burn_in": 50}, seed=seed,
                     prepare_kwargs={"tune_from": "train"})
    assert np.load(out / "gru-s0" / "tune_pred.npy").shape == (12 * 901, 2)   # 12 of 24 train sequences
    s = run_ensemble(checkpoints=str(out), run_dir=str(tmp_path / "runs"), n_boot=20, use_mlflow=False)
    spec = s["spec"]
    assert spec["selected_on"] == "tune-from-train" and spec["honest_report"] is True
    assert spec["oracle_report"] is not None and spec["fraction_of_oracle"] is not None
    assert "chosen on tune-from-train" in format_table(spec)
    # mixing carved-tune members with valid-tune members is refused in one line
    mixed = tmp_path / "mixed"
    shutil.copytree(out / "gru-s0", mixed / "a")
    shutil.copytree(pool["members"][0], mixed / "b")
    with pytest.raises(UserError, match="differ in tune_from"):
        run_ensemble(checkpoints=str(mixed), run_dir=str(tmp_path / "runs"), n_boot=20, use_mlflow=False)
