"""The planted signal of the synthetic data: a causal function of observed features.

The generator (``synth.py``) simulates a book, stores it as float32 features,
and only then calls :func:`planted_signal` on those stored features. Targets are
``signal + independent zero-mean noise``, so ``planted_signal`` is exactly
``E[target | features at steps <= t]``: the oracle. Because it reads only the
float32 features a model also sees, nothing latent leaks into it.

Shapes: N sequences, T steps, F = 32 features, K observables.

Observables per step (all from the current and previous snapshot):
    imb    level-0 volume imbalance (v0 - v6) / (v0 + v6), in [-1, 1]
    flow   signed trade volume: sum of dv_i, signed + when dp_i is above the
           previous snapshot's mid (a buy lifting the ask), - when below
    dmid   mid-price change since the previous snapshot, in ticks
    spread best ask - best bid, in ticks (the visible volatility regime)

The signal reads exponential moving averages of these at half-lives of 5, 30
and 150 steps, squashes each with ``tanh`` (arguments have sd ~0.6-0.8, so the
squashing is mild) and scales the sum by the 50-step spread average, an
interaction with the sequence's volatility regime. t1 keeps a smaller share of
the same terms, leans on the 150-step ones (a longer horizon) and has much more
noise.

Why this shape: a per-step model sees only the current snapshot, which explains
little of a 30- or 150-step average (a ridge on the 32 raw features reaches
about a third of the oracle score), while a recurrent net builds such averages
in its state. Most weight sits on volume imbalance, which a GRU on raw
standardised features learns within a few epochs; the price-change and
trade-flow terms need differencing or trade-side features to be learned well,
which leaves room for feature engineering to matter.

Variants (``VARIANTS``, ``lobsweep synth --variant``) keep this shape and the
schema but move the signal: ``shifted`` reads faster and slower EMAs (2/12/400
steps of imbalance, 8/400 of flow, 80 of price change), takes its regime from
traded volume (100-step EMA) instead of the spread, adds a product of the fast
imbalance and fast flow terms, and slows the latent drivers the book is
simulated from. It exists to catch designs tuned to the default's time
scales (the feature builders' defaults were chosen next to the default one);
nothing in features/ or search_spaces/ may be tuned to it.

Note the oracle is the conditional mean, the natural benchmark; under the
metric's |y| weights it is not guaranteed to be the exact score maximiser.
"""

from __future__ import annotations

import numpy as np

from dataclasses import dataclass

from .contract import ASK_PRICE, ASK_VOL, BID_PRICE, BID_VOL, TRADE_PRICE, TRADE_VOL

TICK = 1e-3             # price grid of every sequence; prices sit near 1.0
SPREAD_REF = 2.0        # typical spread in ticks; the regime factor is spread / this

# (observable, half-life in steps) for each EMA the signal reads; the last one is the regime.
EMA_SPECS = (("imb", 5.0), ("imb", 30.0), ("imb", 150.0), ("dmid", 30.0), ("flow", 30.0),
             ("flow", 150.0), ("spread", 50.0))
# signal[k] = regime * sum_j WEIGHT[j][k] * tanh(GAIN[j] * ema_j), j over all EMAs but the regime.
GAIN = (3.0, 9.0, 20.0, 4.0, 4.0, 7.0)
WEIGHT = ((0.15, 0.04), (0.15, 0.06), (0.15, 0.12), (0.12, 0.06), (0.08, 0.04), (0.0, 0.12))
OBSERVABLES = ("imb", "flow", "dmid", "spread", "volume")


@dataclass(frozen=True)
class Variant:
    """One planted signal: EMAs (the last is the regime), gains, weights, and the latent drivers."""

    ema_specs: tuple
    gain: tuple
    weight: tuple
    regime_ref: float                      # regime factor = regime EMA / this
    pair: tuple | None = None              # (i, j, (w0, w1)): adds w * squashed_i * squashed_j
    u_phi: float = 0.5                     # book-pressure persistence per step (synth.py)
    psi_phi: float = 0.5 ** (1.0 / 40.0)   # meta-order flow persistence per step (synth.py)


