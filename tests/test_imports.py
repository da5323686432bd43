"""Importing bundles trained elsewhere: the split, the predictions and the latency are checked, not trusted."""

from __future__ import annotations

import json
import os
import platform
import shutil

import numpy as np
import pytest
import torch

from lobsweep.data.synth import write_dataset
from lobsweep.ensemble.imports import import_checkpoints
from lobsweep.training.member import train_member

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("imports")
    data = str(root / "data")
    write_dataset(data, n_train=10, n_valid=8, seed=7)
    b = train_member(data, "gru", str(root / "made-elsewhere"), hparams={"hidden": 8, "layers": 1, "head": "linear"},
                     train_cfg={"epochs": 1, "batch_size": 4, "crop_len": 200, "burn_in": 20, "device": "cpu"},
                     seed=0)
    return {"data": data, "bundle": b.path}


def incoming(tmp_path, trained, name: str, edit=None) -> str:
    dest = tmp_path / "incoming" / name
    shutil.copytree(trained["bundle"], dest)
    if edit:
        edit(str(dest))
    return str(dest)


def edit_spec(fn):
    def edit(path):
        spec = json.load(open(os.path.join(path, "spec.json")))
        fn(spec)
        json.dump(spec, open(os.path.join(path, "spec.json"), "w"))
    return edit


def tamper_predictions(path):
    p = np.load(os.path.join(path, "valid_pred.npy"))
    np.save(os.path.join(path, "valid_pred.npy"), (p[::-1] * 1.5).astype(np.float32))


def foreign_latency(path):
    json.dump({"format": "lobsweep.latency/1", "engine": "whatever", "ms_per_step": 1e-6, "host": "kaggle-box"},
              open(os.path.join(path, "latency.json"), "w"))


def test_imports_check_split_predictions_and_latency(trained, tmp_path):
    incoming(tmp_path, trained, "good", foreign_latency)
    incoming(tmp_path, trained, "other-split", edit_spec(lambda s: s["data"]["split"].update(seed=3)))
    incoming(tmp_path, trained, "tune-from-train", edit_spec(lambda s: s["data"]["split"].update(tune_from="train")))
    incoming(tmp_path, trained, "stale-preds", tamper_predictions)
    run_dir = tmp_path / "runs"
    res = import_checkpoints(str(tmp_path / "incoming"), trained["data"], run_dir=str(run_dir), use_mlflow=False,
                             emit=False)
    reasons = {os.path.basename(r["bundle"]): r["reason"] for r in res["rejected"]}
    assert sorted(reasons) == ["other-split", "stale-preds", "tune-from-train"]
    assert "role split" in reasons["other-split"] and "report" in reasons["other-split"]
    assert "role split" in reasons["tune-from-train"]
    assert "not what its weights predict" in reasons["stale-preds"]
    [good] = res["accepted"]
    assert good["pred_max_abs_diff"] < 1e-5
    latency = json.load(open(os.path.join(good["bundle"], "latency.json")))
    assert latency["host"] == platform.node() and latency["ms_per_step"] == good["ms_per_step"] > 1e-3
    assert sorted(os.listdir(run_dir / "checkpoints" / "imported")) == ["good"]


def test_pool_with_another_split_rejects_default_split_bundles(trained, tmp_path):
    run_dir = tmp_path / "runs"
    resident = run_dir / "checkpoints" / "local" / "m0"
    shutil.copytree(trained["bundle"], resident)
    edit_spec(lambda s: s["data"]["split"].update(tune_frac=0.25))(str(resident))
    incoming(tmp_path, trained, "default-split")
    incoming(tmp_path, trained, "quarter", edit_spec(lambda s: s["data"]["split"].update(tune_frac=0.25)))
    res = import_checkpoints(str(tmp_path / "incoming"), trained["data"], run_dir=str(run_dir), use_mlflow=False,
                             emit=False)
    assert [os.path.basename(a["bundle"]) for a in res["accepted"]] == ["quarter"]
    assert [os.path.basename(r["bundle"]) for r in res["rejected"]] == ["default-split"]
