"""Shared fixtures: small contract-schema frames built here, independent of the generator."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lobsweep.data.contract import ALL_COLS, FEATURE_COLS, SEQ_LEN, WARMUP

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def make_frame(n_seq: int = 3, seed: int = 0, targets: bool = True, ids=None) -> pd.DataFrame:
    """A contract-valid frame: plausible book, random targets, ids not sorted."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(ids if ids is not None else rng.permutation(np.arange(100, 100 + 10 * n_seq, 10))[:n_seq])
    n = n_seq * SEQ_LEN
    mid = np.cumsum(rng.normal(0, 0.01, size=(n_seq, SEQ_LEN)), axis=1).ravel()
    cols = {
        "seq_ix": np.repeat(ids, SEQ_LEN).astype(np.int64),
        "step_in_seq": np.tile(np.arange(SEQ_LEN), n_seq).astype(np.int64),
        "need_prediction": np.tile(np.arange(SEQ_LEN) >= WARMUP, n_seq),
    }
    for i in range(6):
        cols[f"p{i}"] = (mid - 0.01 * (i + 1)).astype(np.float32)
    for i in range(6):
        cols[f"p{6 + i}"] = (mid + 0.01 * (i + 1)).astype(np.float32)
    for i in range(12):
        cols[f"v{i}"] = rng.exponential(1.0, n).astype(np.float32)
    for i in range(4):
        cols[f"dp{i}"] = (mid + rng.choice([-0.01, 0.01], n)).astype(np.float32)
        cols[f"dv{i}"] = rng.exponential(0.5, n).astype(np.float32)
    cols["t0"] = rng.standard_t(4, n).astype(np.float32)
    cols["t1"] = rng.standard_t(4, n).astype(np.float32)
    df = pd.DataFrame(cols)[ALL_COLS]
    if not targets:
        df = df.drop(columns=["t0", "t1"])
    return df


@pytest.fixture
def frame_factory():
    return make_frame


def run_cli(*args: str, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``python -m lobsweep ARGS`` in a subprocess and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "lobsweep", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def deep_dir(tmp_path):
    """``deep_dir(label)``: a new folder 150+ characters deep whose path holds a space (where users keep work)."""
    def make(label: str) -> str:
        d = tmp_path / f"{label} with a space" / ("deep-" + "x" * 90) / ("deeper-" + "y" * 40)
        d.mkdir(parents=True)
        assert len(str(d)) > 150 and " " in str(d)
        return str(d)
    return make


assert FEATURE_COLS  # the contract module imports cleanly
