"""The step-by-step scorer (submission/scorer.py + score_worker.py) and the baseline zip.

Every scored zip runs in a real ``python -I`` worker process, so these tests
exercise the import blocker, the row-by-row contract checks and the metric
exactly as ``lobsweep`` users get them.
"""

from __future__ import annotations

import textwrap
import zipfile

import numpy as np
import pandas as pd
import pytest

from lobsweep.data.contract import SEQ_LEN, WARMUP
from lobsweep.data.loader import load
from lobsweep.data.metric import score
from lobsweep.errors import DataError, UserError
from lobsweep.submission.baseline import fit_baseline, predict_batch, write_baseline_zip
from lobsweep.submission.scorer import MAX_ZIP_BYTES, score_zip

# Predicts (running mean of v0 since the sequence start, p6 - p0); the running
# mean proves state resets per seq_ix, the helper module proves zip-local imports.
GOOD_SOLUTION = """
import numpy as np
from helper import spread

class PredictionModel:
    def __init__(self):
        self.seq, self.total, self.n = None, 0.0, 0

    def predict(self, dp):
        if dp.seq_ix != self.seq:
            self.seq, self.total, self.n = dp.seq_ix, 0.0, 0
        self.total += float(dp.state[12])
        self.n += 1
        if not dp.need_prediction:
            return None
        return np.array([self.total / self.n, spread(dp.state)])
"""
HELPER = "def spread(s):\n    return float(s[6]) - float(s[0])\n"


def make_zip(path, solution: str, **extra: str) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("solution.py", textwrap.dedent(solution))
        for name, text in extra.items():
            zf.writestr(name, text)
    return str(path)


def rule_solution(body: str) -> str:
    """A solution whose predict returns a valid array except where ``body`` returns first."""
    return ("import numpy as np\nclass PredictionModel:\n    def predict(self, dp):\n"
            + textwrap.indent(textwrap.dedent(body).strip() + "\n", "        ")
            + "        return None if not dp.need_prediction else np.zeros(2)\n")


@pytest.fixture
def valid(tmp_path, frame_factory):
    df = frame_factory(n_seq=3, seed=1)
    path = tmp_path / "valid.parquet"
    df.to_parquet(path, index=False)
    return path, df


def test_correct_zip_matches_metric_on_direct_predictions(tmp_path, valid):
    path, df = valid
    res = score_zip(make_zip(tmp_path / "s.zip", GOOD_SOLUTION, **{"helper.py": HELPER}), path, progress=False)

    need = df.need_prediction.to_numpy()
    running = df.groupby("seq_ix", sort=False)["v0"].transform(lambda v: v.astype(np.float64).expanding().mean())
    spread = df.p6.astype(np.float64) - df.p0.astype(np.float64)
    P = np.stack([running, spread], axis=1)[need]
    Y = df.loc[need, ["t0", "t1"]].to_numpy(np.float64)
    expected = score(Y, P)

    np.testing.assert_allclose(res["predictions"], P, rtol=1e-12, atol=1e-12)
    assert res["t0"] == pytest.approx(expected["t0"], abs=1e-12)
    assert res["t1"] == pytest.approx(expected["t1"], abs=1e-12)
    assert res["weighted_pearson"] == pytest.approx(expected["mean"], abs=1e-12)
    assert (res["rows"], res["total_rows"]) == (3 * (SEQ_LEN - WARMUP), 3 * SEQ_LEN)
    assert res["ms_per_row"] == pytest.approx(1000 * res["seconds"] / res["total_rows"])
    assert res["projected_minutes_1500_seq"] == pytest.approx(res["ms_per_row"] * 1500 * 1000 / 60000)
    assert "oracle_fraction" not in res


