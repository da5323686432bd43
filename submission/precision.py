"""The score gate of compact weight storage (``lobsweep package --precision float16|int8|int8-ort``).

A compact zip stores its members' weight matrices in float16 or int8 (engine_weights.py)
and computes in float32 over the decoded weights. It is accepted only if it keeps the
official score (weighted Pearson, mean of t0 and t1) within ``tolerance`` (1e-4) of the
float32 zip's, on the report rows of a dataset (the report sequences of its valid file,
split as the members' specs say):

- per member: its models' batch forward with the float32 weights and with the decoded
  weights of the mode; a member over the tolerance fails, or is stored in float32 with
  ``fallback``;
- then the ensemble (weights, post_scale) with each member's chosen mode, the same way.

Why the batch forward: the zip's streaming engine reproduces the batch forward of the
same weights to ~1e-6 per prediction (the float32 parity tests), so the two scores are
those of the two zips, without streaming every member twice through Python. A test
scores both zips step by step to hold that.

``int8-ort`` (GRU groups stepped by onnxruntime int8 graphs, activations quantised per
step) has no batch forward that reproduces it, so ``stream_gate`` streams the first
``STREAM_SEQS`` report sequences through the float32 engine and the engine the zip runs,
and compares the whole ensemble's official scores. It is all or nothing: a failing
ensemble is refused, or with ``fallback`` stored in float32 entirely.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..data.loader import data_paths, load
from ..data.metric import score
from ..data.splits import report_roles, split_info
from ..errors import UserError
from .engine_weights import PRECISIONS, round_trip

TOLERANCE = 1e-4          # the bar: |score(compact zip) - score(float32 zip)| on report rows
STREAM_SEQS = 32          # int8-ort: report sequences streamed step by step through both engines


class PrecisionError(UserError):
    """A compact mode moves a member's (or the ensemble's) score by more than the tolerance."""


@dataclass
class GateData:
    """The report sequences of one valid file: raw X [N, T, 32], Y [N, T, 2], mask [N, T]."""

    path: str
    X: np.ndarray
    Y: np.ndarray
    mask: np.ndarray


@dataclass
class MemberGate:
    name: str
    precision: str            # the mode asked for
    stored: str               # the mode the member is stored in (float32 after a fallback)
    score32: float
    score: float              # with the asked mode's weights (nan when they could not be encoded)
    problem: str = ""         # why the asked mode could not be encoded, if it could not
    fell_back: str = ""       # why it is stored in float32 (with fallback), if it is

    @property
    def delta(self) -> float:
        return self.score - self.score32 if not self.problem else float("inf")


def check_precision(precision: str, what: str = "--precision") -> str:
    """``precision`` when it is a weight precision the zip knows; else one line naming ``what`` was given."""
    if precision not in PRECISIONS:
        raise UserError(f"{what} {precision!r}: precision must be one of {', '.join(PRECISIONS)}")
    return precision


def gate_data(data_dir: str | None, bundles) -> GateData:
    """The report rows of ``data_dir``'s valid file (default: the dataset the first member was trained on)."""
    spec_data = bundles[0].spec.get("data", {})
    d = data_dir or spec_data.get("data_dir")
    path = data_paths(d)["valid"] if d else None
    if not path or not os.path.isfile(path):
        where = f"--data {d}: no valid.parquet" if data_dir else "cannot find the members' valid file"
        raise UserError(f"{where}; the precision gate scores the report rows of a dataset (pass --data DIR)")
    valid = load(path)
    split = spec_data.get("split") or split_info()
    report = report_roles(valid.seq_ix, split)
    return GateData(path=path, X=valid.X[report], Y=valid.Y[report], mask=valid.mask[report])


