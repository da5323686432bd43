"""k-fold bagged members: folds, out-of-fold predictions, report kept out, ensemble on OOF rows,
packaging as one averaged member, import checks, and the synthetic train/valid shift."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from lobsweep.data.loader import load
from lobsweep.data.splits import split_roles
from lobsweep.data.synth import write_dataset
from lobsweep.ensemble.stage import format_table, run_ensemble
from lobsweep.errors import UserError
from lobsweep.training.bagging import assign_folds, folds_digest, load_folds, train_bagged_member
from lobsweep.training.bundle import load_bundle
from lobsweep.training.member import predict_bundle, train_member
from lobsweep.training.trainer import predict

torch.set_num_threads(1)
K = 3
HP = {"hidden": 8, "layers": 1}
CFG = {"epochs": 1, "batch_size": 4, "crop_len": 300, "burn_in": 50}


def bag(data, out, seed=0, final=False):
    return train_bagged_member(data, "gru", out, k=K, final=final, hparams=HP, train_cfg=CFG, seed=seed)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """16 train / 12 valid sequences (6 tune, 6 report); two bags of K=3 and one plain member."""
    root = tmp_path_factory.mktemp("bag")
    data = str(root / "data")
    write_dataset(data, n_train=16, n_valid=12, seed=3)
    paths = [bag(data, str(root / "pool" / f"gru-s{s}"), seed=s).path for s in (0, 1)]
    plain = train_member(data, "gru", str(root / "plain" / "gru"), hparams=HP, train_cfg=CFG, seed=0).path
    return {"root": root, "data": data, "pool": str(root / "pool"), "bags": paths, "plain": plain}


def test_assign_folds_grouped_stratified_balanced():
    sources = np.repeat([0, 1], [23, 7])
    f = assign_folds(sources, 3, seed=1)
    assert f.shape == (30,) and set(f) == {0, 1, 2}
    for s in (0, 1):                                       # every fold holds sequences of both files
        assert set(f[sources == s]) == {0, 1, 2}
    assert np.bincount(f).max() - np.bincount(f).min() <= 1
    assert np.array_equal(f, assign_folds(sources, 3, seed=1)) and not np.array_equal(f, assign_folds(sources, 3, 2))
    with pytest.raises(UserError, match="only 2"):
        assign_folds(np.repeat([0, 1], [10, 2]), 3)
    with pytest.raises(UserError, match=">= 2"):
        assign_folds(sources, 1)


def test_bag_holds_k_models_oof_and_report_stays_out(bags):
    b = load_bundle(bags["bags"][0])
    valid = load(os.path.join(bags["data"], "valid.parquet"))
    tune_idx, report_idx = split_roles(valid.seq_ix, 0.5, 0)
    folds = load_folds(b.path)
    assert b.n_models == K and len(b.build_models()) == K
    assert folds.size == 16 + tune_idx.size == b.spec["bag"]["pool"]["n_train"] + b.spec["bag"]["pool"]["n_valid"]
    w = torch.load(os.path.join(b.path, "weights.pt"), weights_only=True)
    assert {n.split(".")[0] for n in w} == {f"fold{j}" for j in range(K)}
    # out-of-fold: each pool sequence is predicted by the one model that did not fit on it
    prep_pipe = b.pipeline()
    train = load(os.path.join(bags["data"], "train.parquet"))
    X = np.concatenate([prep_pipe.transform(train.X), prep_pipe.transform(valid.X)[tune_idx]])
    mask = np.concatenate([train.mask, valid.mask[tune_idx]])
    oof = np.load(os.path.join(b.path, "oof_pred.npy"))
    assert oof.shape == (int(mask.sum()), 2)
    full = np.zeros(mask.shape + (2,), dtype=np.float32)
    full[mask] = oof
    models = b.build_models()
    for j in range(K):
        held = folds == j
        mine = predict(models[j], X[held])[mask[held]]
        other = predict(models[(j + 1) % K], X[held])[mask[held]]
        np.testing.assert_allclose(full[held][mask[held]], mine, atol=1e-5)
        assert np.abs(full[held][mask[held]] - other).max() > 1e-3
    # the valid predictions are the K models' average, on every valid row
    np.testing.assert_allclose(b.valid_pred, predict_bundle(b.path, os.path.join(bags["data"], "valid.parquet")),
                               atol=1e-5)
    assert "report_mean" in b.spec["metrics"] and b.spec["metrics"]["tune_mean"] == b.spec["metrics"]["oof_mean"]


def test_report_targets_do_not_reach_a_bag(bags, tmp_path):
    """Shuffling the report role's targets leaves the bag's weights and OOF predictions bit-identical."""
    alt = tmp_path / "data"
    shutil.copytree(bags["data"], alt)
    df = pd.read_parquet(alt / "valid.parquet")
    valid = load(str(alt / "valid.parquet"))
    _, report_idx = split_roles(valid.seq_ix, 0.5, 0)
    rows = df["seq_ix"].isin(valid.seq_ix[report_idx]).to_numpy()
    rng = np.random.default_rng(0)
    for t in ("t0", "t1"):
        df.loc[rows, t] = rng.permutation(df.loc[rows, t].to_numpy())
    df.to_parquet(alt / "valid.parquet", index=False)
    a, b = load_bundle(bags["bags"][0]), bag(str(alt), str(tmp_path / "bag"), seed=0)
    wa = torch.load(os.path.join(a.path, "weights.pt"), weights_only=True)
    wb = torch.load(os.path.join(b.path, "weights.pt"), weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert np.array_equal(np.load(os.path.join(a.path, "oof_pred.npy")), np.load(os.path.join(b.path, "oof_pred.npy")))
    assert a.spec["metrics"]["tune_mean"] == b.spec["metrics"]["tune_mean"]
    assert a.spec["metrics"]["report_mean"] != b.spec["metrics"]["report_mean"]


def test_ensemble_selects_on_oof_rows_and_packages_with_parity(bags, tmp_path):
    from lobsweep.submission.package import package_from_spec, parity_check, read_manifest
    s = run_ensemble(checkpoints=bags["pool"], run_dir=str(tmp_path / "runs"), n_boot=20, use_mlflow=False)
    spec = s["spec"]
    assert spec["selected_on"] == "oof" and spec["honest_report"] is True
    assert "chosen on oof" in format_table(spec)
    info = package_from_spec(s["spec_path"], str(tmp_path / "sub.zip"))
    assert info["n_members"] == len(spec["members"]) and info["n_models"] == K * len(spec["members"])
    folds = [m.get("fold") for m in read_manifest(str(tmp_path / "sub.zip"))["members"]]
    assert sorted(folds) == sorted(list(range(K)) * len(spec["members"]))
    r = parity_check(str(tmp_path / "sub.zip"), os.path.join(bags["data"], "valid.parquet"), max_rows=4000)
    assert r["parity_ok"] and r["max_abs_diff"] <= 1e-4
    # a bag and a plain member are not ensembled together
    mixed = tmp_path / "mixed"
    shutil.copytree(bags["bags"][0], mixed / "bag")
    shutil.copytree(bags["plain"], mixed / "plain")
    with pytest.raises(UserError, match="cannot be ensembled with plain"):
        run_ensemble(checkpoints=str(mixed), run_dir=str(tmp_path / "runs"), n_boot=20, use_mlflow=False)


def test_final_fit_says_it_has_no_honest_score(bags, tmp_path):
    b = bag(bags["data"], str(tmp_path / "final" / "gru"), final=True)
    assert b.spec["bag"]["final"] and "no honest score" in b.spec["note"]
    assert not any(k.startswith("report_") for k in b.spec["metrics"])
    assert load_folds(b.path).size == 16 + 12                   # report is in the pool
    s = run_ensemble(checkpoints=str(tmp_path / "final"), run_dir=str(tmp_path / "runs"), n_boot=20,
                     use_mlflow=False)
    assert s["spec"]["honest_report"] is False and "not an honest score" in format_table(s["spec"])
    from lobsweep.submission.package import package_from_spec, read_manifest
    info = package_from_spec(s["spec_path"], str(tmp_path / "final.zip"))
    assert "no honest score" in info["note"] and "no honest score" in read_manifest(info["path"])["note"]


def test_import_checkpoints_checks_the_fold_assignment(bags, tmp_path, cli):
    incoming = tmp_path / "incoming"
    shutil.copytree(bags["bags"][0], incoming / "good-bag")
    shutil.copytree(bags["bags"][1], incoming / "other-folds")
    other = incoming / "other-folds"
    folds = np.load(other / "folds.npy")
    folds[[0, 1]] = folds[[1, 0]] if folds[0] != folds[1] else (folds[[0, 1]] + 1) % K
    np.save(other / "folds.npy", folds)
    spec = json.load(open(other / "spec.json"))
    spec["bag"]["folds_digest"] = folds_digest(folds)            # consistent with itself, not with this pool
    json.dump(spec, open(other / "spec.json", "w"))
    run_dir = tmp_path / "runs"
    res = cli("import-checkpoints", str(incoming), "--data", bags["data"], "--no-event", "--no-mlflow",
              env={"LOBSWEEP_RUN_DIR": str(run_dir), "MLFLOW_TRACKING_URI": ""})
    assert res.returncode == 1, res.stderr
    assert "good-bag" in res.stdout and "fold assignment does not match" in res.stdout
    assert sorted(os.listdir(run_dir / "checkpoints" / "imported")) == ["good-bag"]


def test_retrain_folds_flags_fail_in_one_line(cli, tmp_path):
    for args, msg in ((["--final"], "need --folds"), (["--folds", "1"], "--folds must be >= 2")):
        res = cli("retrain", "--from", str(tmp_path / "nothing"), *args, env={"LOBSWEEP_RUN_DIR": str(tmp_path)})
        assert res.returncode != 0 and msg in res.stderr and "Traceback" not in res.stderr


def test_synth_valid_shift_moves_valid_only(tmp_path):
    a = write_dataset(tmp_path / "a", n_train=6, n_valid=30, seed=1)
    b = write_dataset(tmp_path / "b", n_train=6, n_valid=30, seed=1, valid_shift=1.0)
    assert open(a["paths"]["train"], "rb").read() == open(b["paths"]["train"], "rb").read()
    spread = {}
    for k, info in (("a", a), ("b", b)):
        v = load(info["paths"]["valid"])
        spread[k] = float(np.mean(v.X[..., 6] - v.X[..., 0]))              # best ask - best bid
    assert spread["b"] > 1.3 * spread["a"]
    with pytest.raises(UserError, match="valid_shift"):
        write_dataset(tmp_path / "c", n_train=6, n_valid=6, valid_shift=1.5)
    assert not os.path.exists(tmp_path / "c")


def test_retrain_with_folds_bags_the_leaderboard_configs(bags, tmp_path):
    """``run_retrain(..., folds=K)`` (what `lobsweep retrain --folds` and the flows call) makes one bag per job."""
    from lobsweep.tuning.retrain import run_retrain
    from lobsweep.tuning.leaderboard import build_leaderboard, write_leaderboard
    board = build_leaderboard([{"status": "completed", "bundle": bags["plain"], "trial_id": "t0", "family": "gru"}],
                              "sw", top_k=1)
    board["families"]["gru"][0]["train_config"] = {**board["families"]["gru"][0]["train_config"], **CFG}
    os.makedirs(tmp_path / "sw")
    write_leaderboard(str(tmp_path / "sw" / "leaderboard.json"), board)
    s = run_retrain(str(tmp_path / "sw"), top_k=1, seeds=1, folds=K, run_dir=str(tmp_path / "runs"), use_mlflow=False)
    assert len(s["bundles"]) == 1 and s["folds"] == K and not s["failed"]
    b = load_bundle(s["bundles"][0])
    assert b.n_models == K and b.spec["parent_trial"] == "t0" and b.spec["config"]["hidden"] == HP["hidden"]


def test_profiles_take_folds():
    from lobsweep.flows.profiles import resolve
    assert "folds" not in resolve("demo").retrain                  # plain seeds unless asked
    assert resolve("demo", folds=5).retrain["folds"] == 5
    with pytest.raises(UserError, match="folds"):
        resolve("demo", folds=1)
