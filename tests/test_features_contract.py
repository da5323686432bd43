"""Contract tests for every registered feature builder and for FeaturePipeline.

The generic tests run over ``SUBJECTS``: each registered builder (fed the raw
columns plus unnormalised book and trade outputs, so builders that take
derived columns by name have them) and a few pipeline specs. A builder
registered tomorrow is covered the day it is registered.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lobsweep.features import (
    RAW_COLUMNS,
    FeatureBuilder,
    FeaturePipeline,
    FeatureSpecError,
    create_builder,
    list_builders,
)

FEATURES_DIR = Path(__file__).resolve().parents[1] / "features"
N_SEQ, T = 3, 40

BUILDER_PARAMS = {
    "temporal": dict(inputs=["mid", "v0", "trade_count"], lags=[1, 3], deltas=[2], windows=[3, 7],
                     ema_halflives=[2, 5.5], relative=False),
    "interactions": dict(pairs=[["spread0", "mid"], ["v0", "p0"], ["imb0", "trade_signed"]]),
}
FULL_SPEC = {
    "book": {"levels": 4},
    "trade": {"intensity_halflife": 8},
    "temporal": {"inputs": ["mid", "microprice", "imb0", "log_trade_vol"], "lags": [2],
                 "deltas": [1, 5], "windows": [4, 9], "ema_halflives": [3, 10, 30]},
    "interactions": {"pairs": [["spread0", "mid"], ["v0", "p0"], ["imb0", "mid_xema10"]]},
    "normalize": {"robust": False, "clip": 10},
}
PIPELINE_SPECS = {
    "raw": {},
    "full": FULL_SPEC,
    "robust": {"book": {"levels": 2, "log_volumes": False}, "trade": {"intensity_halflife": None},
               "normalize": {"robust": True, "clip": 5}},
    "none": {"book": {"levels": 2}, "normalize": {"method": "none"}},
    # warm-up of 10 steps so that T = 40 covers both the running and the frozen phase
    "warmup": {"book": {}, "trade": {"intensity_halflife": 8}, "normalize": {"method": "warmup", "warmup": 10}},
    "derived_only": {"book": {"levels": 2}, "temporal": {"inputs": ["mid", "imb0"], "ema_halflives": [4]},
                     "normalize": {"drop_raw": True, "method": "warmup", "warmup": 7, "robust": True}},
}
SUBJECTS = [f"builder:{n}" for n in list_builders()] + [f"pipeline:{n}" for n in PIPELINE_SPECS]


def lob_data(n_seq: int, t: int, seed: int) -> np.ndarray:
    """Realistic raw rows [n_seq, t, 32]: bid < ask, volumes >= 0 (some 0), ~40% rows without trades."""
    rng = np.random.default_rng(seed)
    tick = 1e-3
    mid = 1.0 + np.cumsum(rng.normal(0, tick, (n_seq, t)), axis=1)
    half = tick * rng.integers(1, 4, (n_seq, t)) / 2
    depth = tick * np.arange(6)
    bids = mid[..., None] - half[..., None] - depth
    asks = mid[..., None] + half[..., None] + depth
    vols = rng.lognormal(2.0, 1.0, (n_seq, t, 12)) * (rng.random((n_seq, t, 12)) > 0.1)
    n_trades = rng.integers(0, 5, (n_seq, t)) * (rng.random((n_seq, t)) > 0.4)
    live = np.arange(4) < n_trades[..., None]
    dp = np.where(live, mid[..., None] + rng.normal(0, 2 * tick, (n_seq, t, 4)), 0.0)
    dv = np.where(live, rng.lognormal(1.0, 1.0, (n_seq, t, 4)), 0.0)
    return np.concatenate([bids, asks, vols, dp, dv], axis=-1).astype(np.float32)


def base_table(X: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Raw columns plus unnormalised book and trade outputs: the input every builder test uses."""
    names, parts = list(RAW_COLUMNS), [np.asarray(X, dtype=np.float64)]
    for name in ("book", "trade"):
        b = create_builder(name).fit(X, RAW_COLUMNS)
        parts.append(b.transform(X))
        names += b.output_names
    return np.concatenate(parts, axis=-1), names