def _predict(bundle, state_dicts: list[dict], X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float64 [rows, 2]: the mean of the models' batch forwards with ``state_dicts`` (numpy arrays)."""
    import torch

    from ..models import create_model
    from ..training.trainer import predict
    out = 0.0
    for sd in state_dicts:
        model = create_model(bundle.spec["family"], **bundle.spec["config"])
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
        out = out + predict(model.eval(), X, 16, "cpu")[mask].astype(np.float64)
    return out / len(state_dicts)


def _mean_score(Y: np.ndarray, P: np.ndarray) -> float:
    return float(score(Y, P)["mean"])


class Gate:
    """Per-member and ensemble score checks of one compact mode over one dataset's report rows."""

    def __init__(self, data: GateData, precision: str, tolerance: float = TOLERANCE, fallback: bool = False):
        self.data, self.precision, self.tolerance, self.fallback = data, check_precision(precision), tolerance, fallback
        self.Y = data.Y[data.mask].astype(np.float64)
        self._features: dict[str, np.ndarray] = {}
        self.P32: list[np.ndarray] = []       # per member, float32 weights
        self.Pc: list[np.ndarray | None] = []  # per member, the asked mode's weights (None: not encodable)

    def _X(self, bundle) -> np.ndarray:
        key = json.dumps(bundle.spec["features"], sort_keys=True)
        if key not in self._features:
            self._features[key] = bundle.pipeline().transform(self.data.X)
        return self._features[key]

    def member(self, name: str, bundle, arrays: list[dict]) -> MemberGate:
        """Gate one member (``arrays``: its models' float32 state_dicts); its stored mode is decided here."""
        X = self._X(bundle)
        p32 = _predict(bundle, arrays, X, self.data.mask)
        self.P32.append(p32)
        s32 = _mean_score(self.Y, p32)
        try:
            pc = _predict(bundle, [round_trip(a, self.precision) for a in arrays], X, self.data.mask)
        except ValueError as exc:          # a weight the mode cannot hold (non-finite, beyond float16)
            self.Pc.append(None)
            return self._decide(MemberGate(name, self.precision, self.precision, s32, float("nan"), str(exc)))
        self.Pc.append(pc)
        return self._decide(MemberGate(name, self.precision, self.precision, s32, _mean_score(self.Y, pc)))

    def _decide(self, g: MemberGate) -> MemberGate:
        if abs(g.delta) <= self.tolerance:
            return g
        if not self.fallback:
            raise PrecisionError(f"member {g.name}: {self._why(g)}, over the {self.tolerance:g} gate on "
                                 f"{os.path.basename(self.data.path)}'s report rows; use --precision float32, "
                                 f"or --fallback to store it in float32")
        g.stored, g.fell_back = "float32", "over the gate"
        return g

    def _why(self, g: MemberGate) -> str:
        if g.problem:
            return f"{g.precision} cannot store its weights ({g.problem})"
        return f"{g.precision} changes its score by {g.delta:+.2e} ({g.score32:.6f} -> {g.score:.6f})"

    def ensemble(self, gates: list[MemberGate], weights: np.ndarray, post_scale: np.ndarray) -> dict:
        """Score delta of the whole ensemble with each member in its stored mode; refuses (or, with
        fallback, stores the member that moves most in float32) until it is within the tolerance."""
        w = np.asarray(weights, dtype=np.float64)
        while True:
            Pc = [pc if g.stored != "float32" else p32 for g, pc, p32 in zip(gates, self.Pc, self.P32)]
            e32 = (np.stack(self.P32, 1) * w[None]).sum(1) * post_scale
            ec = (np.stack(Pc, 1) * w[None]).sum(1) * post_scale
            s32, sc = _mean_score(self.Y, e32), _mean_score(self.Y, ec)
            if abs(sc - s32) <= self.tolerance:
                return {"score32": s32, "score": sc, "delta": sc - s32}
            compact = [i for i, g in enumerate(gates) if g.stored != "float32"]
            worst = max(compact, key=lambda i: abs(gates[i].delta))
            if not self.fallback:
                raise PrecisionError(f"ensemble: {self.precision} changes its score by {sc - s32:+.2e}, over the "
                                     f"{self.tolerance:g} gate (member {gates[worst].name} moves most, "
                                     f"{gates[worst].delta:+.2e}); use --fallback or --precision float32")
            gates[worst].stored, gates[worst].fell_back = "float32", "so that the ensemble passes the gate"


def stream_predictions(engine, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float64 [rows, 2]: ``engine`` streamed over raw X [N, T, 32], reset per sequence; rows where ``mask``."""
    P = []
    for s in range(len(X)):
        engine.reset()
        for t in range(X.shape[1]):
            p = engine.step(X[s, t], bool(mask[s, t]))
            if p is not None:
                P.append(p)
    return np.asarray(P, dtype=np.float64).reshape(-1, 2)


def stream_gate(data: GateData, engine32, engine, precision: str = "int8-ort", n_seq: int = STREAM_SEQS,
                tolerance: float = TOLERANCE, fallback: bool = False) -> dict:
    """The ensemble's score delta between ``engine`` and ``engine32``, both streamed over the first ``n_seq``
    report sequences; PrecisionError over the tolerance, unless ``fallback`` (then ``stored`` is float32)."""
    n = min(int(n_seq), len(data.X))
    X, mask = data.X[:n], data.mask[:n]
    Y = data.Y[:n][mask].astype(np.float64)
    s32 = _mean_score(Y, stream_predictions(engine32, X, mask))
    sc = _mean_score(Y, stream_predictions(engine, X, mask))
    rec = {"score32": s32, "score": sc, "delta": sc - s32, "streamed_seqs": n, "stored": precision}
    if abs(sc - s32) > tolerance:
        why = (f"ensemble: {precision} changes its score by {sc - s32:+.2e} ({s32:.6f} -> {sc:.6f}), over the "
               f"{tolerance:g} gate on the first {n} report sequences of {os.path.basename(data.path)} (streamed)")
        if not fallback:
            raise PrecisionError(f"{why}; use --precision int8 or float32, or --fallback to store it in float32")
        rec["stored"], rec["fell_back"] = "float32", "the ensemble is over the gate: every member is stored in float32"
    return rec
