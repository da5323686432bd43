"""Pairwise products of named columns (stateless, lookback 0).

``pairs`` is a list of [a, b] column names, raw or derived by earlier builders
(e.g. spread x price, volume x price, imbalance x an EMA deviation). Each pair
emits one column named ``a_x_b`` = a * b. Products of finite float64 inputs
are finite for any value a float32 column can hold.
"""

from __future__ import annotations

import numpy as np

from .base import FeatureBuilder, FeatureSpecError, register_builder, resolve


@register_builder("interactions")
class InteractionFeatures(FeatureBuilder):
    param_names = ("pairs",)

    def __init__(self, pairs=(("spread0", "mid"), ("imb0", "spread0"))):
        self.pairs = pairs

    def validate_params(self) -> None:
        p = self.pairs
        ok = isinstance(p, (list, tuple)) and len(p) > 0 and all(
            isinstance(q, (list, tuple)) and len(q) == 2 and all(isinstance(c, str) for c in q) for q in p)
        if not ok:
            raise FeatureSpecError(f"interactions: pairs must be a non-empty list of [name, name], got {p!r}")
        keys = [tuple(q) for q in p]
        if len(set(keys)) != len(keys):
            raise FeatureSpecError(f"interactions: pairs contains a duplicate, got {p!r}")

    def _bind(self, names: list[str]) -> list[str]:
        self.left_idx_ = resolve(names, [a for a, _ in self.pairs], "interactions")
        self.right_idx_ = resolve(names, [b for _, b in self.pairs], "interactions")
        return [f"{a}_x_{b}" for a, b in self.pairs]

    def _compute(self, x: np.ndarray) -> np.ndarray:
        """x[..., F_in] -> [..., n_pairs]."""
        return x[..., self.left_idx_] * x[..., self.right_idx_]