class Subject:
    """One builder or pipeline behind a uniform raw-input interface (float64 outputs)."""

    def __init__(self, key: str):
        self.kind, self.name = key.split(":")

    def make(self):
        if self.kind == "pipeline":
            return FeaturePipeline.from_spec(PIPELINE_SPECS[self.name])
        return create_builder(self.name, **BUILDER_PARAMS.get(self.name, {}))

    def fit(self, obj, X, perm=None):
        if self.kind == "pipeline":
            return obj.fit(X)
        table, names = base_table(X)
        order = np.arange(len(names)) if perm is None else perm
        return obj.fit(table[..., order], [names[i] for i in order])

    def transform(self, obj, X):
        if self.kind == "pipeline":
            return obj.transform(X, dtype=np.float64)
        return obj.transform(base_table(X)[0])

    def stream(self, obj, seq):
        """seq [T, 32] -> [T, F] through init_state/update."""
        rows = seq if self.kind == "pipeline" else base_table(seq[None])[0][0]
        state, out = obj.init_state(), []
        for row in rows:
            state, feats = obj.update(state, row)
            out.append(np.array(feats, dtype=np.float64))
        return np.stack(out)

    def roundtrip(self, obj):
        if self.kind == "pipeline":
            return FeaturePipeline.from_json(obj.to_json())
        return FeatureBuilder.from_dict(json.loads(json.dumps(obj.to_dict())))


@pytest.fixture(params=SUBJECTS)
def subject(request) -> Subject:
    return Subject(request.param)


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return lob_data(N_SEQ, T, seed=1)


def test_batch_equals_streaming(subject, X):
    obj = subject.fit(subject.make(), X)
    batch = subject.transform(obj, X)
    assert batch.shape[:2] == X.shape[:2] and np.isfinite(batch).all()
    for i in range(N_SEQ):
        np.testing.assert_allclose(subject.stream(obj, X[i]), batch[i], rtol=0, atol=1e-6)


def test_causal(subject, X):
    obj = subject.fit(subject.make(), X)
    before = subject.transform(obj, X)
    for t in (0, 9, T - 2):
        Xc = X.copy()
        Xc[:, t + 1:] = lob_data(N_SEQ, T, seed=7)[:, t + 1:]
        after = subject.transform(obj, Xc)
        np.testing.assert_array_equal(after[:, :t + 1], before[:, :t + 1])
        assert not np.allclose(after[:, t + 1:], before[:, t + 1:])


def test_state_resets_per_sequence(subject, X):
    obj = subject.fit(subject.make(), X)
    other = lob_data(1, T, seed=11)[0] * 1.5
    subject.stream(obj, other)
    np.testing.assert_allclose(subject.stream(obj, X[0]), subject.transform(obj, X[:1])[0], rtol=0, atol=1e-6)


def test_second_fit_replaces_first(subject, X):
    first = lob_data(N_SEQ, T, seed=3) * np.float32(2.0)
    n_cols = len(base_table(X[:1, :2])[1])
    twice = subject.fit(subject.make(), first, perm=np.arange(n_cols)[::-1])
    twice = subject.fit(twice, X)
    once = subject.fit(subject.make(), X)
    np.testing.assert_array_equal(subject.transform(twice, X), subject.transform(once, X))


def test_json_roundtrip_identical(subject, X):
    obj = subject.fit(subject.make(), X)
    back = subject.roundtrip(obj)
    np.testing.assert_array_equal(subject.transform(back, X), subject.transform(obj, X))
    np.testing.assert_array_equal(subject.stream(back, X[1]), subject.stream(obj, X[1]))


def reference_repair(X: np.ndarray) -> np.ndarray:
    """The documented policy, written as plain loops: forward-fill non-finite values, else 0."""
    out = np.array(X, dtype=np.float64)
    for i in range(out.shape[0]):
        for j in range(out.shape[2]):
            last = 0.0
            for t in range(out.shape[1]):
                if np.isfinite(out[i, t, j]):
                    last = out[i, t, j]
                else:
                    out[i, t, j] = last
    return out


@pytest.mark.parametrize("spec_name", ["raw", "full", "robust", "none", "warmup", "derived_only"]
                         + ["only_" + k for k in FULL_SPEC])
