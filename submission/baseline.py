"""A trivial causal baseline and its submission zip: order-book imbalance EMAs + least squares.

Per row (float64), with v0 the best bid volume, v6 the best ask volume:

    imbalance  = (v0 - v6) / (|v0| + |v6| + 1e-9)          in [-1, 1] even for signed volumes
    trade_flow = sum_k sign(dp_k - mid) * dv_k,  mid = (p0 + p6) / 2
    features   = [1, EMA_h(imbalance) for h in IMBALANCE_HALF_LIVES, EMA_h(trade_flow) for h in FLOW_HALF_LIVES]
    prediction = features @ coef                           coef float64 [n_features, 2]

An EMA with half-life h steps updates e += a * (x - e), a = 1 - 0.5 ** (1 / h),
starting at the first value of each sequence. A non-finite input value is
replaced by the last finite one of its column in the sequence (0 before any),
as ``load(..., repair_features=True)`` does for the fit.
``coef`` is the weighted least-squares fit on the need_prediction rows of the
train file, with the metric's weights |y|. ``predict_batch`` and the zip's
``solution.py`` run the same arithmetic in the same order, so the streaming
predictions equal the batch ones to float64 round-off.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from ..data.contract import ASK_PRICE, ASK_VOL, BID_PRICE, BID_VOL, TRADE_PRICE, TRADE_VOL, WEIGHT_FLOOR
from ..data.loader import load
from ..data.metric import score
from ..features.base import forward_fill

IMBALANCE_HALF_LIVES = (2.0, 10.0, 50.0)
FLOW_HALF_LIVES = (10.0,)
RIDGE = 1e-6                     # relative to the mean diagonal of the normal matrix; keeps it invertible

_V_BID, _V_ASK = BID_VOL.start, ASK_VOL.start
_P_BID, _P_ASK = BID_PRICE.start, ASK_PRICE.start
_DP, _DV = list(range(TRADE_PRICE.start, TRADE_PRICE.stop)), list(range(TRADE_VOL.start, TRADE_VOL.stop))
USED = [_V_BID, _V_ASK, _P_BID, _P_ASK, *_DP, *_DV]      # state indices the baseline reads


def _alphas(params: dict) -> np.ndarray:
    hl = np.asarray(list(params["imbalance_half_lives"]) + list(params["flow_half_lives"]), dtype=np.float64)
    return 1.0 - 0.5 ** (1.0 / hl)


def features_batch(X: np.ndarray, params: dict) -> np.ndarray:
    """Design matrix float64 [N, T, 1 + n_ema] from features X [N, T, 32] (each sequence from its start)."""
    col = {i: forward_fill(X[..., i].astype(np.float64)) for i in USED}
    vb, va = col[_V_BID], col[_V_ASK]
    imbalance = (vb - va) / (np.abs(vb) + np.abs(va) + 1e-9)
    mid = (col[_P_BID] + col[_P_ASK]) / 2.0
    flow = np.zeros_like(mid)
    for p, v in zip(_DP, _DV):
        flow = flow + np.sign(col[p] - mid) * col[v]
    n_imb = len(params["imbalance_half_lives"])
    inputs = [imbalance] * n_imb + [flow] * len(params["flow_half_lives"])
    alphas = _alphas(params)
    N, T = X.shape[:2]
    out = np.empty((N, T, 1 + len(inputs)), dtype=np.float64)
    out[..., 0] = 1.0
    for j, (x, a) in enumerate(zip(inputs, alphas), start=1):
        e = x[:, 0].copy()
        out[:, 0, j] = e
        for t in range(1, T):
            e = e + a * (x[:, t] - e)
            out[:, t, j] = e
    return out


def predict_batch(params: dict, X: np.ndarray) -> np.ndarray:
    """Predictions float64 [N, T, 2] for features X [N, T, 32]."""
    return features_batch(X, params) @ np.asarray(params["coef"], dtype=np.float64)


def fit_baseline(train_path, *, imbalance_half_lives=IMBALANCE_HALF_LIVES, flow_half_lives=FLOW_HALF_LIVES) -> dict:
    """Fit the baseline on a train file; returns JSON-able params (coef [n_features][2], train score)."""
    data = load(str(train_path), require_targets=True, repair_features=True)   # same fill as solution.py
    params = {"kind": "imbalance_ema_least_squares", "imbalance_half_lives": [float(h) for h in imbalance_half_lives],
              "flow_half_lives": [float(h) for h in flow_half_lives]}
    A = features_batch(data.X, params)[data.mask]            # [rows, k]
    Y = data.Y[data.mask].astype(np.float64)                 # [rows, 2]
    coef = np.empty((A.shape[1], 2))
    for j in range(2):
        w = np.maximum(np.abs(Y[:, j]), WEIGHT_FLOOR)
        G = (A * w[:, None]).T @ A
        G[np.diag_indices_from(G)] += RIDGE * np.trace(G) / len(G)
        coef[:, j] = np.linalg.solve(G, (A * w[:, None]).T @ Y[:, j])
    params["coef"] = coef.tolist()
    params["train_score"] = score(Y, A @ coef)
    params["train_fingerprint"] = data.fingerprint
    return params


SOLUTION_PY = '''"""Baseline submission: EMAs of level-1 imbalance and signed trade flow, then a linear map."""
import json
import math
import os

import numpy as np

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "params.json")) as _fh:
    _PARAMS = json.load(_fh)


class PredictionModel:
    def __init__(self):
        hl = _PARAMS["imbalance_half_lives"] + _PARAMS["flow_half_lives"]
        self.alphas = [1.0 - 0.5 ** (1.0 / h) for h in hl]
        self.n_imb = len(_PARAMS["imbalance_half_lives"])
        self.coef = [[float(c) for c in row] for row in _PARAMS["coef"]]
        self.seq_ix = None
        self.last = None
        self.ema = None

    def predict(self, data_point):
        new_seq = data_point.seq_ix != self.seq_ix
        if new_seq:
            self.seq_ix = data_point.seq_ix
            self.last = [0.0] * len(USED)
        s = data_point.state
        x = []
        for k, i in enumerate(USED):
            v = float(s[i])
            if math.isfinite(v):
                self.last[k] = v
            else:
                v = self.last[k]
            x.append(v)
        vb, va, pb, pa = x[0], x[1], x[2], x[3]
        imbalance = (vb - va) / (abs(vb) + abs(va) + 1e-9)
        mid = (pb + pa) / 2.0
        flow = 0.0
        for k in range(N_TRADES):
            d = x[4 + k] - mid
            flow = flow + (1.0 if d > 0 else -1.0 if d < 0 else 0.0) * x[4 + N_TRADES + k]
        inputs = [imbalance] * self.n_imb + [flow] * (len(self.alphas) - self.n_imb)
        if new_seq:
            self.ema = inputs
        else:
            self.ema = [e + a * (u - e) for e, a, u in zip(self.ema, self.alphas, inputs)]
        if not data_point.need_prediction:
            return None
        feats = [1.0] + self.ema
        return np.array([sum(f * row[j] for f, row in zip(feats, self.coef)) for j in (0, 1)])
'''


def solution_source() -> str:
    """The zip's solution.py, with the state-vector indices filled in from the contract."""
    header = f"USED = {USED}\nN_TRADES = {len(_DP)}\n"
    head, sep, tail = SOLUTION_PY.partition("\n\nclass PredictionModel")
    return head + "\n" + header + sep + tail


def write_baseline_zip(params: dict, out_zip) -> str:
    """Write ``solution.py`` + ``params.json`` into ``out_zip`` (atomically); returns its path."""
    out_zip = str(out_zip)
    tmp = out_zip + ".tmp"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("solution.py", solution_source())
            zf.writestr("params.json", json.dumps(params, indent=1))
        os.replace(tmp, out_zip)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_zip
