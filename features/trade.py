"""Trade-flow features from the trades printed since the previous snapshot.

Inputs are the raw columns p0, p6 (best bid and ask, for the current mid),
dp0..dp3 (trade prices) and dv0..dv3 (trade volumes; a slot with dv == 0 holds
no trade, whatever its dp). With w = |dv| and mid = (p0 + p6) / 2, outputs are:

    trade_count       number of slots with w > 0
    log_trade_vol     slog(sum w)
    trade_signed      slog(sum w * sign(dp - mid)): buyer- minus seller-initiated volume,
                      classified against the current mid
    vwap_dist         sum w * (dp - mid) / (sum w + EPS): VWAP minus mid, 0 without trades
    trade_intensity   EMA of trade_count with half-life ``intensity_halflife`` steps
                      (omitted when it is None). The EMA is bias-corrected: at step t it
                      is the a^k-weighted mean of the t + 1 counts seen, so no seed value
                      is needed. Recurrent, hence lookback UNBOUNDED.
"""

from __future__ import annotations

import numpy as np

from .base import EPS, UNBOUNDED, FeatureBuilder, FeatureSpecError, ema_alpha, register_builder, resolve, slog

_TRADE_SLOTS = 4


@register_builder("trade")
class TradeFeatures(FeatureBuilder):
    param_names = ("intensity_halflife",)

    def __init__(self, intensity_halflife: float | None = 20.0):
        self.intensity_halflife = intensity_halflife

    @property
    def stateful(self) -> bool:
        return self.intensity_halflife is not None

    @property
    def lookback(self) -> float:
        return UNBOUNDED if self.stateful else 0

    def validate_params(self) -> None:
        h = self.intensity_halflife
        if h is not None and (isinstance(h, bool) or not isinstance(h, (int, float)) or not h > 0):
            raise FeatureSpecError(f"trade: intensity_halflife must be a positive number or null, got {h!r}")

    def _bind(self, names: list[str]) -> list[str]:
        cols = ["p0", "p6"] + [f"dp{i}" for i in range(_TRADE_SLOTS)] + [f"dv{i}" for i in range(_TRADE_SLOTS)]
        self.input_idx_ = np.asarray(resolve(names, cols, "trade"), dtype=np.intp)   # [10]
        rel = np.zeros((2 + _TRADE_SLOTS, _TRADE_SLOTS))        # (p0, p6, dp) -> dp - mid
        rel[:2] = -0.5
        rel[2:] = np.eye(_TRADE_SLOTS)
        self.relative_ = rel
        out = ["trade_count", "log_trade_vol", "trade_signed", "vwap_dist"]
        out += ["trade_intensity"] if self.stateful else []
        sums = np.zeros((4 * _TRADE_SLOTS, len(out)))          # block sums; intensity column left 0
        sums[:, :4] = np.kron(np.eye(4), np.ones((_TRADE_SLOTS, 1)))
        self.sums_ = sums
        return out

    def _compute(self, x: np.ndarray) -> np.ndarray:
        """Per-row part: x[..., F_in] -> [..., F_out], trade_intensity (if any) left 0."""
        g = x[..., self.input_idx_]                                # [..., 10]
        rel = g[..., :2 + _TRADE_SLOTS] @ self.relative_           # [..., 4] trade price - mid
        w = np.abs(g[..., 2 + _TRADE_SLOTS:])                      # [..., 4]
        terms = np.concatenate([w > 0, w, w * np.sign(rel), w * rel], axis=-1)
        out = terms @ self.sums_                                   # [..., F_out] count, vol, signed, sum w*rel
        out[..., 3] /= out[..., 1] + EPS                           # vwap - mid; 0 without trades
        out[..., 1:3] = slog(out[..., 1:3])
        return out

    def _new_state(self, lead: tuple[int, ...]) -> dict[str, np.ndarray]:
        # s: decayed sum of counts, c: decayed sum of weights (1 - a^(t+1)); EMA = s / c
        return {"s": np.zeros(lead + (1,)), "c": np.zeros(lead + (1,))}

    def _intensity(self, state: dict[str, np.ndarray], count: np.ndarray) -> np.ndarray:
        """count[..., 1] -> bias-corrected EMA [..., 1]; advances state."""
        a = ema_alpha(self.intensity_halflife)
        state["s"] = a * state["s"] + (1.0 - a) * count
        state["c"] = a * state["c"] + (1.0 - a)
        return state["s"] / state["c"]

    def _step(self, state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        out = self._compute(x)
        out[..., 4:] = self._intensity(state, out[..., :1])
        return out

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X[N,T,F_in] -> float64 [N,T,F_out]; the per-row part is vectorised over T."""
        if not self.stateful:
            return super().transform(X)
        out = self._compute(self._check_input(X))                  # [N, T, 5]
        state = self._new_state(out.shape[:1])
        for t in range(out.shape[1]):
            out[:, t, 4:] = self._intensity(state, out[:, t, :1])
        return out