def test_nonfinite_policy(spec_name, X):
    if spec_name in PIPELINE_SPECS:
        spec = PIPELINE_SPECS[spec_name]
    else:
        key = spec_name[len("only_"):]
        needs_base = key in ("temporal", "interactions")     # they read book/trade columns by name
        spec = {**({"book": {}, "trade": {}} if needs_base else {}), key: BUILDER_PARAMS.get(key, FULL_SPEC[key])}
    pipe = FeaturePipeline.from_spec(spec).fit(X)
    bad = X.copy()
    bad[0, 0, 3] = np.nan                        # no finite value yet -> 0.0
    bad[0, 5:8, 12] = np.inf
    bad[1, 10, :] = np.nan                       # a whole row
    bad[2, 20, 26] = -np.inf
    bad[2, T - 1, 30] = np.nan
    out = pipe.transform(bad, dtype=np.float64)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, pipe.transform(reference_repair(bad), dtype=np.float64))
    streamed = Subject("pipeline:raw").stream(pipe, bad[1])
    np.testing.assert_allclose(streamed, out[1], rtol=0, atol=1e-6)


def test_raw_spec_is_32_znormalised_columns(X):
    pipe = FeaturePipeline.from_spec({}).fit(X)
    Z = pipe.transform(X)
    assert Z.dtype == np.float32 and pipe.n_features_out == 32 and Z.shape == (N_SEQ, T, 32)
    assert pipe.feature_names == RAW_COLUMNS and set(pipe.groups().values()) == {"raw"}
    flat = Z.reshape(-1, 32).astype(np.float64)
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(0), 1.0, atol=1e-4)


def test_temporal_matches_naive_reference():
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 1.0, (2, 30, 1))
    b = create_builder("temporal", inputs=["c"], lags=[2], deltas=[3], windows=[4], ema_halflives=[2.5],
                       relative=False).fit(x, ["c"])
    out, v = b.transform(x), x[..., 0]
    assert b.output_names == ["c_lag2", "c_d3", "c_mean4", "c_std4", "c_ema2.5"]
    a = 0.5 ** (1 / 2.5)
    for t in range(30):
        past = v[:, max(0, t - 3):t + 1]
        w = a ** np.arange(t, -1, -1)
        np.testing.assert_allclose(out[:, t, 0], v[:, max(t - 2, 0)], atol=1e-12)
        np.testing.assert_allclose(out[:, t, 1], v[:, t] - v[:, max(t - 3, 0)], atol=1e-12)
        np.testing.assert_allclose(out[:, t, 2], past.mean(1), atol=1e-12)
        np.testing.assert_allclose(out[:, t, 3], past.std(1), atol=1e-9)
        np.testing.assert_allclose(out[:, t, 4], (v[:, :t + 1] * w).sum(1) / w.sum(), atol=1e-12)
    rel = create_builder("temporal", inputs=["c"], deltas=[], windows=[4], ema_halflives=[2.5]).fit(x, ["c"])
    np.testing.assert_allclose(rel.transform(x)[..., [0, 2]], v[..., None] - out[..., [2, 4]], atol=1e-12)


def test_book_and_trade_semantics():
    X = lob_data(2, 10, seed=2).astype(np.float64)
    X[0, 0, 12:24] = 0.0                                        # empty book volumes
    b = create_builder("book").fit(X, RAW_COLUMNS)
    out = dict(zip(b.output_names, np.moveaxis(b.transform(X), -1, 0)))
    pb, pa, vb, va = X[..., 0], X[..., 6], X[..., 12], X[..., 18]
    live = (vb + va) > 0
    micro = (pb * va + pa * vb) / np.where(live, vb + va, 1.0)
    np.testing.assert_allclose(out["microprice"][live], micro[live], atol=1e-12)
    np.testing.assert_allclose(out["microprice"][0, 0], (pb + pa)[0, 0] / 2)
    assert all(np.abs(out[f"imb{i}"]).max() <= 1 for i in range(6)) and np.isfinite(b.transform(X)).all()

    row = np.zeros((1, 1, 32))
    row[..., 0], row[..., 6] = 0.99, 1.01                      # mid 1.0
    row[..., 24:28] = [1.02, 0.97, 0.0, 0.0]
    row[..., 28:32] = [3.0, 1.0, 0.0, 5.0]                      # slot 2 empty; slot 3 at price 0 (< mid)
    tr = create_builder("trade", intensity_halflife=None).fit(row, RAW_COLUMNS)
    got = dict(zip(tr.output_names, tr.transform(row)[0, 0]))
    assert got["trade_count"] == 3
    np.testing.assert_allclose(got["trade_signed"], -np.log1p(3.0))     # 3 buy - 1 sell - 5 sell
    np.testing.assert_allclose(got["vwap_dist"], (3 * 0.02 - 1 * 0.03 - 5 * 1.0) / 9)
    quiet = create_builder("trade").fit(X, RAW_COLUMNS).transform(np.zeros((1, 3, 32)))
    np.testing.assert_array_equal(quiet, 0.0)


