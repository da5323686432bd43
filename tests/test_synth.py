"""Synthetic generator: contract schema, determinism, book structure, exact causal oracle, calibration."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from lobsweep.data import synth
from lobsweep.data.contract import (ALL_COLS, ASK_PRICE, ASK_VOL, BID_PRICE, BID_VOL, FEATURE_COLS,
                                    SEQ_LEN, TARGET_COLS, TRADE_PRICE, TRADE_VOL, WARMUP)
from lobsweep.data.metric import score
from lobsweep.data.synth_signal import TICK, planted_signal
from lobsweep.errors import UserError


def _arrays(rows, n_seq):
    """Features [N, T, 32], targets [N, T, 2] and mask [N, T] of a generated frame."""
    T = len(rows) // n_seq
    X = rows[FEATURE_COLS].to_numpy().reshape(n_seq, T, 32)
    Y = rows[TARGET_COLS].to_numpy().reshape(n_seq, T, 2)
    return X, Y, rows["need_prediction"].to_numpy().reshape(n_seq, T)


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def small():
    rows, oracle = synth.generate(6, seed=3, seq_id_offset=50)
    return rows, oracle


def test_schema_dtypes_and_order(small):
    rows, oracle = small
    assert list(rows.columns) == ALL_COLS
    assert rows["seq_ix"].dtype == np.int64 and rows["step_in_seq"].dtype == np.int64
    assert rows["need_prediction"].dtype == np.bool_
    assert all(rows[c].dtype == np.float32 for c in FEATURE_COLS + TARGET_COLS)
    assert list(oracle.columns) == ["seq_ix", "step_in_seq", "t0", "t1"]
    assert oracle["t0"].dtype == np.float32 and oracle["t1"].dtype == np.float32
    assert (oracle["seq_ix"].to_numpy() == rows["seq_ix"].to_numpy()).all()
    assert (oracle["step_in_seq"].to_numpy() == rows["step_in_seq"].to_numpy()).all()
    assert np.isfinite(rows[FEATURE_COLS + TARGET_COLS].to_numpy()).all()


def test_sequences_steps_ids_and_mask(small):
    rows, _ = small
    seq = rows["seq_ix"].to_numpy().reshape(6, SEQ_LEN)
    assert (seq == seq[:, :1]).all(), "rows must be grouped by sequence"
    ids = seq[:, 0]
    assert len(set(ids)) == 6 and ((ids >= 50) & (ids < 50 + synth.ID_SPREAD * 6)).all()
    assert not (np.diff(ids) > 0).all(), "ids must not come sorted"
    assert not (np.diff(np.sort(ids)) == 1).all(), "ids must not be contiguous"
    step = rows["step_in_seq"].to_numpy().reshape(6, SEQ_LEN)
    assert (step == np.arange(SEQ_LEN)).all()
    assert (rows["need_prediction"].to_numpy() == (rows["step_in_seq"].to_numpy() >= WARMUP)).all()


def test_book_structure(small):
    X, _, _ = _arrays(small[0], 6)
    bids, asks = X[..., BID_PRICE], X[..., ASK_PRICE]
    assert (bids[..., 0] < asks[..., 0]).all()
    assert (np.diff(bids, axis=-1) < 0).all() and (np.diff(asks, axis=-1) > 0).all()
    assert (X[..., BID_VOL] > 0).all() and (X[..., ASK_VOL] > 0).all()
    prices = X[..., :12]
    assert prices.min() >= synth.MIN_PRICE and 0.8 < np.median(prices) < 1.2, "normalised prices near 1"
    dp, dv = X[..., TRADE_PRICE], X[..., TRADE_VOL]
    traded = dv > 0
    assert ((dp > 0) == traded).all() and (dp[~traded] == 0).all(), "empty trade slots are dp=0, dv=0"
    assert 0.05 < traded.mean() < 0.8 and not traded[:, 0].any()
    prev_quotes = np.concatenate([bids[:, :-1, :2], asks[:, :-1, :2]], axis=-1)[:, :, None, :]
    on_quote = np.isclose(dp[:, 1:, :, None], prev_quotes, rtol=0, atol=TICK / 10).any(axis=-1)
    assert on_quote[traded[:, 1:]].all(), "trades print at the previous snapshot's top two levels"
    spread_by_seq = (asks[..., 0] - bids[..., 0]).mean(axis=1)
    assert spread_by_seq.max() > 1.3 * spread_by_seq.min(), "volatility regimes differ per sequence"


def test_oracle_is_the_signal_of_the_stored_features(small):
    rows, oracle = small
    X, Y, _ = _arrays(rows, 6)
    expected = planted_signal(X).astype(np.float32)
    got = oracle[TARGET_COLS].to_numpy().reshape(6, SEQ_LEN, 2)
    np.testing.assert_array_equal(got, expected)
    assert np.abs(Y - got).mean() > 0.1, "targets carry noise beyond the oracle"


def test_oracle_is_causal_and_has_memory(small):
    X, _, _ = _arrays(small[0], 6)
    X = X.astype(np.float32)
    base = planted_signal(X)
    rng = np.random.default_rng(0)
    for t in (120, 500):
        future = X.copy()
        future[:, t + 1:] *= rng.uniform(0.5, 1.5, size=future[:, t + 1:].shape).astype(np.float32)
        np.testing.assert_array_equal(planted_signal(future)[:, :t + 1], base[:, :t + 1])
        past = X.copy()
        past[:, t - 40, 12] *= 3.0          # one bid volume 40 steps back
        assert np.abs(planted_signal(past)[:, t] - base[:, t]).min() > 0, "the signal remembers the past"


def test_write_dataset_is_atomic_deterministic_and_disjoint(tmp_path):
    kw = dict(n_train=4, n_valid=3, seed=7)
    a = synth.write_dataset(tmp_path / "a", **kw)
    b = synth.write_dataset(tmp_path / "b", **kw)
    c = synth.write_dataset(tmp_path / "c", **{**kw, "seed": 8})
    names = ["train", "valid", "oracle_train", "oracle_valid"]
    assert sorted(os.listdir(tmp_path / "a")) == sorted(f"{n}.parquet" for n in names)
    for n in names:
        assert _digest(a["paths"][n]) == _digest(b["paths"][n])
        assert _digest(a["paths"][n]) != _digest(c["paths"][n])
    assert a["n_rows"] == {"train": 4 * SEQ_LEN, "valid": 3 * SEQ_LEN}
    assert set(a["oracle_valid"]) == {"t0", "t1", "mean"} and a["seconds"] > 0

    train, valid = pd.read_parquet(a["paths"]["train"]), pd.read_parquet(a["paths"]["valid"])
    assert list(train.columns) == ALL_COLS and train["t0"].dtype == np.float32
    assert not set(train["seq_ix"]) & set(valid["seq_ix"])
    first_train, first_valid = (df[FEATURE_COLS].to_numpy()[:SEQ_LEN] for df in (train, valid))
    assert not np.array_equal(first_train, first_valid), "train and valid come from different seeds"


def test_write_dataset_failure_leaves_nothing(tmp_path, monkeypatch):
    real_write = synth.pq.write_table
    calls = []

    def failing_write(table, where, **kw):
        calls.append(where)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_write(table, where, **kw)

    monkeypatch.setattr(synth.pq, "write_table", failing_write)
    out = tmp_path / "ds"
    with pytest.raises(UserError, match="cannot write the synthetic dataset"):
        synth.write_dataset(out, n_train=2, n_valid=1)
    assert os.listdir(out) == []


@pytest.mark.parametrize("kwargs", [dict(n_seq=0), dict(n_seq=2, seq_len=0), dict(n_seq=2.5),
                                    dict(n_seq=2, seed=-1)])
def test_bad_arguments_raise_user_error(kwargs):
    with pytest.raises(UserError):
        synth.generate(**kwargs)


def test_write_dataset_rejects_a_file_as_directory(tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        synth.write_dataset(target, n_train=1, n_valid=1)


def test_calibration_oracle_ridge_and_tails():
    """At a moderate size: oracle scores in their ranges, a per-step ridge far below, heavy tails."""
    train_seed, valid_seed = synth.split_seeds(0)
    train, _ = synth.generate(160, seed=train_seed)
    valid, oracle = synth.generate(96, seed=valid_seed, seq_id_offset=10_000)
    Xt, Yt, mt = _arrays(train, 160)
    Xv, Yv, mv = _arrays(valid, 96)
    O = oracle[TARGET_COLS].to_numpy().reshape(96, SEQ_LEN, 2)

    best = score(Yv[mv], O[mv])
    assert 0.45 <= best["t0"] <= 0.65 and 0.15 <= best["t1"] <= 0.30
    assert best["t1"] < 0.6 * best["t0"], "t1 is much noisier than t0"

    A, B = Xt[mt].astype(np.float64), Xv[mv].astype(np.float64)
    mu, sd = A.mean(0), A.std(0) + 1e-12
    ridge = Ridge(alpha=1.0).fit((A - mu) / sd, Yt[mt])
    per_step = score(Yv[mv], ridge.predict((B - mu) / sd))
    assert per_step["mean"] <= 0.6 * best["mean"]

    y = Yv[mv].astype(np.float64)
    kurtosis = ((y - y.mean(0)) ** 4).mean(0) / y.var(0) ** 2
    assert (kurtosis > 3.0).all()


def test_shifted_variant_moves_the_signal_and_keeps_the_contract(tmp_path):
    """Same schema and an exact causal oracle, but a signal the default one only partly explains."""
    rows, oracle = synth.generate(8, seed=4, variant="shifted")
    default_rows, _ = synth.generate(8, seed=4)
    assert list(rows.columns) == ALL_COLS and (rows.dtypes == default_rows.dtypes).all()
    X, Y, mask = _arrays(rows, 8)
    got = oracle[TARGET_COLS].to_numpy().reshape(8, SEQ_LEN, 2)
    np.testing.assert_array_equal(got, planted_signal(X, "shifted").astype(np.float32))
    base = planted_signal(X, "shifted")
    future = X.copy()
    future[:, 301:] *= np.float32(1.3)
    np.testing.assert_array_equal(planted_signal(future, "shifted")[:, :301], base[:, :301])
    same_x = planted_signal(X)                       # the default signal of the very same features
    r = np.corrcoef(same_x[mask][:, 0], base[mask][:, 0])[0, 1]
    assert r < 0.9, r
    best = score(Y[mask], got[mask])
    assert 0.35 <= best["t0"] <= 0.7 and best["t1"] < 0.6 * best["t0"]
    with pytest.raises(UserError, match="unknown synthetic variant"):
        synth.write_dataset(tmp_path / "v", n_train=2, n_valid=1, variant="nope")
    assert not os.path.exists(tmp_path / "v")