REJECTIONS = {
    "predicts in warm-up": ("return np.zeros(2)", 0, "need_prediction is False"),
    "shape (3,)": ("if dp.need_prediction: return np.zeros(3)", WARMUP, "shape (3,)"),
    "list": ("if dp.need_prediction: return [0.0, 0.0]", WARMUP, "returned list"),
    "NaN": ("if dp.step_in_seq == 500: return np.array([0.0, np.nan])", 500, "non-finite"),
    "None when needed": ("if dp.step_in_seq == 300: return None", 300, "returned None but need_prediction is True"),
    "raises": ("if dp.step_in_seq == 150: raise ValueError('boom')", 150, "ValueError: boom (solution.py:"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_contract_violation_names_row_and_rule(tmp_path, valid, case):
    path, df = valid
    body, step, fragment = REJECTIONS[case]
    with pytest.raises(UserError) as err:
        score_zip(make_zip(tmp_path / "s.zip", rule_solution(body)), path, progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"seq_ix={int(df.seq_ix[0])}, step_in_seq={step}" in msg
    assert fragment in msg


@pytest.mark.parametrize("module", ["lobsweep", "sklearn"])
def test_forbidden_import_is_named(tmp_path, valid, module):
    path, _ = valid
    bad = make_zip(tmp_path / "s.zip", f"import {module}\n" + rule_solution(""))
    with pytest.raises(UserError, match=f"import of '{module}' failed: it is not in the competition container"):
        score_zip(bad, path, progress=False)


def test_container_packages_import_and_project_packages_do_not(tmp_path, valid):
    path, _ = valid
    probe = """
    import importlib, importlib.util, sysconfig
    import numpy, pandas, pyarrow.parquet, tqdm, torch, onnxruntime
    sysconfig.get_paths()
    leaked = []
    for name in ["lobsweep", "prefect", "ray", "mlflow", "optuna", "sklearn", "scipy", "submission", "scorer", "data"]:
        try:
            importlib.import_module(name)
            leaked.append(name)
        except ImportError:
            assert importlib.util.find_spec(name) is None
    if leaked:
        raise RuntimeError("importable: " + ",".join(leaked))
    """
    res = score_zip(make_zip(tmp_path / "s.zip", textwrap.dedent(probe) + rule_solution("")), path,
                    progress=False, max_rows=SEQ_LEN)
    assert res["rows"] == SEQ_LEN - WARMUP


def _zip_with(tmp_path, kind: str) -> str:
    path = tmp_path / "bad.zip"
    if kind == "not a zip":
        path.write_text("print('hello')\n")
    elif kind == "no solution.py":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("model.py", "x = 1\n")
    elif kind == "nested solution.py":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("sub/solution.py", rule_solution(""))
    elif kind == "over 20 MB":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("solution.py", rule_solution(""))
            zf.writestr("weights.bin", b"\0" * (MAX_ZIP_BYTES + 1))
    elif kind == "no PredictionModel":
        make_zip(path, "class Model:\n    pass\n")
    elif kind == "missing file":
        return str(tmp_path / "nope.zip")
    return str(path)


@pytest.mark.parametrize("kind, fragment", [
    ("not a zip", "not a zip file"), ("no solution.py", "no solution.py at the zip root"),
    ("nested solution.py", "found 'sub/solution.py'"), ("over 20 MB", "over the 20 MB"),
    ("no PredictionModel", "no class PredictionModel"), ("missing file", "not found"),
])
def test_bad_zip_is_a_user_error(tmp_path, valid, kind, fragment):
    with pytest.raises(UserError, match=fragment):
        score_zip(_zip_with(tmp_path, kind), valid[0], progress=False)


def test_crash_and_timeout_are_user_errors(tmp_path, valid):
    crash = make_zip(tmp_path / "c.zip", rule_solution("import os; os._exit(3)"))
    with pytest.raises(UserError, match=r"process died \(exit code 3\)"):
        score_zip(crash, valid[0], progress=False)
    slow = make_zip(tmp_path / "t.zip", rule_solution("import time; time.sleep(60)"))
    with pytest.raises(UserError, match="timeout"):
        score_zip(slow, valid[0], progress=False, timeout=4)


def test_file_without_targets_is_rejected(tmp_path, frame_factory):
    path = tmp_path / "test.parquet"
    frame_factory(n_seq=1, targets=False).to_parquet(path, index=False)
    with pytest.raises(DataError, match="no target column 't0'"):
        score_zip(make_zip(tmp_path / "s.zip", rule_solution("")), path, progress=False)


def test_oracle_fraction_from_file_beside_data(tmp_path, valid):
    path, df = valid
    rng = np.random.default_rng(5)
    need = df.need_prediction.to_numpy()
    oracle = df.loc[need, ["seq_ix", "step_in_seq"]].copy()
    Y = df.loc[need, ["t0", "t1"]].to_numpy(np.float64)
    oracle[["t0", "t1"]] = Y + rng.normal(0, 1.0, Y.shape)
    oracle.sample(frac=1.0, random_state=0).to_parquet(tmp_path / "oracle_valid.parquet", index=False)

    res = score_zip(make_zip(tmp_path / "s.zip", GOOD_SOLUTION, **{"helper.py": HELPER}), path, progress=False)
    ref = score(Y, oracle[["t0", "t1"]].to_numpy())
    assert res["oracle_weighted_pearson"] == pytest.approx(ref["mean"], abs=1e-12)
    assert (res["oracle_t0"], res["oracle_t1"]) == pytest.approx((ref["t0"], ref["t1"]), abs=1e-12)
    assert res["oracle_fraction"] == pytest.approx(res["weighted_pearson"] / ref["mean"])

    oracle.iloc[:-1].to_parquet(tmp_path / "short.parquet", index=False)
    with pytest.raises(DataError, match="oracle lacks 1 scored rows"):
        score_zip(tmp_path / "s.zip", path, oracle_path=tmp_path / "short.parquet", progress=False)


def _planted(df: pd.DataFrame, rng) -> tuple[pd.DataFrame, np.ndarray]:
    """Targets = EMA (half-life 8) of the level-1 imbalance + noise; returns the frame and the signal."""
    v0, v6 = df.v0.astype(np.float64), df.v6.astype(np.float64)
    imb = (v0 - v6) / (v0 + v6)
    signal = imb.groupby(df.seq_ix, sort=False).transform(
        lambda s: s.ewm(alpha=1 - 0.5 ** (1 / 8), adjust=False).mean()).to_numpy()
    df = df.copy()
    df["t0"] = (4 * signal + rng.normal(0, 0.2, len(df))).astype(np.float32)
    df["t1"] = (signal + rng.normal(0, 0.3, len(df))).astype(np.float32)
    return df, signal


def test_baseline_zip_recovers_planted_imbalance_signal(tmp_path, frame_factory):
    rng = np.random.default_rng(0)
    train, _ = _planted(frame_factory(n_seq=4, seed=2), rng)
    valid, signal = _planted(frame_factory(n_seq=3, seed=3), rng)
    train.to_parquet(tmp_path / "train.parquet", index=False)
    valid.to_parquet(tmp_path / "valid.parquet", index=False)
    need = valid.need_prediction.to_numpy()
    oracle = valid.loc[need, ["seq_ix", "step_in_seq"]].assign(t0=4 * signal[need], t1=signal[need])
    oracle.to_parquet(tmp_path / "oracle_valid.parquet", index=False)

    params = fit_baseline(tmp_path / "train.parquet")
    zpath = write_baseline_zip(params, tmp_path / "baseline.zip")
    res = score_zip(zpath, tmp_path / "valid.parquet", progress=False)

    assert res["t0"] > 0 and res["t1"] > 0
    assert res["oracle_fraction"] > 0.8
    data = load(str(tmp_path / "valid.parquet"))
    np.testing.assert_allclose(res["predictions"], predict_batch(params, data.X)[data.mask], rtol=1e-9, atol=1e-12)
