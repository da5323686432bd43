"""Synthetic limit-order-book data in the exact contract schema, with a known oracle.

The default dataset of lob-sweep: the real files are not on development
machines, and a planted signal lets every leaderboard show its score as a
fraction of the best possible one.

How a sequence is made (N sequences, T steps, all vectorised over N):
  1. Per sequence: a volatility regime ``sigma`` (log-normal), a volume scale
     and a trade rate. High ``sigma`` widens spreads and moves prices further.
  2. Two latent AR(1) drivers: ``u`` (book pressure, short memory) sets the
     level-0 volume imbalance; ``psi`` (slow meta-order flow, half-life 40)
     tilts trade direction.
  3. Up to 4 trades per step at the previous snapshot's best quotes (one level
     deeper when large). Unused trade slots are dp = 0, dv = 0.
  4. An efficient price moves with noise, trade impact and book pressure; quotes
     sit on a tick grid around it: bids strictly below asks, levels strictly
     monotone, at least one tick apart. Prices are near 1.0 (normalised); a
     sequence that would drift below MIN_PRICE is shifted up as a whole.
  5. Features are stored as float32; the oracle is ``planted_signal`` of those
     stored features (see synth_signal.py), and targets are oracle + independent
     student-t noise (heavy tails) whose scale grows with the latent regime, so
     the oracle is exactly E[target | past].
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from .contract import (ALL_COLS, ASK_PRICE, ASK_VOL, BID_PRICE, BID_VOL, FEATURE_COLS, N_FEATURES,
                       TARGET_COLS, TRADE_PRICE, TRADE_VOL, WARMUP)
from .metric import score
from .synth_signal import SPREAD_REF, TICK, get_variant, planted_signal

NOISE_DF = 5.0                      # student-t degrees of freedom of the target noise
NOISE_SCALE = (0.42, 0.9)           # noise sd (before the regime factor) of t0, t1
U_PHI = 0.5                         # book-pressure persistence per step
PSI_PHI = 0.5 ** (1.0 / 40.0)       # meta-order flow persistence (half-life 40 steps)
MAX_TRADES = 4
MIN_PRICE = 0.2                     # sequences are shifted up so every price stays above this
ID_SPREAD = 4                       # ids of n sequences are drawn from a range 4n wide
SHIFT_LOG_SIGMA = 0.7               # --valid-shift: the shifted regime's log-volatility offset (x2)


def _ar1(rng: np.random.Generator, n: int, T: int, phi: np.ndarray) -> np.ndarray:
    """Unit-variance stationary AR(1) paths ``[n, T, K]``, one coefficient per channel ``phi [K]``."""
    phi = np.asarray(phi, dtype=np.float64)
    eps = rng.standard_normal((n, T, phi.size)) * np.sqrt(1.0 - phi**2)
    out = np.empty_like(eps)
    state = rng.standard_normal((n, phi.size))
    for t in range(T):
        state = phi * state + eps[:, t]
        out[:, t] = state
    return out


def _levels(rng: np.random.Generator, best: np.ndarray, direction: int) -> np.ndarray:
    """Six price levels in ticks ``[n, T, 6]`` from the best one, each 1+ ticks further out."""
    gaps = 1 + rng.poisson(0.4, size=best.shape + (5,))
    return best[..., None] + direction * np.concatenate(
        [np.zeros(best.shape + (1,)), np.cumsum(gaps, axis=-1)], axis=-1)


def simulate_book(rng: np.random.Generator, n: int, T: int, u_phi: float = U_PHI,
                  psi_phi: float = PSI_PHI, regime_shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Simulate ``n`` sequences of ``T`` snapshots (latent drivers with persistence u_phi, psi_phi).

    ``regime_shift`` in [0, 1] is the share of sequences drawn from a shifted
    regime (volatility x e^SHIFT_LOG_SIGMA, thinner books); 0 draws nothing
    extra, so the default data is unchanged.

    Returns features float32 ``[n, T, 32]`` in contract order and the latent
    volatility regime ``sigma [n]`` (used only to scale the target noise).
    """
    sigma = np.exp(rng.normal(0.0, 0.45, n))
    vscale = np.exp(rng.normal(0.0, 0.3, n))
    if regime_shift > 0:
        shifted = rng.random(n) < regime_shift
        sigma = np.where(shifted, sigma * np.exp(SHIFT_LOG_SIGMA), sigma)
        vscale = np.where(shifted, vscale * np.exp(-SHIFT_LOG_SIGMA), vscale)
    rate = 0.7 * np.exp(rng.normal(0.0, 0.3, n)) * np.sqrt(sigma)
    drivers = _ar1(rng, n, T, [u_phi, psi_phi])
    u, psi = drivers[..., 0], drivers[..., 1]

    n_trades = np.minimum(rng.poisson(rate[:, None], size=(n, T)), MAX_TRADES)
    n_trades[:, 0] = 0
    active = np.arange(MAX_TRADES) < n_trades[..., None]                      # [n, T, 4]
    p_buy = 1.0 / (1.0 + np.exp(-(1.0 * psi + 0.6 * u)))
    buy = rng.random((n, T, MAX_TRADES)) < p_buy[..., None]
    size = vscale[:, None, None] * np.exp(rng.normal(-0.5, 0.6, (n, T, MAX_TRADES)))
    side = np.where(buy, 1.0, -1.0) * active
    flow = (side * size).sum(axis=-1) / vscale[:, None]                      # [n, T]

    u_prev = np.concatenate([np.zeros((n, 1)), u[:, :-1]], axis=1)
    moves = sigma[:, None] * (0.7 * rng.standard_normal((n, T)) + 0.5 * flow + 0.3 * u_prev)
    moves[:, 0] = 0.0
    efficient = np.cumsum(moves, axis=1)                                      # ticks
    spread = 1 + rng.poisson(sigma[:, None], size=(n, T))
    bid_best = np.floor(efficient - 0.5 * spread)
    bids = _levels(rng, bid_best, -1)
    asks = _levels(rng, bid_best + spread, +1)
    base = np.round((1.0 + rng.normal(0.0, 0.05, n)) / TICK)
    base = np.maximum(base, np.ceil(MIN_PRICE / TICK) - bids.min(axis=(1, 2)))[:, None, None]
    bids, asks = bids + base, asks + base

    walk = size > 1.5 * vscale[:, None, None]                                 # large trades reach level 1
    prev_bids, prev_asks = _previous(bids), _previous(asks)
    px_buy = np.where(walk, prev_asks[..., 1:2], prev_asks[..., 0:1])
    px_sell = np.where(walk, prev_bids[..., 1:2], prev_bids[..., 0:1])
    trade_px = np.where(active, np.where(buy, px_buy, px_sell) * TICK, 0.0)
    trade_vol = np.where(active, size, 0.0)

    depth = np.exp(0.12 * np.arange(1, 6) + 0.5 * rng.standard_normal((n, T, 2, 5)))      # levels 1..5
    v_bid0 = np.exp(0.6 * u + 0.35 * rng.standard_normal((n, T)))
    v_ask0 = np.exp(-0.6 * u + 0.35 * rng.standard_normal((n, T)))
    scale = vscale[:, None, None]

    X = np.empty((n, T, N_FEATURES), dtype=np.float32)
    X[..., BID_PRICE] = bids * TICK
    X[..., ASK_PRICE] = asks * TICK
    X[..., BID_VOL] = scale * np.concatenate([v_bid0[..., None], depth[..., 0, :]], axis=-1)
    X[..., ASK_VOL] = scale * np.concatenate([v_ask0[..., None], depth[..., 1, :]], axis=-1)
    X[..., TRADE_PRICE] = trade_px
    X[..., TRADE_VOL] = trade_vol
    return X, sigma


