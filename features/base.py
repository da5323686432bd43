"""The FeatureBuilder protocol, its registry, and the helpers builders share.

This package imports only numpy and the standard library: the submission zip
vendors features/ verbatim and rebuilds pipelines inside a container that has
no lob-sweep, so the raw column layout is copied here from the data contract
(../shared/CONTRACT.md) rather than imported.

Shapes: N sequences, T steps, F_in input columns, F_out output columns.

A builder follows scikit-learn conventions without inheriting from it:
``__init__`` stores parameters only; ``fit(X[N,T,F_in], names)`` binds input
columns by name and learns ``*_`` attributes (a second fit replaces the first);
``transform(X[N,T,F_in]) -> [N,T,F_out]``. Its streaming half is
``init_state()`` and ``update(state, row[F_in]) -> (state, feats[F_out])``,
equal to ``transform`` row by row. ``update`` may mutate ``state`` in place and
returns it. ``lookback`` is the number of past steps an output depends on, or
``UNBOUNDED`` for recurrences such as EMAs (their memory decays but never ends).

Fitting is split in three so a pipeline can stream chunks through a builder
that learns statistics: ``begin_fit(names, n_rows)``, ``partial_fit(X, mask)``
(only called when ``needs_data``), ``end_fit()``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

PRICE_COLS = [f"p{i}" for i in range(12)]          # p0..p5 bids (best first), p6..p11 asks
VOLUME_COLS = [f"v{i}" for i in range(12)]         # volumes at the same levels
TRADE_PRICE_COLS = [f"dp{i}" for i in range(4)]    # trade prices since the previous snapshot
TRADE_VOLUME_COLS = [f"dv{i}" for i in range(4)]   # their volumes (0 where no trade)
RAW_COLUMNS = PRICE_COLS + VOLUME_COLS + TRADE_PRICE_COLS + TRADE_VOLUME_COLS
N_RAW = len(RAW_COLUMNS)
N_LEVELS = 6

UNBOUNDED = math.inf   # lookback of a recurrent feature (EMA): every past step counts
EPS = 1e-9             # floor on denominators that can be 0 (empty book side, no trades)


class FeatureSpecError(ValueError):
    """A feature spec or builder parameter is invalid; the message is one line.

    lob-sweep's CLI reports it like its own UserError (features/ cannot import
    lobsweep.errors, see the module docstring).
    """


_REGISTRY: dict[str, type[FeatureBuilder]] = {}


def register_builder(name: str):
    """Class decorator: register a FeatureBuilder subclass under ``name``."""

    def deco(cls: type[FeatureBuilder]) -> type[FeatureBuilder]:
        if name in _REGISTRY:
            raise ValueError(f"feature builder {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_builders() -> list[str]:
    """Registered builder names, in registration order."""
    return list(_REGISTRY)


def create_builder(name: str, **params: Any) -> FeatureBuilder:
    """Instantiate a registered builder; unknown names or params raise FeatureSpecError."""
    if name not in _REGISTRY:
        raise FeatureSpecError(f"unknown feature builder {name!r}; known: {', '.join(_REGISTRY)}")
    cls = _REGISTRY[name]
    unknown = sorted(set(params) - set(cls.param_names))
    if unknown:
        raise FeatureSpecError(
            f"feature builder {name!r} has no parameter(s) {unknown}; "
            f"allowed: {list(cls.param_names)}")
    builder = cls(**params)
    builder.validate_params()
    return builder


def forward_fill(x: np.ndarray) -> np.ndarray:
    """x [N, T, ...]: each non-finite value replaced by the last finite one before it in its
    sequence (along T), 0.0 where the sequence has none yet.

    Returns ``x`` itself when every value is finite, else a new array of ``x``'s dtype. The
    project's one forward-fill: the loader's ``repair_features``, the pipeline's NaN policy
    (batch; streaming keeps the last finite value per column) and the baseline use it.
    """
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    steps = np.arange(x.shape[1]).reshape((1, -1) + (1,) * (x.ndim - 2))
    src = np.maximum.accumulate(np.where(bad, -1, steps), axis=1)      # last finite step, -1 if none
    filled = np.take_along_axis(x, np.maximum(src, 0), axis=1)
    return np.where(src >= 0, filled, 0.0).astype(x.dtype, copy=False)


def slog(x: np.ndarray) -> np.ndarray:
    """Signed log, sign(x) * log1p(|x|): finite for any finite x, tames heavy tails."""
    return np.sign(x) * np.log1p(np.abs(x))


def ema_alpha(halflife: float) -> float:
    """Decay per step of an EMA whose weights halve every ``halflife`` steps."""
    return 0.5 ** (1.0 / float(halflife))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class FeatureBuilder:
    """Base class: parameter handling, name binding, batch/stream plumbing.

    Subclasses set ``param_names`` (the ``__init__`` keywords), implement
    ``_bind(names) -> output names`` (resolve input columns, may raise
    FeatureSpecError), and either ``_compute(x[..., F_in])`` for stateless
    builders or ``stateful = True`` with ``_new_state`` / ``_step`` (written on
    ``...``-leading arrays so one code path serves a row and a batch of rows).
    """

    name: ClassVar[str] = ""
    param_names: ClassVar[tuple[str, ...]] = ()
    needs_data: ClassVar[bool] = False      # True: partial_fit learns statistics from rows
    replaces_input: ClassVar[bool] = False  # True: output replaces the table (normalize)
    stateful: ClassVar[bool] = False

    def get_params(self) -> dict[str, Any]:
        return {k: _jsonable(getattr(self, k)) for k in self.param_names}

    def validate_params(self) -> None:
        """Raise FeatureSpecError on a bad parameter (called by create_builder and fit)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---- fitting ---------------------------------------------------------
    def begin_fit(self, names: list[str], n_rows: int | None = None) -> FeatureBuilder:
        self.validate_params()
        self.fitted_ = False
        names = [str(n) for n in names]
        self.output_names_ = list(self._bind(names))
        self.input_names_ = names
        return self

    def partial_fit(self, X: np.ndarray, mask: np.ndarray | None = None) -> FeatureBuilder:
        return self

    def end_fit(self) -> FeatureBuilder:
        self.fitted_ = True
        return self

    def fit(self, X: np.ndarray, names: list[str], mask: np.ndarray | None = None) -> FeatureBuilder:
        """Bind to ``names`` (len F_in) and learn statistics from X[N,T,F_in] (rows where mask)."""
        X = np.asarray(X)
        if X.ndim != 3 or X.shape[-1] != len(names):
            raise ValueError(f"{self.name}: X must be [N, T, {len(names)}], got {X.shape}")
        n_rows = int(X.shape[0] * X.shape[1] if mask is None else np.count_nonzero(mask))
        self.begin_fit(names, n_rows)
        if self.needs_data:
            self.partial_fit(X, mask)
        return self.end_fit()

    def _bind(self, names: list[str]) -> list[str]:
        raise NotImplementedError

    def _stats(self) -> dict[str, Any]:
        """Learned statistics, JSON-able (builders with needs_data override)."""
        return {}

    def _load_stats(self, stats: dict[str, Any]) -> None:
        pass

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise RuntimeError(f"feature builder {self.name!r} is not fitted; call fit first")

    @property
    def output_names(self) -> list[str]:
        self._check_fitted()
        return list(self.output_names_)

    @property
    def lookback(self) -> float:
        """Past steps an output depends on: an int, or UNBOUNDED (math.inf) for recurrences."""
        return 0

    # ---- serialisation ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        fitted = None
        if getattr(self, "fitted_", False):
            fitted = {"input_names": list(self.input_names_), "stats": self._stats()}
        return {"name": self.name, "params": self.get_params(), "fitted": fitted}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureBuilder:
        builder = create_builder(d["name"], **d["params"])
        fitted = d.get("fitted")
        if fitted:
            builder.input_names_ = list(fitted["input_names"])
            builder.output_names_ = list(builder._bind(builder.input_names_))
            builder._load_stats(fitted["stats"])
            builder.fitted_ = True
        return builder

    # ---- batch and streaming --------------------------------------------
    def _compute(self, x: np.ndarray) -> np.ndarray:
        """Stateless map x[..., F_in] -> [..., F_out] (float64)."""
        raise NotImplementedError

    def init_state(self) -> Any:
        """Fresh per-sequence state (None for stateless builders)."""
        self._check_fitted()
        return self._new_state(()) if self.stateful else None

    def _step(self, state: Any, x: np.ndarray) -> np.ndarray:
        """Stateful step on x[..., F_in] (one row, or one row of B sequences)."""
        raise NotImplementedError

    def _new_state(self, lead: tuple[int, ...]) -> Any:
        """State for rows of shape lead + (F_in,): () streams one row, (B,) a batch."""
        raise NotImplementedError

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X[N,T,F_in] -> float64 [N,T,F_out], each sequence processed from its step 0."""
        X = self._check_input(X)
        if not self.stateful:
            return self._compute(X)
        out = np.empty(X.shape[:2] + (len(self.output_names_),))
        state = self._new_state(X.shape[:1])
        for t in range(X.shape[1]):
            out[:, t] = self._step(state, X[:, t])
        return out

    def _check_input(self, X: np.ndarray) -> np.ndarray:
        """Fitted check, then X as float64 [N, T, F_in]."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 3 or X.shape[-1] != len(self.input_names_):
            raise ValueError(f"{self.name}: X must be [N, T, {len(self.input_names_)}], got {X.shape}")
        return X

    def update(self, state: Any, row: np.ndarray) -> tuple[Any, np.ndarray]:
        """One step: row[F_in] -> (state, feats[F_out] float64)."""
        return state, self._update_row(state, np.asarray(row, dtype=np.float64))

    def _update_row(self, state: Any, row: np.ndarray) -> np.ndarray:
        """``update`` for a float64 row, without conversion (the pipeline's hot path)."""
        return self._step(state, row) if self.stateful else self._compute(row)


def resolve(names: list[str], wanted: list[str], builder: str) -> list[int]:
    """Indices of ``wanted`` columns in ``names``; a missing one raises FeatureSpecError."""
    pos = {n: i for i, n in enumerate(names)}
    missing = [w for w in wanted if w not in pos]
    if missing:
        shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
        raise FeatureSpecError(f"{builder}: unknown input column(s) {missing}; available: {shown}")
    return [pos[w] for w in wanted]