def test_chunked_fit_and_transform_equal_whole(X):
    Xl = lob_data(5, T, seed=9)
    mask = np.random.default_rng(0).random(Xl.shape[:2]) > 0.3
    for spec in (FULL_SPEC, PIPELINE_SPECS["robust"], PIPELINE_SPECS["warmup"]):
        whole = FeaturePipeline.from_spec(spec).fit(Xl, mask=mask)
        chunked = FeaturePipeline.from_spec(spec).fit(Xl, mask=mask, chunk_size=2)
        a = whole.transform(Xl, dtype=np.float64)
        np.testing.assert_allclose(chunked.transform(Xl, dtype=np.float64, chunk_size=2), a, atol=1e-9)
        np.testing.assert_array_equal(whole.transform(Xl), a.astype(np.float32))


def test_spec_errors_are_one_line():
    cases = [{"bogus": {}}, {"book": {"levels": 9}}, {"trade": {"halflife": 3}},
             {"temporal": {"inputs": ["mid"]}}, {"book": {}, "temporal": {"windows": [1]}},
             {"normalize": {"clip": 0}}, {"normalize": {"method": "zscore"}}, {"normalize": {"warmup": 0}},
             {"normalize": {"drop_raw": True}}]
    for spec in cases:
        with pytest.raises(FeatureSpecError) as err:
            FeaturePipeline.from_spec(spec)         # before any data is seen
        assert "\n" not in str(err.value)
    with pytest.raises(FeatureSpecError, match="unknown feature builder"):
        create_builder("nope")


def test_groups_and_names_cover_every_output(X):
    pipe = FeaturePipeline.from_spec(FULL_SPEC).fit(X)
    groups = pipe.groups()
    assert list(groups) == pipe.feature_names and len(set(pipe.feature_names)) == pipe.n_features_out
    assert set(groups.values()) == {"raw", "book", "trade", "temporal", "interactions"}
    assert pipe.spec == FULL_SPEC and pipe.lookback == float("inf")


def test_package_imports_only_numpy_and_stdlib(tmp_path):
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    for path in FEATURES_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, f"{path.name} imports {roots}"
    vendored = tmp_path / "vendored_features"
    vendored.mkdir()
    for path in FEATURES_DIR.glob("*.py"):
        (vendored / path.name).write_text(path.read_text())
    code = ("import sys; [sys.modules.__setitem__(m, None) for m in ('torch', 'sklearn', 'pandas', 'lobsweep')];"
            "import numpy as np, vendored_features as f;"
            "p = f.FeaturePipeline.from_spec({'book': {}, 'trade': {}}).fit(np.ones((1, 4, 32)));"
            "print(p.transform(np.ones((1, 4, 32))).shape)")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    expected = FeaturePipeline.from_spec({"book": {}, "trade": {}}).fit(np.ones((1, 4, 32))).n_features_out
    assert res.stdout.strip() == str((1, 4, expected))


@pytest.mark.parametrize("name,params", [
    ("book", {}), ("trade", {"intensity_halflife": None}), ("interactions", BUILDER_PARAMS["interactions"]),
    ("temporal", dict(inputs=["mid", "v3"], lags=[4], deltas=[2], windows=[6], ema_halflives=[]))])
def test_declared_lookback_is_honoured(name, params, X):
    table, names = base_table(X)
    b = create_builder(name, **params).fit(table, names)
    L = b.lookback
    assert L < float("inf")
    t = L + 12
    changed = table.copy()
    changed[:, :t - L] = base_table(lob_data(N_SEQ, T, seed=4))[0][:, :t - L]
    np.testing.assert_allclose(b.transform(changed)[:, t:], b.transform(table)[:, t:], rtol=0, atol=1e-9)
    assert create_builder("trade").lookback == float("inf")


