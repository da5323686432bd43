"""Submission packaging: the zip streams the offline predictions, keeps the contract, fits the size limit.

Members are tiny real models (one per family, plus a GRU on a second feature
spec), trained one epoch on a small synthetic dataset once per session. Parity
runs through ``score_zip``: the real step-by-step scorer in an isolated process
behind the container import blocker. The clean-room test (slow) repeats it in a
fresh virtual environment that holds only the container's packages.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from lobsweep.cli import main as cli_main
from lobsweep.data.contract import FEATURE_COLS, WARMUP
from lobsweep.data.loader import load
from lobsweep.data.synth import write_dataset
from lobsweep.features import forward_fill
from lobsweep.models import list_models, tiny_hparams
from lobsweep.submission import cost
from lobsweep.submission.assemble import offline_predictions
from lobsweep.submission.package import PackageError, package, read_manifest
from lobsweep.submission.scorer import score_zip
from lobsweep.training.member import train_member

TOL = 1e-4
OTHER_FEATURES = {"book": {"levels": 2}, "trade": {"intensity_halflife": 10.0}}
TRAIN = {"epochs": 1, "batch_size": 8, "device": "cpu"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkg-data")
    write_dataset(str(d), n_train=16, n_valid=8, seed=0)
    return str(d)


@pytest.fixture(scope="session")
def valid_path(data_dir):
    return os.path.join(data_dir, "valid.parquet")


@pytest.fixture(scope="session")
def members(data_dir, tmp_path_factory) -> dict[str, str]:
    """Bundle dirs: one tiny member per family, and "gru_b" (a GRU on OTHER_FEATURES)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pkg-bundles")
    out = {}
    jobs = [(f, f, tiny_hparams(f), None) for f in list_models()] + [("gru_b", "gru", tiny_hparams("gru"),
                                                                      OTHER_FEATURES)]
    for seed, (name, family, hp, feats) in enumerate(jobs):
        b = train_member(data_dir, family, str(root / name), hparams=hp, train_cfg=TRAIN, features_spec=feats,
                         seed=seed, prepare_kwargs={"max_train_seqs": 8})
        out[name] = b.path
    return out


def streamed(zip_path, valid_path) -> np.ndarray:
    return score_zip(zip_path, valid_path, progress=False)["predictions"]


def test_every_registered_family_has_its_engine_block_by_name():
    from lobsweep.submission import engine
    from lobsweep.submission.engine_ops import BLOCKS
    assert engine.BLOCKS is BLOCKS and sorted(BLOCKS) == list_models()
    assert BLOCKS["gru_attention"].__name__ == "GRUAttentionGroup"


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("family", list_models())
def test_zip_streams_the_offline_predictions_of_every_family(family, members, valid_path, tmp_path):
    z = str(tmp_path / "one.zip")
    package([members[family]], z)
    P, ref = streamed(z, valid_path), offline_predictions([members[family]])
    assert P.shape == ref.shape
    assert np.abs(P - ref).max() <= TOL


@pytest.fixture(scope="module")
def mixed(members, tmp_path_factory):
    """(zip, member paths, weights, post_scale): every family + gru_b, two pipelines, uneven weights."""
    paths = [members[f] for f in list_models()] + [members["gru_b"]]
    rng = np.random.default_rng(0)
    weights = np.stack([rng.dirichlet(np.ones(len(paths))), rng.dirichlet(np.ones(len(paths)))], axis=1)
    post_scale = (1.3, 0.8)
    z = str(tmp_path_factory.mktemp("pkg-mixed") / "mixed.zip")
    info = package(paths, z, weights=weights, post_scale=post_scale)
    return z, paths, weights, post_scale, info


def test_mixed_ensemble_with_two_feature_specs_and_uneven_weights_matches_offline(mixed, valid_path):
    z, paths, weights, post_scale, info = mixed
    assert info["n_pipelines"] == 2 and info["n_members"] == len(paths)
    assert info["families"] == {**{f: 1 for f in list_models()}, "gru": 2}
    ref = offline_predictions(paths, weights, post_scale)
    # the reference depends on the weights, so matching it checks that the zip applies them
    assert np.abs(ref - offline_predictions(paths)).max() > 100 * TOL
    assert np.abs(streamed(z, valid_path) - ref).max() <= TOL


def test_zero_weight_members_are_left_out(members, tmp_path):
    paths = [members["gru"], members["lstm"], members["ssm"]]
    weights = np.array([[0.6, 0.3], [0.0, 0.0], [0.4, 0.7]])
    info = package(paths, str(tmp_path / "z.zip"), weights=weights)
    assert info["skipped"] == ["lstm"] and info["n_members"] == 2
    manifest = read_manifest(str(tmp_path / "z.zip"))
    assert [m["family"] for m in manifest["members"]] == ["gru", "ssm"]
    assert np.allclose(manifest["weights"], weights[[0, 2]])


