"""The zip streams the offline predictions for every final-stage feature option.

features/ is vendored verbatim into the zip, so the per-sequence warm-up
statistics, raw (unnormalised) inputs and derived-only pipelines must reach
the same predictions step by step as the batch path: one tiny GRU per option,
each packaged alone and scored by the real step-by-step scorer.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lobsweep.data.synth import write_dataset
from lobsweep.submission.assemble import offline_predictions
from lobsweep.submission.package import package
from lobsweep.submission.scorer import score_zip
from lobsweep.training.member import train_member

TOL = 1e-4
OPTIONS = {
    "none": {"normalize": {"method": "none"}},
    "warmup": {"book": {"levels": 2}, "normalize": {"method": "warmup"}},
    "derived_only": {"book": {"levels": 2}, "trade": {"intensity_halflife": 10.0},
                     "normalize": {"method": "warmup", "drop_raw": True, "robust": True}},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkgf-data")
    write_dataset(str(d), n_train=16, n_valid=6, seed=1)
    return str(d)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_zip_matches_offline_for_feature_option(option, data_dir, tmp_path):
    torch.set_num_threads(1)
    b = train_member(data_dir, "gru", str(tmp_path / option), hparams={"hidden": 12, "layers": 2, "head_hidden": 8},
                     train_cfg={"epochs": 1, "batch_size": 8, "device": "cpu"}, features_spec=OPTIONS[option],
                     seed=0, prepare_kwargs={"max_train_seqs": 8})
    z = str(tmp_path / "one.zip")
    package([b.path], z)
    P = score_zip(z, os.path.join(data_dir, "valid.parquet"), progress=False)["predictions"]
    ref = offline_predictions([b.path])
    assert P.shape == ref.shape and np.isfinite(P).all()
    assert np.abs(P - ref).max() <= TOL
