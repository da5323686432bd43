"""The data contract: loading, zero-copy indexing, and one clear line for every bad input."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from conftest import make_frame
from lobsweep.data.contract import ALL_COLS, FEATURE_COLS, SEQ_LEN
from lobsweep.data.loader import load
from lobsweep.errors import DataError


def write(df: pd.DataFrame, path) -> str:
    df.to_parquet(path, index=False)
    return str(path)


def test_load_shapes_order_and_views(tmp_path):
    df = make_frame(3, seed=1)
    data = load(write(df, tmp_path / "v.parquet"))
    assert data.X.shape == (3, SEQ_LEN, 32) and data.X.dtype == np.float32
    assert data.Y.shape == (3, SEQ_LEN, 2) and data.mask.shape == (3, SEQ_LEN)
    # sequence ids keep file order (not sorted)
    assert list(data.seq_ix) == list(pd.unique(df["seq_ix"]))
    # row r of the file is X[r // T, r % T]
    r = 1234
    np.testing.assert_array_equal(data.X[r // SEQ_LEN, r % SEQ_LEN], df.loc[r, FEATURE_COLS].to_numpy(np.float32))
    np.testing.assert_array_equal(data.Y[2, 500], df.loc[2 * SEQ_LEN + 500, ["t0", "t1"]].to_numpy(np.float32))
    # indexing one sequence is a view, not a copy
    assert np.shares_memory(data.X[1], data.X) and data.X[1].base is not None
    assert data.mask[:, :99].sum() == 0 and data.mask[:, 99:].all()


def test_fingerprint_tracks_content(tmp_path):
    df = make_frame(2, seed=3)
    a = load(write(df, tmp_path / "a.parquet"))
    b = load(write(df, tmp_path / "b.parquet"))
    assert a.fingerprint == b.fingerprint
    df.loc[10, "v3"] += 1.0
    c = load(write(df, tmp_path / "c.parquet"))
    assert c.fingerprint != a.fingerprint


def test_test_style_file_loads_without_targets_when_allowed(tmp_path):
    p = write(make_frame(2, targets=False), tmp_path / "test.parquet")
    data = load(p, require_targets=False)
    assert data.Y is None
    with pytest.raises(DataError, match="no target columns"):
        load(p, require_targets=True)


def test_repair_flag_forward_fills(tmp_path):
    df = make_frame(2, seed=4)
    df.loc[5, "p3"] = np.nan
    df.loc[SEQ_LEN, "v1"] = np.inf          # first step of the second sequence: no good value yet
    data = load(write(df, tmp_path / "r.parquet"), repair_features=True)
    assert data.repaired == 2
    assert data.X[0, 5, 3] == data.X[0, 4, 3]
    assert data.X[1, 0, 13] == 0.0
    assert np.isfinite(data.X).all()


def _bad_cases():
    """(name, mutate(df) -> df or bytes, expected message fragment)."""
    def drop_col(df):
        return df.drop(columns=["v5"])

    def extra_col(df):
        return df.assign(extra=1.0)

    def swap(df):
        cols = list(ALL_COLS)
        cols[3], cols[4] = cols[4], cols[3]
        return df[cols]

    def text_dtype(df):
        return df.assign(p2=df["p2"].astype(str))

    def nan_feat(df):
        df.loc[1500, "dv2"] = np.nan
        return df

    def inf_feat(df):
        df.loc[7, "p0"] = np.inf
        return df

    def nan_target(df):
        df.loc[2100, "t1"] = np.nan
        return df

    def dup(df):
        return pd.concat([df.iloc[:500], df.iloc[499:500], df.iloc[500:]], ignore_index=True)

    def unsorted(df):
        idx = list(range(len(df)))
        idx[300], idx[301] = idx[301], idx[300]
        return df.iloc[idx].reset_index(drop=True)

    def short(df):
        return df.drop(index=range(SEQ_LEN - 5, SEQ_LEN)).reset_index(drop=True)

    def long_(df):
        extra = df.iloc[[SEQ_LEN - 1]].copy()
        extra["step_in_seq"] = SEQ_LEN
        return pd.concat([df.iloc[:SEQ_LEN], extra, df.iloc[SEQ_LEN:]], ignore_index=True)

    def warmup(df):
        df.loc[50, "need_prediction"] = True
        return df

    def split_seq(df):
        first = df.iloc[:SEQ_LEN]
        return pd.concat([first.iloc[:500], df.iloc[SEQ_LEN:2 * SEQ_LEN], first.iloc[500:], df.iloc[2 * SEQ_LEN:]],
                         ignore_index=True)

    return [
        ("missing column", drop_col, "missing column 'v5'"),
        ("extra column", extra_col, "unexpected column 'extra'"),
        ("order", swap, "columns out of order: position 3"),
        ("dtype", text_dtype, "column 'p2' has non-numeric dtype"),
        ("nan feature", nan_feat, "NaN in column 'dv2' at seq_ix="),
        ("inf feature", inf_feat, "inf in column 'p0' at seq_ix="),
        ("nan target", nan_target, "NaN in column 't1' at seq_ix="),
        ("duplicate", dup, "duplicate (seq_ix, step) at seq_ix="),
        ("unsorted", unsorted, "steps not in order at seq_ix="),
        ("short", short, "has 995 steps"),
        ("long", long_, "has 1001 steps"),
        ("warm-up rule", warmup, "need_prediction is True at seq_ix="),
        ("non-contiguous", split_seq, "are not contiguous"),
    ]


@pytest.mark.parametrize("name,mutate,fragment", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_input_raises_one_clear_line(tmp_path, name, mutate, fragment):
    df = mutate(make_frame(3, seed=2))
    with pytest.raises(DataError) as exc:
        load(write(df, tmp_path / "bad.parquet"))
    msg = str(exc.value)
    assert fragment in msg and "\n" not in msg


def test_not_parquet_and_empty(tmp_path):
    (tmp_path / "x.parquet").write_text("seq_ix,step\n1,2\n")
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="not a parquet file"):
        load(str(tmp_path / "x.parquet"))
    with pytest.raises(DataError, match="empty file"):
        load(str(tmp_path / "empty.parquet"))
    zero_rows = make_frame(1).iloc[:0]
    with pytest.raises(DataError, match="no rows"):
        load(write(zero_rows, tmp_path / "zero.parquet"))


def test_validate_cli_ok_and_bad(tmp_path, cli):
    good = write(make_frame(2), tmp_path / "good.parquet")
    res = cli("validate", good)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 1 and "2 sequences, 2000 rows, targets present" in res.stdout

    df = make_frame(2)
    df.loc[1200, "v0"] = np.nan
    bad = write(df, tmp_path / "bad.parquet")
    before = sorted(os.listdir(tmp_path))
    res = cli("validate", bad)
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "NaN in column 'v0'" in lines[0] and "Traceback" not in res.stderr
    assert sorted(os.listdir(tmp_path)) == before          # wrote nothing

    res = cli("validate", bad, "--repair-features")
    assert res.returncode == 0 and "1 non-finite feature values repaired" in res.stdout