@pytest.mark.parametrize("weights, msg", [
    (np.array([[0.5, 0.5], [0.6, 0.5]]), "sum to 1"),
    (np.array([[1.5, 0.5], [-0.5, 0.5]]), "non-negative"),
    (np.array([[1.0, 1.0]]), "[2, 2]"),
])
def test_bad_weights_are_refused(members, tmp_path, weights, msg):
    with pytest.raises(PackageError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        package([members["gru"], members["lstm"]], str(tmp_path / "z.zip"), weights=weights)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- contract
@pytest.fixture(scope="module")
def solution_cls(mixed, tmp_path_factory):
    """PredictionModel of the unpacked mixed zip, imported in this process."""
    d = tmp_path_factory.mktemp("pkg-unpacked")
    with zipfile.ZipFile(mixed[0]) as zf:
        zf.extractall(d)
    sys.path.insert(0, str(d))
    try:
        module = importlib.import_module("solution")
        yield module.PredictionModel
    finally:
        sys.path.remove(str(d))
        for name in [n for n in sys.modules if n.split(".")[0] in ("solution", "lsrt_engine", "lsrt_features")]:
            del sys.modules[name]


class Row:
    def __init__(self, seq_ix, step, state):
        self.seq_ix, self.step_in_seq, self.state = int(seq_ix), int(step), state
        self.need_prediction = step >= WARMUP


def run_sequence(model, seq_ix, X) -> list:
    return [model.predict(Row(seq_ix, t, X[t].copy())) for t in range(len(X))]


@pytest.fixture(scope="module")
def valid_data(valid_path):
    return load(valid_path)


def test_warmup_rows_return_none_and_later_rows_a_finite_pair(solution_cls, valid_data):
    out = run_sequence(solution_cls(), valid_data.seq_ix[0], valid_data.X[0])
    assert all(o is None for o in out[:WARMUP])
    assert all(isinstance(o, np.ndarray) and o.shape == (2,) and np.isfinite(o).all() for o in out[WARMUP:])


def test_state_resets_when_seq_ix_changes_even_with_unsorted_ids(solution_cls, valid_data):
    order = np.argsort(valid_data.seq_ix)[::-1][:3]            # ids fed in descending order
    model = solution_cls()
    for i in order[:2]:
        run_sequence(model, valid_data.seq_ix[i], valid_data.X[i])
    last = order[2]
    after_others = np.array(run_sequence(model, valid_data.seq_ix[last], valid_data.X[last])[WARMUP:])
    fresh = np.array(run_sequence(solution_cls(), valid_data.seq_ix[last], valid_data.X[last])[WARMUP:])
    np.testing.assert_array_equal(after_others, fresh)
    # the same rows under the previous id (no reset) give other values: the state really carries
    # (tiny one-epoch members forget fast, so the gap left after the warm-up is small but not rounding)
    model = solution_cls()
    run_sequence(model, valid_data.seq_ix[order[1]], valid_data.X[order[1]])
    carried = np.array(run_sequence(model, valid_data.seq_ix[order[1]], valid_data.X[last])[WARMUP:])
    assert np.abs(carried - fresh).max() > 1e-6


def test_nan_and_inf_rows_stay_finite_and_follow_the_fill_policy(solution_cls, valid_data):
    X = valid_data.X[1].copy()
    X[0, 3] = np.nan                      # before any finite value: filled with 0
    X[150, :] = np.nan                    # a whole row
    X[151, [0, 6, 12]] = np.inf
    X[400, [24, 28]] = -np.inf
    X[700:705, 5] = np.nan
    out = run_sequence(solution_cls(), 7, X)[WARMUP:]
    assert all(np.isfinite(o).all() for o in out)
    repaired = forward_fill(X[None].astype(np.float64))[0].astype(np.float32)
    np.testing.assert_allclose(np.array(out), np.array(run_sequence(solution_cls(), 7, repaired)[WARMUP:]),
                               rtol=0, atol=1e-6)


# ---------------------------------------------------------------- size limit and CLI
def test_too_big_package_is_refused_naming_the_members_to_drop(members, tmp_path):
    paths = [members["gru"], members["transformer"], members["ssm"]]
    weights = np.array([[0.45, 0.45], [0.1, 0.1], [0.45, 0.45]])     # transformer: lowest weight
    full = package(paths, str(tmp_path / "full.zip"), weights=weights)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    limit = full["bytes"] - full["member_bytes"]["transformer"] // 2
    with pytest.raises(PackageError) as err:
        package(paths, str(out_dir / "z.zip"), weights=weights, max_bytes=limit)
    msg = str(err.value)
    assert "\n" not in msg and "over the" in msg and "drop transformer" in msg
    assert "gru" not in msg.split("drop")[1] and "ssm" not in msg.split("drop")[1]
    assert os.listdir(out_dir) == []


def test_cli_packages_an_ensemble_spec_and_refuses_other_members(members, tmp_path, capsys):
    spec = {"format": "lobsweep.ensemble/1", "members": [members["gru"], members["lstm"]],
            "weights": [[0.7, 0.2], [0.3, 0.8]], "post_scale": [1.1, 0.9], "method": "test"}
    spec_path = tmp_path / "ensemble.json"
    spec_path.write_text(json.dumps(spec))
    z = tmp_path / "sub.zip"
    assert cli_main(["package", "--weights", str(spec_path), "--members",
                     f"{members['lstm']},{members['gru']}", "--out", str(z)]) == 0
    manifest = read_manifest(str(z))
    assert manifest["weights"] == spec["weights"] and manifest["post_scale"] == spec["post_scale"]
    assert "2 members" in capsys.readouterr().out
    assert cli_main(["package", "--weights", str(spec_path), "--members",
                     f"{members['gru']},{members['ssm']}", "--out", str(tmp_path / "other.zip")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "do not match" in err and "ssm" in err
    assert not (tmp_path / "other.zip").exists()


# ---------------------------------------------------------------- costs
def test_member_cost_is_measured_once_and_cached_in_the_bundle(members, tmp_path, monkeypatch):
    b = str(tmp_path / "gru")
    shutil.copytree(members["gru"], b)
    calls = []
    real = cost.time_engine
    monkeypatch.setattr(cost, "time_engine", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = cost.member_cost_ms(b, steps=150)
    assert first > 0 and len(calls) == 1
    record = json.load(open(os.path.join(b, cost.LATENCY_FILE)))
    assert record["ms_per_step"] == first and record["features_ms"] <= first
    assert cost.member_cost_ms(b, steps=150) == first and len(calls) == 1
    cost.member_cost_ms(b, steps=150, refresh=True)
    assert len(calls) == 2
    record["engine"] = "older-engine"
    json.dump(record, open(os.path.join(b, cost.LATENCY_FILE), "w"))
    cost.member_cost_ms(b, steps=150)
    assert len(calls) == 3
    assert np.isfinite(cost.ensemble_cost_ms([members["gru"], members["gru_b"]], steps=150))


# ---------------------------------------------------------------- clean room
CLEAN_PACKAGES = ("numpy", "pandas", "pyarrow", "onnxruntime")
PROBE = """
import json, sys
before = {n.split(".")[0] for n in sys.modules}
sys.path.insert(0, sys.argv[1])
from solution import PredictionModel
import numpy as np

class Row:
    def __init__(self, i):
        self.seq_ix, self.step_in_seq, self.need_prediction = 5, i, i >= 99
        self.state = np.linspace(0.99, 1.01, 32).astype(np.float32)

m = PredictionModel()
outs = [m.predict(Row(i)) for i in range(120)]
assert outs[0] is None and outs[-1].shape == (2,)
print(json.dumps(sorted({n.split(".")[0] for n in sys.modules} - before)))
"""


def clean_venv() -> str:
    """A venv holding only torch (local CPU build) and CLEAN_PACKAGES, cached under tests/_out/."""
    venv = os.path.join(ROOT, "tests", "_out", "cleanroom-venv")
    python, marker = os.path.join(venv, "bin", "python"), os.path.join(venv, "READY")
    if not os.path.exists(marker):
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", venv], check=True)
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)
        subprocess.run(pip + list(CLEAN_PACKAGES), check=True)
        open(marker, "w").close()
    return python


@pytest.mark.slow
def test_clean_room_venv_scores_the_zip_and_imports_only_allowed_modules(mixed, valid_path, tmp_path):
    python = clean_venv()
    for forbidden in ("lobsweep", "prefect", "ray", "mlflow", "sklearn", "threadpoolctl"):
        probe = subprocess.run([python, "-I", "-c", f"import {forbidden}"], capture_output=True, cwd=tmp_path)
        assert probe.returncode != 0, f"{forbidden} is importable in the clean venv"
    z, paths, weights, post_scale, _ = mixed
    sol = tmp_path / "solution"
    with zipfile.ZipFile(z) as zf:
        zf.extractall(sol)
    cfg = {"solution_dir": str(sol), "data_path": valid_path, "feature_cols": list(FEATURE_COLS), "max_rows": None,
           "pred_path": str(tmp_path / "pred.npy"), "result_path": str(tmp_path / "result.json")}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    worker = os.path.join(ROOT, "submission", "score_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([python, "-I", worker, str(tmp_path / "cfg.json")], cwd=sol, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=600)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ok"], result
    P = np.load(tmp_path / "pred.npy")
    assert np.abs(P - offline_predictions(paths, weights, post_scale)).max() <= TOL

    (tmp_path / "probe.py").write_text(PROBE)
    out = subprocess.run([python, "-I", str(tmp_path / "probe.py"), str(sol)], capture_output=True, text=True,
                         cwd=tmp_path, env=env, check=True)
    imported = set(json.loads(out.stdout.strip().splitlines()[-1]))        # by the zip, beyond start-up
    outside = imported - set(sys.stdlib_module_names) - {"solution", "lsrt_engine", "lsrt_features"}
    assert outside == {"numpy"}, f"the zip imported {sorted(outside)}"
