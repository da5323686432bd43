"""FeaturePipeline: raw 32 columns -> named, causal, z-normalised features.

Shapes: N sequences, T steps, R = 32 raw columns, F output features.

The spec is a JSON-able dict; every key is optional, and the builders run in
this fixed order, each appending its named outputs to a running table that
starts as the raw columns (so later builders take raw or derived columns by
name)::

    {"book": {...}, "trade": {...},
     "temporal": {"inputs": [...], "lags": [...], "deltas": [...], "windows": [...],
                  "ema_halflives": [...], "relative": true},
     "interactions": {"pairs": [[a, b], ...]},
     "normalize": {"method": "global", "robust": false, "clip": 10, "drop_raw": false}}

An absent (or null) key skips that builder; ``normalize`` always runs, its key
only sets parameters. ``{}`` therefore yields the 32 raw columns z-normalised;
``{"normalize": {"method": "none"}}`` the raw columns as they are (non-finite
values handled), ``"warmup"`` scales each sequence by its own warm-up steps,
and ``drop_raw`` keeps derived columns only (features/normalize.py).

NaN/inf policy (identical in batch and streaming): a non-finite raw value is
replaced by the last finite value of the same column earlier in the current
sequence, or 0.0 if there is none yet. Derived features are computed from the
repaired row. The normaliser maps any remaining NaN to 0 and +-inf to +-clip,
then clips (method none: only +-inf), so the output is always finite.

Batch work is done in float64 on chunks of whole sequences (at most about
``CHUNK_ELEMENTS`` table entries each), so 10,000 x 1000 x 32 inputs never
build a float64 copy of the whole table; the output is float32 by default.
Streaming ``update`` does the same arithmetic one row at a time into a
preallocated table, so its output equals ``transform`` to rounding.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np

from . import book, interactions, normalize, temporal, trade  # noqa: F401  (register builders)
from .base import N_RAW, RAW_COLUMNS, FeatureBuilder, FeatureSpecError, create_builder, forward_fill

APPEND_ORDER = ("book", "trade", "temporal", "interactions")
SPEC_KEYS = APPEND_ORDER + ("normalize",)
CHUNK_ELEMENTS = 1 << 23     # ~64 MB of float64 table per chunk
_FORMAT = "lobsweep.features/1"


class FeaturePipeline:
    """Builders from a spec, fitted together; batch ``transform`` and streaming ``update``."""

    def __init__(self, spec: dict[str, Any] | None = None):
        spec = {} if spec is None else spec
        if not isinstance(spec, dict):
            raise FeatureSpecError(f"feature spec must be a JSON object, got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise FeatureSpecError(f"feature spec has unknown key(s) {unknown}; allowed: {list(SPEC_KEYS)}")
        for key, params in spec.items():
            if params is not None and not isinstance(params, dict):
                raise FeatureSpecError(f"feature spec {key!r} must be an object of parameters or null")
        try:
            self._spec = json.loads(json.dumps(spec))
        except (TypeError, ValueError) as exc:
            raise FeatureSpecError(f"feature spec is not JSON-serialisable: {exc}") from None
        self.steps: list[FeatureBuilder] = [
            create_builder(k, **self._spec[k]) for k in APPEND_ORDER if self._spec.get(k) is not None]
        self.steps.append(create_builder("normalize", **(self._spec.get("normalize") or {})))
        self._bind_all()          # fail fast on unknown column names, before any data is read

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> FeaturePipeline:
        return cls(spec)

    @property
    def spec(self) -> dict[str, Any]:
        """The input spec, as given (a copy)."""
        return copy.deepcopy(self._spec)

    # ---- layout ------------------------------------------------------------
    def _bind_all(self, n_rows: int | None = None) -> None:
        """Bind every builder to the names it will see; set table names, groups, appender slots.

        Appender i writes table columns [lo, hi) = self._slots[i] and reads [0, lo);
        the final stage reads the whole table (``_width`` columns) and outputs ``_names``.
        """
        names, groups, self._slots = list(RAW_COLUMNS), ["raw"] * N_RAW, []
        for b in self.steps:
            b.begin_fit(names, n_rows)
            if b.replaces_input:
                break
            clash = sorted(set(names) & set(b.output_names_))
            if clash:
                raise FeatureSpecError(f"{b.name}: output name(s) {clash[:5]} already exist in the table")
            self._slots.append((len(names), len(names) + len(b.output_names_)))
            names += b.output_names_
            groups += [b.name] * len(b.output_names_)
        group_of = dict(zip(names, groups))
        self._width = len(names)
        self._names = list(self.steps[-1].output_names_)
        self._groups = [group_of[n] for n in self._names]

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise RuntimeError("FeaturePipeline is not fitted; call fit or from_json first")

    @property
    def feature_names(self) -> list[str]:
        self._check_fitted()
        return list(self._names)

    @property
    def n_features_out(self) -> int:
        self._check_fitted()
        return len(self._names)

    def groups(self) -> dict[str, str]:
        """Feature name -> group ("raw" or the builder name), e.g. for permutation importance."""
        self._check_fitted()
        return dict(zip(self._names, self._groups))

    @property
    def lookback(self) -> float:
        """Steps of history an output may depend on (sum over the chain; UNBOUNDED with EMAs)."""
        return sum(b.lookback for b in self.steps)

    # ---- batch -------------------------------------------------------------
    def _chunk_len(self, X: np.ndarray, chunk_size: int | None, width: int) -> int:
        if chunk_size is not None:
            return max(1, int(chunk_size))
        return max(1, CHUNK_ELEMENTS // max(1, X.shape[1] * width))

    @staticmethod
    def _check_raw(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 3 or X.shape[-1] != N_RAW:
            raise ValueError(f"expected raw features [n_seq, T, {N_RAW}], got shape {X.shape}")
        return X

    def _table(self, Xc: np.ndarray, n_steps: int) -> np.ndarray:
        """Raw chunk [n,T,R] -> repaired table [n,T,width] through the first n_steps appenders."""
        width = self._slots[n_steps - 1][1] if n_steps else N_RAW
        table = np.empty(Xc.shape[:2] + (width,))
        table[..., :N_RAW] = forward_fill(np.array(Xc, dtype=np.float64))
        for b, (lo, hi) in zip(self.steps[:n_steps], self._slots):
            table[..., lo:hi] = b.transform(table[..., :lo])
        return table

    def fit(self, X: np.ndarray, mask: np.ndarray | None = None,
            chunk_size: int | None = None) -> FeaturePipeline:
        """Fit every builder on X[N,T,R]; statistics use rows where mask[N,T] (all if None).

        Builders are finished in order, so one that learns statistics sees the
        outputs of the fitted builders before it, computed chunk by chunk.
        """
        X = self._check_raw(X)
        if mask is not None and np.shape(mask) != X.shape[:2]:
            raise ValueError(f"mask must be [n_seq, T] = {X.shape[:2]}, got {np.shape(mask)}")
        self.fitted_ = False
        self._bind_all(int(X.shape[0] * X.shape[1] if mask is None else np.count_nonzero(mask)))
        for i, b in enumerate(self.steps):
            if b.needs_data:
                step = self._chunk_len(X, chunk_size, len(b.input_names_))
                for s in range(0, X.shape[0], step):
                    b.partial_fit(self._table(X[s:s + step], i), None if mask is None else mask[s:s + step])
            b.end_fit()
        self.fitted_ = True
        return self

    def transform(self, X: np.ndarray, dtype: Any = np.float32, chunk_size: int | None = None) -> np.ndarray:
        """X[N,T,R] -> features [N,T,F] of ``dtype`` (finite, clipped to the normaliser's bound)."""
        self._check_fitted()
        X = self._check_raw(X)
        out = np.empty(X.shape[:2] + (len(self._names),), dtype=dtype)
        step = self._chunk_len(X, chunk_size, len(self._names))
        for s in range(0, X.shape[0], step):
            out[s:s + step] = self.steps[-1].transform(self._table(X[s:s + step], len(self._slots)))
        return out

    # ---- streaming ---------------------------------------------------------
    def init_state(self) -> dict[str, Any]:
        """Fresh state for one sequence: last finite raw row, table buffer, builder states."""
        self._check_fitted()
        table = np.zeros(self._width)
        return {"last": np.zeros(N_RAW), "table": table,
                "steps": [b.init_state() for b in self.steps],
                "views": [(table[:lo], table[lo:hi]) for lo, hi in self._slots]}

    def update(self, state: dict[str, Any], row: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """One step: raw row[R] -> (state, float64 features[F]); mutates and returns state."""
        row = np.asarray(row, dtype=np.float64)
        if row.shape != (N_RAW,):
            raise ValueError(f"expected a raw row of shape ({N_RAW},), got {row.shape}")
        last, table, states = state["last"], state["table"], state["steps"]
        if not math.isfinite(row.sum()):     # cheap test; the repair itself is exact
            row = np.where(np.isfinite(row), row, last)
        last[:] = row
        table[:N_RAW] = row
        for b, st, (inputs, outputs) in zip(self.steps, states, state["views"]):
            outputs[:] = b._update_row(st, inputs)
        return state, self.steps[-1]._update_row(states[-1], table)

    # ---- serialisation -----------------------------------------------------
    def to_json(self) -> str:
        """Spec, every builder's params and fitted statistics; from_json restores it exactly."""
        self._check_fitted()
        return json.dumps({"format": _FORMAT, "spec": self._spec,
                           "steps": [b.to_dict() for b in self.steps]})

    @classmethod
    def from_json(cls, s: str) -> FeaturePipeline:
        d = json.loads(s)
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise FeatureSpecError(f"not a serialised FeaturePipeline (expected format {_FORMAT!r})")
        pipe = cls(d["spec"])                      # same spec, so the same table layout
        steps = [FeatureBuilder.from_dict(b) for b in d["steps"]]
        if [b.output_names_ for b in steps] != [b.output_names_ for b in pipe.steps]:
            raise FeatureSpecError("serialised FeaturePipeline: builders do not match its spec")
        pipe.steps = steps
        pipe.fitted_ = True
        return pipe