VARIANTS = {
    "default": Variant(EMA_SPECS, GAIN, WEIGHT, SPREAD_REF),
    "shifted": Variant(
        ema_specs=(("imb", 2.0), ("imb", 12.0), ("imb", 400.0), ("dmid", 80.0), ("flow", 8.0),
                   ("flow", 400.0), ("volume", 100.0)),
        gain=(2.0, 5.0, 25.0, 3.0, 3.0, 10.0),
        weight=((0.04, 0.01), (0.06, 0.03), (0.12, 0.10), (0.16, 0.08), (0.05, 0.02), (0.12, 0.14)),
        regime_ref=0.6, pair=(0, 4, (0.30, 0.08)), u_phi=0.7, psi_phi=0.5 ** (1.0 / 120.0)),
}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        from ..errors import UserError
        raise UserError(f"unknown synthetic variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def observables(X: np.ndarray) -> np.ndarray:
    """Per-step observables ``[N, T, 5]`` (imb, flow, dmid, spread, volume) from features ``[N, T, 32]``.

    ``volume`` is the traded volume since the previous snapshot (the ``shifted`` variant's regime).

    Step 0 has no previous snapshot: its dmid and flow are 0 (the generator puts
    no trades there).
    """
    X = np.asarray(X, dtype=np.float64)
    bid0, ask0 = X[..., BID_PRICE][..., 0], X[..., ASK_PRICE][..., 0]
    vb0, va0 = X[..., BID_VOL][..., 0], X[..., ASK_VOL][..., 0]
    mid = 0.5 * (bid0 + ask0)
    prev_mid = np.concatenate([mid[:, :1], mid[:, :-1]], axis=1)
    dmid = (mid - prev_mid) / TICK
    dp, dv = X[..., TRADE_PRICE], X[..., TRADE_VOL]
    side = np.sign(dp - prev_mid[..., None]) * (dv > 0)
    flow = (side * dv).sum(axis=-1)
    flow[:, 0] = 0.0
    imb = (vb0 - va0) / np.maximum(vb0 + va0, 1e-12)
    spread = (ask0 - bid0) / TICK
    volume = (dv * (dv > 0)).sum(axis=-1)
    return np.stack([imb, flow, dmid, spread, volume], axis=-1)


def ema(x: np.ndarray, half_lives) -> np.ndarray:
    """Causal EMAs ``[N, T, K]`` of ``x [N, T, K]``, one half-life per channel, started at 0.

    ``e_t = (1 - a) e_{t-1} + a x_t`` with ``a = 1 - 2**(-1/half_life)``; a zero
    start (no bias correction) is what a recurrent net with a zero state sees.
    """
    alpha = 1.0 - 0.5 ** (1.0 / np.asarray(half_lives, dtype=np.float64))
    out = np.empty(x.shape, dtype=np.float64)
    state = np.zeros((x.shape[0], x.shape[2]), dtype=np.float64)
    for t in range(x.shape[1]):
        state += alpha * (x[:, t] - state)
        out[:, t] = state
    return out


def signal_inputs(X: np.ndarray, ema_specs=EMA_SPECS) -> np.ndarray:
    """The EMAs of ``ema_specs``, ``[N, T, len(ema_specs)]``, from features ``[N, T, 32]``."""
    obs = observables(X)
    cols = obs[..., [OBSERVABLES.index(name) for name, _ in ema_specs]]
    return ema(cols, [hl for _, hl in ema_specs])


def planted_signal(X: np.ndarray, variant: str = "default") -> np.ndarray:
    """The oracle ``E[t0, t1 | past]``, float64 ``[N, T, 2]``, from features ``[N, T, 32]``.

    Causal: the value at step t depends only on ``X[:, :t+1]``.
    """
    v = get_variant(variant)
    e = signal_inputs(X, v.ema_specs)
    regime = e[..., -1:] / v.regime_ref
    squashed = np.tanh(e[..., :-1] * np.asarray(v.gain))
    out = squashed @ np.asarray(v.weight)
    if v.pair is not None:
        i, j, w = v.pair
        out = out + (squashed[..., i] * squashed[..., j])[..., None] * np.asarray(w)
    return regime * out
