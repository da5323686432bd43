"""The trainer, losses and checkpoint bundles: properties, not just that code runs."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import make_frame
from lobsweep.data.metric import weighted_pearson_1d
from lobsweep.errors import UserError
from lobsweep.models import create_model
from lobsweep.training.bundle import BundleError, load_bundle, validate_bundle
from lobsweep.training.losses import make_loss, weighted_pearson
from lobsweep.training.member import predict_bundle, train_member
from lobsweep.training.trainer import Split, TrainConfig, Trainer, TrainingDiverged, fit

torch.set_num_threads(1)
TINY_GRU = {"hidden": 8, "layers": 1}


def tiny_split(n=6, T=160, F=5, seed=0):
    """Targets depend on an EMA of input 0, so a GRU can learn something."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, F)).astype(np.float32)
    ema = np.zeros((n, T), dtype=np.float32)
    for t in range(1, T):
        ema[:, t] = 0.8 * ema[:, t - 1] + 0.2 * X[:, t, 0]
    Y = np.stack([ema + 0.1 * rng.normal(size=(n, T)), 0.5 * ema + rng.normal(size=(n, T))], -1).astype(np.float32)
    mask = np.zeros((n, T), dtype=bool)
    mask[:, 20:] = True
    return Split(X, Y, mask)


def tiny_model(F=5, seed=0):
    torch.manual_seed(seed)
    return create_model("gru", n_features=F, **TINY_GRU)


# ------------------------------------------------------------------ losses
def test_pearson_loss_is_the_metric_without_clip():
    rng = np.random.default_rng(0)
    y = rng.standard_t(3, size=(500, 2))
    p = 0.3 * y + rng.normal(size=(500, 2))
    got = weighted_pearson(torch.tensor(p), torch.tensor(y)).numpy()
    for k in range(2):
        assert got[k] == pytest.approx(weighted_pearson_1d(y[:, k], p[:, k]), abs=1e-9)
    loss = make_loss("pearson", target_weights=(1.0, 0.0))(torch.tensor(p), torch.tensor(y))
    assert float(loss) == pytest.approx(-got[0], abs=1e-6)


def test_weighted_mse_weights_rows_by_abs_target():
    y = torch.tensor([[2.0, 1.0], [0.5, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # t0: (2*1 + 0.5*0.25) / 2.5, t1: (1 + 1) / 2
    expect = ((2 * 1 + 0.5 * 0.25) / 2.5 + 1.0) / 2
    assert float(make_loss("wmse")(p, y)) == pytest.approx(expect)


@pytest.mark.parametrize("bad", [{"name": "nope"}, {"name": "mse", "target_weights": (0, 0)}])
def test_bad_loss_options_are_user_errors(bad):
    with pytest.raises(UserError):
        make_loss(bad.pop("name"), **bad)


@pytest.mark.parametrize("opt", [{"lr": -1}, {"schedule": "linear"}, {"crop_len": 50, "burn_in": 60},
                                 {"epochs": 0}, {"bogus": 1}, {"ema_decay": 1.0}, {"plateau_factor": 1.5}])
def test_bad_train_options_are_user_errors(opt):
    with pytest.raises(UserError):
        TrainConfig.from_dict(opt)


# ------------------------------------------------------------------ trainer
def test_same_seed_same_history_and_learning():
    cfg = TrainConfig(epochs=3, batch_size=2, lr=1e-2, patience=5)
    runs = []
    for _ in range(2):
        res = fit(tiny_model(), cfg, tiny_split(), tiny_split(seed=1), tiny_split(seed=2), seed=7)
        runs.append(res)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in runs[0].history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in runs[1].history]
    assert runs[0].tune["t0"] > 0.3          # the EMA signal is learnable


@pytest.mark.parametrize("extra", [{}, {"ema_decay": 0.9, "schedule": "plateau", "plateau_patience": 0}])
def test_resume_from_state_dict_continues_exactly(tmp_path, extra):
    cfg = TrainConfig(epochs=3, batch_size=2, lr=1e-2, patience=5, **extra)
    a = Trainer(tiny_model(), cfg, tiny_split(), tiny_split(seed=1), seed=3)
    for _ in range(3):
        a.run_epoch()
    b = Trainer(tiny_model(), cfg, tiny_split(), tiny_split(seed=1), seed=3)
    b.run_epoch()
    torch.save(b.state_dict(), tmp_path / "ckpt.pt")
    c = Trainer(tiny_model(seed=99), cfg, tiny_split(), tiny_split(seed=1), seed=3)
    c.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    c.run_epoch()
    c.run_epoch()
    assert [h["tune_mean"] for h in c.history] == [h["tune_mean"] for h in a.history]
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, c.model.state_dict()[k])


def test_warmup_targets_do_not_enter_the_loss():
    cfg = TrainConfig(epochs=1, batch_size=3, lr=1e-2)
    train = tiny_split()
    changed = Split(train.X, train.Y.copy(), train.mask)
    changed.Y[~changed.mask] = 1e3                 # garbage where need_prediction is False
    m1, m2 = tiny_model(), tiny_model()
    fit(m1, cfg, train, tiny_split(seed=1), seed=0)
    fit(m2, cfg, changed, tiny_split(seed=1), seed=0)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])


