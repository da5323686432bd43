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

Note the oracle is the conditional mean, the natural benchmark; under the
metric's |y| weights it is not guaranteed to be the exact score maximiser.
"""

from __future__ import annotations

import numpy as np

from .contract import ASK_PRICE, ASK_VOL, BID_PRICE, BID_VOL, TRADE_PRICE, TRADE_VOL

TICK = 1e-3             # price grid of every sequence; prices sit near 1.0
SPREAD_REF = 2.0        # typical spread in ticks; the regime factor is spread / this

# (observable, half-life in steps) for each EMA the signal reads; the last one is the regime.
EMA_SPECS = (("imb", 5.0), ("imb", 30.0), ("imb", 150.0), ("dmid", 30.0), ("flow", 30.0),
             ("flow", 150.0), ("spread", 50.0))
# signal[k] = regime * sum_j WEIGHT[j][k] * tanh(GAIN[j] * ema_j), j over all EMAs but the regime.
GAIN = (3.0, 9.0, 20.0, 4.0, 4.0, 7.0)
WEIGHT = ((0.15, 0.04), (0.15, 0.06), (0.15, 0.12), (0.12, 0.06), (0.08, 0.04), (0.0, 0.12))


def observables(X: np.ndarray) -> np.ndarray:
    """Per-step observables ``[N, T, 4]`` (imb, flow, dmid, spread) from features ``[N, T, 32]``.

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
    return np.stack([imb, flow, dmid, spread], axis=-1)


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


def signal_inputs(X: np.ndarray) -> np.ndarray:
    """The EMAs of :data:`EMA_SPECS`, ``[N, T, len(EMA_SPECS)]``, from features ``[N, T, 32]``."""
    obs = observables(X)
    names = ("imb", "flow", "dmid", "spread")
    cols = obs[..., [names.index(name) for name, _ in EMA_SPECS]]
    return ema(cols, [hl for _, hl in EMA_SPECS])


def planted_signal(X: np.ndarray) -> np.ndarray:
    """The oracle ``E[t0, t1 | past]``, float64 ``[N, T, 2]``, from features ``[N, T, 32]``.

    Causal: the value at step t depends only on ``X[:, :t+1]``.
    """
    e = signal_inputs(X)
    regime = e[..., -1:] / SPREAD_REF
    squashed = np.tanh(e[..., :-1] * np.asarray(GAIN))
    return regime * (squashed @ np.asarray(WEIGHT))