def _previous(a: np.ndarray) -> np.ndarray:
    """``a`` shifted one step later along axis 1 (step 0 keeps its own value)."""
    return np.concatenate([a[:, :1], a[:, :-1]], axis=1)


def _check_args(**ints: int) -> None:
    for name, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise UserError(f"synthetic data: {name} must be an integer, got {value!r}")
    lower = {"n_seq": 1, "n_train": 1, "n_valid": 1, "seq_len": 1, "seed": 0, "seq_id_offset": 0}
    for name, value in ints.items():
        if value < lower[name]:
            raise UserError(f"synthetic data: {name} must be >= {lower[name]}, got {value}")


def generate(n_seq: int, seq_len: int = 1000, seed: int = 0,
             seq_id_offset: int = 0, variant: str = "default",
             regime_shift: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n_seq`` synthetic sequences of ``seq_len`` steps and their oracle.

    Returns ``(rows, oracle)``. ``rows`` has the 37 contract columns in order
    (seq_ix, step_in_seq int64; need_prediction bool = step >= 99; the rest
    float32), sequence by sequence, steps in order. Sequence ids are distinct,
    drawn from ``[seq_id_offset, seq_id_offset + 4 * n_seq)`` and listed in a
    random order. ``oracle`` has seq_ix, step_in_seq and float32 t0, t1 =
    E[target | features so far] for every row. Same arguments, same output.
    ``variant`` picks the planted signal and latent drivers (synth_signal.VARIANTS).
    """
    _check_args(n_seq=n_seq, seq_len=seq_len, seed=seed, seq_id_offset=seq_id_offset)
    v = get_variant(variant)
    rng = np.random.default_rng(seed)
    ids = seq_id_offset + rng.choice(ID_SPREAD * n_seq, size=n_seq, replace=False).astype(np.int64)
    X, sigma = simulate_book(rng, n_seq, seq_len, v.u_phi, v.psi_phi, regime_shift)
    oracle = planted_signal(X, variant)                                       # [n, T, 2] float64
    noise = rng.standard_t(NOISE_DF, size=oracle.shape) / np.sqrt(NOISE_DF / (NOISE_DF - 2.0))
    noise_sd = np.asarray(NOISE_SCALE) * ((1.0 + sigma) / SPREAD_REF)[:, None, None]
    Y = (oracle + noise_sd * noise).astype(np.float32)

    step = np.tile(np.arange(seq_len, dtype=np.int64), n_seq)
    seq = np.repeat(ids, seq_len)
    cols = {"seq_ix": seq, "step_in_seq": step, "need_prediction": step >= WARMUP}
    flat = X.reshape(-1, N_FEATURES)
    cols.update({name: flat[:, i] for i, name in enumerate(FEATURE_COLS)})
    cols.update({"t0": Y[..., 0].ravel(), "t1": Y[..., 1].ravel()})
    rows = pd.DataFrame(cols, columns=ALL_COLS)
    o = oracle.astype(np.float32)
    oracle_df = pd.DataFrame({"seq_ix": seq, "step_in_seq": step, "t0": o[..., 0].ravel(),
                              "t1": o[..., 1].ravel()})
    return rows, oracle_df


def split_seeds(seed: int) -> tuple[int, int]:
    """Independent (train, valid) generator seeds derived from one dataset seed."""
    train, valid = np.random.SeedSequence(seed).generate_state(2)
    return int(train), int(valid)


def write_dataset(out_dir, n_train: int = 512, n_valid: int = 128, seq_len: int = 1000,
                  seed: int = 0, variant: str = "default", valid_shift: float = 0.0) -> dict:
    """Write train.parquet, valid.parquet, oracle_train.parquet and oracle_valid.parquet.

    ``valid_shift`` in [0, 1]: the share of valid sequences drawn from a shifted
    volatility/book-depth regime that train never has (a train/valid shift,
    as between the real files); the oracle stays exact.

    Train and valid use different derived seeds and disjoint id ranges (valid
    ids start at ``4 * n_train``). All files are written under temporary names
    in ``out_dir`` and renamed only once every one is complete, so a failure
    leaves no partial dataset. The bytes depend only on the arguments.

    Returns ``{"paths": {name: path}, "n_rows": {...}, "oracle_valid": {"t0",
    "t1", "mean"}, "seeds": {...}, "seconds": float}``.
    """
    start = time.perf_counter()
    _check_args(n_train=n_train, n_valid=n_valid, seq_len=seq_len, seed=seed)
    get_variant(variant)                                  # an unknown name: one line, nothing written
    if not (isinstance(valid_shift, (int, float)) and 0.0 <= float(valid_shift) <= 1.0):
        raise UserError(f"synthetic data: valid_shift must be a number in [0, 1], got {valid_shift!r}")
    if seq_len <= WARMUP:
        raise UserError(f"synthetic data: seq_len must be > {WARMUP} so some rows are scored, got {seq_len}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"{out_dir}: exists and is not a directory; pick another output directory")
    train_seed, valid_seed = split_seeds(seed)
    train, oracle_train = generate(n_train, seq_len, train_seed, seq_id_offset=0, variant=variant)
    valid, oracle_valid = generate(n_valid, seq_len, valid_seed, seq_id_offset=ID_SPREAD * n_train,
                                   variant=variant, regime_shift=float(valid_shift))
    frames = {"train": train, "valid": valid, "oracle_train": oracle_train, "oracle_valid": oracle_valid}

    need = valid["need_prediction"].to_numpy()
    scores = score(valid[TARGET_COLS].to_numpy()[need], oracle_valid[TARGET_COLS].to_numpy()[need])
    paths = {name: os.path.join(out_dir, f"{name}.parquet") for name in frames}
    _write_all(frames, paths)
    return {
        "paths": paths,
        "n_rows": {name: int(len(df)) for name, df in frames.items() if not name.startswith("oracle")},
        "oracle_valid": scores,
        "seeds": {"seed": seed, "train": train_seed, "valid": valid_seed}, "valid_shift": float(valid_shift),
        "variant": variant,
        "seconds": time.perf_counter() - start,
    }


def _write_all(frames: dict[str, pd.DataFrame], paths: dict[str, str]) -> None:
    """Write every frame to a temporary sibling, then rename all; on error remove everything written."""
    out_dir = os.path.dirname(next(iter(paths.values())))
    temps = {name: f"{path}.tmp-{os.getpid()}" for name, path in paths.items()}
    renamed: list[str] = []
    try:
        os.makedirs(out_dir, exist_ok=True)
        for name, frame in frames.items():
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), temps[name])
        for name in frames:
            os.replace(temps[name], paths[name])
            renamed.append(paths[name])
    except BaseException as exc:
        for path in [*temps.values(), *renamed]:
            if os.path.exists(path):
                os.remove(path)
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            raise UserError(f"{out_dir}: cannot write the synthetic dataset ({reason})") from None
        raise


def ensure_dataset(data_dir: str, n_train: int = 512, n_valid: int = 128, seed: int = 0) -> str:
    """The default dataset: generated on first use in ``data_dir``, reused afterwards."""
    import os
    names = ("train.parquet", "valid.parquet", "oracle_valid.parquet")
    if not all(os.path.exists(os.path.join(data_dir, n)) for n in names):
        print(f"generating the synthetic dataset in {data_dir} ({n_train} train / {n_valid} valid sequences)",
              flush=True)
        write_dataset(data_dir, n_train=n_train, n_valid=n_valid, seed=seed)
    return data_dir