def test_crops_with_burn_in_keep_burn_in_steps_out_of_the_loss():
    """Every target the loss sees lies at or after its crop's start + burn_in (and is scored);
    the step right after the burn-in does reach the loss, so the check is not vacuous."""
    burn_in, crop = 30, 80
    train = tiny_split()
    steps = Split(train.X, train.Y.copy(), train.mask)
    steps.Y[..., 0] = np.arange(train.Y.shape[1], dtype=np.float32)[None]    # t0 := the step index
    cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-2, crop_len=crop, burn_in=burn_in, loss="mse")
    trainer = Trainer(tiny_model(), cfg, steps, tiny_split(seed=1), seed=0)
    crops, seen = [], []
    batches, loss_fn = trainer._batches, trainer.loss_fn

    def recording_batches():
        for idx, start, L in batches():
            crops.append(start)
            yield idx, start, L

    def recording_loss(pred, y):
        seen.append((crops[-1], y[:, 0].detach().numpy().astype(int)))
        return loss_fn(pred, y)

    trainer._batches, trainer.loss_fn = recording_batches, recording_loss
    for _ in range(cfg.epochs):
        trainer.run_epoch()
    assert len(trainer.history) == 2 and np.isfinite(trainer.history[-1]["train_loss"])
    assert seen and len(seen) == len(crops)
    for start, t in seen:
        first = max(start + burn_in, 20)                  # need_prediction starts at step 20 in tiny_split
        assert t.min() >= first, (start, t.min())
        assert t.max() < start + crop
        assert first in t                                # the first step after the burn-in is trained on


def test_nan_loss_raises_diverged():
    train = tiny_split()
    bad = Split(train.X.copy(), train.Y, train.mask)
    bad.X[0, 50, 0] = np.nan
    with pytest.raises(TrainingDiverged):
        fit(tiny_model(), TrainConfig(epochs=1, batch_size=6), bad, tiny_split(seed=1))


def test_early_stopping_restores_best_epoch():
    cfg = TrainConfig(epochs=6, batch_size=2, lr=0.3, patience=1, schedule="constant")
    res = fit(tiny_model(), cfg, tiny_split(), tiny_split(seed=1), seed=0)
    best = max(h["tune_mean"] for h in res.history)
    assert res.tune["mean"] == pytest.approx(best, abs=1e-6)
    assert res.best_epoch == 1 + int(np.argmax([h["tune_mean"] for h in res.history]))


def test_plateau_schedule_cuts_the_lr_only_after_a_tune_plateau(monkeypatch):
    cfg = TrainConfig(epochs=5, batch_size=3, lr=1e-2, schedule="plateau", plateau_patience=1, patience=9)
    tr = Trainer(tiny_model(), cfg, tiny_split(), tiny_split(seed=1), seed=0)
    scores = iter([0.1, 0.2, 0.2, 0.2, 0.2])            # better, then flat
    monkeypatch.setattr(tr, "evaluate", lambda split: {"t0": 0.0, "t1": 0.0, "mean": next(scores)})
    lrs = [tr.run_epoch()["lr"] for _ in range(5)]
    # epochs 3 and 4 bring no progress, more than patience 1 -> epoch 5 trains at half the LR
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-2, 1e-2, 5e-3])
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(5e-3)


def test_ema_weights_are_what_is_scored_kept_and_saved():
    cfg = TrainConfig(epochs=2, batch_size=2, lr=2e-2, ema_decay=0.9, patience=5)
    tr = Trainer(tiny_model(), cfg, tiny_split(), tiny_split(seed=1), seed=0)
    tr.run_epoch()
    raw = {k: v.clone() for k, v in tr.model.state_dict().items()}
    ema = tr.ema.weights(tr.model)
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)      # the average is not the raw weights
    tr.model.load_state_dict(ema)
    assert tr.evaluate(tr.tune_split)["mean"] == pytest.approx(tr.history[-1]["tune_mean"], abs=1e-9)
    tr.model.load_state_dict(raw)
    tr.run_epoch()
    res = tr.finish()
    kept = tr.model.state_dict()
    assert res.best_epoch in (1, 2)
    if res.best_epoch == 2:
        assert all(torch.equal(kept[k], v) for k, v in tr.ema.weights(tr.model).items())
    else:
        assert all(torch.equal(kept[k], ema[k]) for k in kept)
    assert res.tune["mean"] == pytest.approx(tr.history[res.best_epoch - 1]["tune_mean"], abs=1e-9)