def test_normalize_statistics():
    rng = np.random.default_rng(0)
    n = 4000
    cols = np.stack([rng.normal(5.0, 2.0, n),                               # Gaussian
                     np.where(rng.random(n) < 0.9, 0.0, rng.normal(0, 3, n)),  # sparse: IQR 0
                     np.full(n, 7.0)], axis=-1)                              # constant
    cols[:10, 0] = 1e6                                                       # outliers
    X = cols.reshape(40, 100, 3)
    z = create_builder("normalize", clip=4).fit(X, ["a", "b", "c"]).transform(X)
    assert np.abs(z).max() <= 4 and np.all(z[..., 2] == 0)
    rob = create_builder("normalize", robust=True, clip=4, max_fit_rows=1000).fit(X, ["a", "b", "c"])
    assert abs(rob.center_[0] - 5.0) < 0.3 and abs(rob.scale_[0] - 2.0) < 0.3       # outliers ignored
    assert rob.center_[1] == 0.0 and rob.scale_[1] > 0 and rob.scale_[2] == 1.0
    mask = np.zeros((40, 100), dtype=bool)
    mask[:, 50:] = True
    masked = create_builder("normalize").fit(X, ["a", "b", "c"], mask=mask)
    np.testing.assert_allclose(masked.center_, X[:, 50:].reshape(-1, 3).mean(0), rtol=1e-12)


def test_normalize_none_passes_raw_values(X):
    pipe = FeaturePipeline.from_spec({"normalize": {"method": "none", "clip": 3}}).fit(X)
    np.testing.assert_array_equal(pipe.transform(X, dtype=np.float64), X.astype(np.float64))
    bad = X.copy()
    bad[0, 0, 5], bad[1, 3:, 7] = np.inf, np.nan                 # inf with no finite value yet; then a gap
    out = pipe.transform(bad, dtype=np.float64)
    assert out[0, 0, 5] == 0.0 and (out[1, 3:, 7] == X[1, 2, 7]).all() and np.isfinite(out).all()


def test_warmup_normalisation_matches_reference(X):
    """Step t uses the mean/variance of rows 0..min(t, W-1) of its own sequence; later rows never count."""
    W = 10
    pipe = FeaturePipeline.from_spec({"normalize": {"method": "warmup", "warmup": W, "clip": 50}}).fit(X)
    out = pipe.transform(X, dtype=np.float64)
    floor = 0.1 * pipe.steps[-1].scale_
    x = X.astype(np.float64)
    for t in range(T):
        seen = x[:, :min(t, W - 1) + 1]
        ref = (x[:, t] - seen.mean(1)) / np.sqrt(seen.var(1) + floor ** 2)
        np.testing.assert_allclose(out[:, t], np.clip(ref, -50, 50), rtol=0, atol=1e-7)
    shifted = pipe.transform(X.astype(np.float64) + 0.5, dtype=np.float64)   # a level shift is removed
    np.testing.assert_allclose(shifted, out, atol=1e-4)


def test_drop_raw_keeps_derived_columns_only(X):
    spec = {"book": {"levels": 1}, "normalize": {"drop_raw": True}}
    pipe = FeaturePipeline.from_spec(spec).fit(X)
    full = FeaturePipeline.from_spec({"book": {"levels": 1}}).fit(X)
    assert set(pipe.groups().values()) == {"book"} and not set(pipe.feature_names) & set(RAW_COLUMNS)
    keep = [full.feature_names.index(n) for n in pipe.feature_names]
    np.testing.assert_allclose(pipe.transform(X, dtype=np.float64), full.transform(X, dtype=np.float64)[..., keep])


def test_forward_fill_is_the_documented_policy_for_every_caller_shape():
    """The one forward-fill (loader, pipeline, baseline): [N, T] and [N, T, R], dtype kept."""
    from lobsweep.features import forward_fill
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 40, 4)).astype(np.float32)
    x[0, :3, 1] = np.nan
    x[1, 7:11, 2] = np.inf
    x[2, 5, :] = -np.inf
    out = forward_fill(x)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, reference_repair(x).astype(np.float32))
    np.testing.assert_array_equal(forward_fill(x[..., 2]), out[..., 2])          # one column, [N, T]
    clean = rng.normal(size=(2, 5))
    assert forward_fill(clean) is clean
