"""Role arrays: only the train sequences a role uses are transformed, and they equal the full transform's rows."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lobsweep.data.loader import load
from lobsweep.data.splits import split_roles
from lobsweep.data.synth import write_dataset
from lobsweep.training.prepare import prepare

SPEC = {"book": {}, "temporal": {"ema_halflives": [4, 16]}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("prep"))
    write_dataset(d, n_train=12, n_valid=6, seed=2)
    return d


@pytest.mark.parametrize("tune_from", ["valid", "train"])
@pytest.mark.parametrize("cached", [False, True])
def test_subsampled_roles_equal_rows_of_the_full_transform(data_dir, tmp_path, tune_from, cached):
    prep = prepare(data_dir, SPEC, tune_from=tune_from, max_train_seqs=4, subsample_seed=1,
                   cache_dir=str(tmp_path / "cache") if cached else None)
    train = load(os.path.join(data_dir, "train.parquet"))
    full = prep.pipeline.transform(train.X)                     # what every train sequence would give
    rows = {tuple(np.round(full[i, :50].ravel(), 5)): i for i in range(train.n_seq)}
    fit_ids = sorted(rows[tuple(np.round(x[:50].ravel(), 5))] for x in prep.fit.X)
    assert len(fit_ids) == 4 == len(set(fit_ids))
    np.testing.assert_allclose(prep.fit.X, full[fit_ids], atol=1e-6)
    np.testing.assert_array_equal(prep.fit.Y, train.Y[fit_ids])
    if tune_from == "train":
        carved, _ = split_roles(train.seq_ix, 0.5, 0)
        np.testing.assert_allclose(prep.tune.X, full[carved], atol=1e-6)
        assert not set(fit_ids) & set(carved.tolist())


@pytest.mark.parametrize("tune_from", ["valid", "train"])
def test_report_roles_read_from_a_spec_split_are_the_report_rows_prepare_scored(data_dir, tune_from):
    """The packager's precision gate finds the report sequences from a bundle's recorded split
    (data.splits.report_roles); they must be the ones prepare reported on, either way of tuning."""
    from lobsweep.data.splits import report_roles
    prep = prepare(data_dir, SPEC, tune_from=tune_from)
    valid = load(os.path.join(data_dir, "valid.parquet"))
    expect = np.arange(valid.n_seq) if tune_from == "train" else split_roles(valid.seq_ix, 0.5, 0)[1]
    np.testing.assert_array_equal(prep.report_idx, expect)
    np.testing.assert_array_equal(report_roles(valid.seq_ix, prep.info["split"]), prep.report_idx)


@pytest.mark.parametrize("tune_from", ["valid", "train"])
def test_sequence_roles_partition_each_file(tune_from):
    """Every sequence of each file has exactly one role; the tune role lies in one file only."""
    from lobsweep.data.splits import sequence_roles
    train_ids, valid_ids = np.arange(100, 140), np.array([7, 3, 9, 1, 12, 5, 8, 2])
    r = sequence_roles({"tune_frac": 0.5, "seed": 0, "tune_from": tune_from}, valid_ids, train_ids)
    assert r.tune_file == tune_from
    if tune_from == "valid":
        assert sorted(np.concatenate([r.tune, r.report])) == list(range(8)) and len(r.tune) == 4
        assert list(r.fit) == list(range(40))
    else:
        assert sorted(np.concatenate([r.tune, r.fit])) == list(range(40)) and len(r.tune) == 20
        assert list(r.report) == list(range(8))
    with pytest.raises(ValueError, match="train file"):
        sequence_roles({"tune_frac": 0.5, "seed": 0, "tune_from": "train"}, valid_ids)