# ------------------------------------------------------------------ bundles
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    make_frame(4, seed=1).to_parquet(d / "train.parquet", index=False)
    make_frame(4, seed=2).to_parquet(d / "valid.parquet", index=False)
    return str(d)


@pytest.fixture(scope="module")
def tiny_bundle(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "gru"
    return train_member(tiny_data, "gru", str(out), hparams=TINY_GRU,
                        train_cfg={"epochs": 1, "batch_size": 2, "crop_len": 300, "burn_in": 50}, seed=0)


def test_bundle_contents_and_exact_reproduction(tiny_bundle, tiny_data):
    b = tiny_bundle
    assert sorted(os.listdir(b.path)) == ["spec.json", "valid_pred.npy", "weights.pt"]
    for key in ("family", "config", "features", "seed", "data", "history", "best_epoch", "metrics", "train_config"):
        assert key in b.spec
    assert b.valid_pred.shape == (4 * 901, 2)
    again = predict_bundle(b.path, os.path.join(tiny_data, "valid.parquet"))
    np.testing.assert_array_equal(again, b.valid_pred)
    assert b.spec["data"]["split"] == {"tune_frac": 0.5, "seed": 0, "tune_from": "valid"}


def test_bundle_validation_rejects_bad_bundles(tiny_bundle, tmp_path):
    import shutil
    ok = validate_bundle(tiny_bundle.path, tiny_bundle.spec["data"]["valid_fingerprint"], 4 * 901)
    assert ok.spec["family"] == "gru"
    with pytest.raises(BundleError, match="not this valid file"):
        validate_bundle(tiny_bundle.path, "0" * 32)

    evil = tmp_path / "evil"
    shutil.copytree(tiny_bundle.path, evil)

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))
    with open(evil / "weights.pt", "wb") as f:
        pickle.dump({"w": Payload()}, f)
    with pytest.raises(BundleError, match="weights_only"):
        validate_bundle(str(evil))

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle.path, broken)
    spec = json.load(open(broken / "spec.json"))
    del spec["family"]
    json.dump(spec, open(broken / "spec.json", "w"))
    with pytest.raises(BundleError, match="missing key 'family'"):
        load_bundle(str(broken))

    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_bundle.path, wrong)
    spec = json.load(open(wrong / "spec.json"))
    spec["config"]["hidden"] = 16
    json.dump(spec, open(wrong / "spec.json", "w"))
    with pytest.raises(BundleError, match="weights do not fit"):
        validate_bundle(str(wrong))


def test_train_and_predict_cli(tiny_data, tmp_path, cli):
    out = tmp_path / "bundle"
    res = cli("train", "--family", "gru", "--data", tiny_data, "--out", str(out), "--epochs", "1",
              "--set", "hidden=8", "--set", "layers=1", "--train-set", "crop_len=300", "--no-mlflow",
              env={"LOBSWEEP_RUN_DIR": str(tmp_path / "runs")})
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and os.path.exists(out / "weights.pt")
    res = cli("predict", str(out), "--data", tiny_data)
    assert res.returncode == 0 and "max |diff| vs valid_pred.npy = 0" in res.stdout

    for bad, frag in ((["--family", "nope"], "nope"), (["--family", "gru", "--set", "hidden=-3"], "hidden"),
                      (["--family", "gru", "--train-set", "lr=-1"], "lr")):
        res = cli("train", "--data", tiny_data, "--out", str(tmp_path / "x"), *bad,
                  env={"LOBSWEEP_RUN_DIR": str(tmp_path / "runs")})
        assert res.returncode == 2 and frag in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert not os.path.exists(tmp_path / "x")


def test_train_recipe_cli_trains_the_recipe_and_flags_still_override(tiny_data, tmp_path, cli):
    from lobsweep.search_spaces.recipes import get_recipe
    out = tmp_path / "vanilla"
    res = cli("train", "--recipe", "vanilla-gru-3x64", "--data", tiny_data, "--out", str(out), "--epochs", "1",
              "--set", "hidden=8", "--train-set", "crop_len=300", "--no-mlflow",
              env={"LOBSWEEP_RUN_DIR": str(tmp_path / "runs")})
    assert res.returncode == 0, res.stderr
    spec = json.load(open(out / "spec.json"))
    want = get_recipe("vanilla-gru-3x64")
    assert spec["family"] == "gru" and spec["recipe"] == "vanilla-gru-3x64"
    assert {**want["model"], "hidden": 8} == {k: spec["config"][k] for k in want["model"]}
    assert spec["train_config"]["crop_len"] == 300 and spec["train_config"]["epochs"] == 1
    for k in ("loss", "schedule", "batch_size", "patience", "weight_decay"):
        assert spec["train_config"][k] == want["train"][k]
    assert spec["features"]["spec"] == want["features"]                 # raw inputs, not z-normalised
    for bad, frag in ((["--recipe", "nope"], "unknown recipe 'nope'"),
                      (["--recipe", "default-lstm", "--family", "gru"], "is a lstm recipe"), ([], "--family")):
        res = cli("train", "--data", tiny_data, "--out", str(tmp_path / "x"), *bad,
                  env={"LOBSWEEP_RUN_DIR": str(tmp_path / "runs")})
        assert res.returncode == 2 and frag in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not os.path.exists(tmp_path / "x")
    res = cli("recipes")
    assert res.returncode == 0 and all(n in res.stdout for n in ("organiser-baseline", "pearson-gru-4x128",
                                                                  "default-ssm"))


def test_batches_gathered_from_host_memory_train_exactly_like_resident_data():
    runs = {}
    for placement in ("auto", "never"):
        cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-2, patience=5, data_on_device=placement)
        trainer = Trainer(tiny_model(), cfg, tiny_split(), tiny_split(seed=1), seed=3)
        assert trainer.resident is (placement == "auto")
        runs[placement] = fit(tiny_model(), cfg, tiny_split(), tiny_split(seed=1), seed=3)
    strip = lambda r: [{k: v for k, v in h.items() if k != "seconds"} for h in r.history]   # noqa: E731
    assert strip(runs["auto"]) == strip(runs["never"])


def test_time_limit_starts_no_epoch_that_would_end_past_it():
    unlimited = fit(tiny_model(), TrainConfig(epochs=4, batch_size=2, patience=9), tiny_split(), tiny_split(seed=1))
    assert len(unlimited.history) == 4
    one_epoch = sum(h["seconds"] for h in unlimited.history) / 4
    limited = fit(tiny_model(), TrainConfig(epochs=4, batch_size=2, patience=9, time_limit_s=1.5 * one_epoch),
                  tiny_split(), tiny_split(seed=1))
    assert 1 <= len(limited.history) < 4
    with pytest.raises(UserError, match="time_limit_s"):
        TrainConfig(time_limit_s=-1).check()
    with pytest.raises(UserError, match="data_on_device"):
        TrainConfig(data_on_device="gpu").check()


# ------------------------------------------------------------------ memory per training step
def test_micro_batches_add_up_to_the_whole_batch_gradient():
    """A limit that forces one sequence per pass trains (mse) the weights the whole batch does."""
    from lobsweep.training.device import saved_bytes
    per_seq = saved_bytes(tiny_model().train(), torch.as_tensor(tiny_split().X[:2])) / 2
    weights = {}
    for limit in (0.0, 1.5 * per_seq / 2**20):
        cfg = TrainConfig(epochs=2, batch_size=6, lr=1e-2, loss="mse", patience=5, step_memory_mb=limit)
        trainer = Trainer(tiny_model(), cfg, tiny_split(), tiny_split(seed=1), seed=3)
        assert trainer.micro == (6 if limit == 0 else 1)
        trainer.run_epoch()
        trainer.run_epoch()
        weights[limit] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    whole, micro = weights.values()
    assert all(torch.allclose(whole[k], micro[k], atol=1e-6) for k in whole)
    assert any(not torch.equal(whole[k], tiny_model().state_dict()[k]) for k in whole)     # it did train


def test_micro_batch_size_keeps_a_pass_under_the_limit():
    from lobsweep.training.device import micro_batch_size, saved_bytes
    model = create_model("transformer", n_features=5, hidden=32, heads=4, layers=2, window=16).train()
    x = torch.randn(2, 400, 5)
    one, four = saved_bytes(model, x[:1]), saved_bytes(model, torch.cat([x, x]))
    assert 3.5 * one < four < 4.5 * one                                  # it grows with the batch
    limit_mb = 10 * one / 2**20
    n = micro_batch_size(model, x, 64, limit_mb)
    assert n in (9, 10, 11) and n * one <= 1.1 * limit_mb * 2**20
    assert micro_batch_size(model, x, 64, 0) == 64 and micro_batch_size(model, x, 4, limit_mb) == 4
    big = torch.randn(400, 400, 5)                     # a view of a large training array counts as its rows
    assert saved_bytes(model, big[:2]) == pytest.approx(saved_bytes(model, big[:2].clone()), rel=0.02)
    with pytest.raises(UserError, match="step_memory_mb"):
        TrainConfig.from_dict({"step_memory_mb": -1})
