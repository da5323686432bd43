"""Streaming cost of members and ensembles in the packaged engine (ms per step, one thread).

The cost model (the one the ensemble selects under): a member costs what a one-member
engine measures for it (``member_cost_ms``: its feature pipeline, its model step and the
combine, in a zip whose weights are stored in ``precision``), cached in the bundle as
``latency.json`` (float32) or ``latency-<precision>.json``; a set of members costs the sum
(``member_costs``). The sum counts shared pipelines and the fixed per-row work once per
member, so it bounds from above what ``ensemble_cost_ms`` measures for the fused engine of
the whole set; the ensemble stage records both for the set it chose.

The zip's engine decodes float16 and int8 weights to float32 once at load and computes
in float32, so those three modes cost about the same per step; ``int8-ort`` steps GRU
groups through onnxruntime int8 graphs (engine_ort_run.py), and its cost is that engine's,
measured (``engine_from_bundles(..., precision="int8-ort")`` builds what the zip runs).

Timings use synthetic order-book rows (``sample_rows``; the engine's cost does not
depend on the values), BLAS limited to one thread, a warm-up, and the fastest of
``repeats`` passes, so noise from other processes on the machine inflates them
less. They are this machine's numbers: the container's single vCPU may differ.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time

import numpy as np

from .engine import VERSION
from .assemble import engine_from_bundles
from .precision import check_precision

LATENCY_FILE = "latency.json"
FORMAT = "lobsweep.latency/1"


def sample_rows(n: int, seed: int = 0) -> np.ndarray:
    """float32 [n, 32] plausible raw rows: random-walk mid, six levels per side, four trades."""
    rng = np.random.default_rng(seed)
    mid = 1.0 + np.cumsum(rng.normal(0.0, 1e-4, n))
    levels = 1e-4 * np.arange(1, 7)
    rows = np.empty((n, 32))
    rows[:, 0:6] = mid[:, None] - levels
    rows[:, 6:12] = mid[:, None] + levels
    rows[:, 12:24] = rng.exponential(1.0, (n, 12))
    rows[:, 24:28] = mid[:, None] + rng.choice([-1e-4, 1e-4], (n, 4))
    rows[:, 28:32] = rng.exponential(0.5, (n, 4)) * (rng.random((n, 4)) < 0.5)
    return rows.astype(np.float32)


@contextlib.contextmanager
def one_thread():
    """Limit BLAS/OpenMP pools to one thread when threadpoolctl is present (the container has 1 vCPU)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _best_ms(fn, rows: np.ndarray, repeats: int, warmup: int) -> float:
    """Fastest mean ms per row of ``fn(row)`` over ``repeats`` passes of ``rows``."""
    for row in rows[:warmup]:
        fn(row)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for row in rows:
            fn(row)
        best = min(best, (time.perf_counter() - t0) * 1000.0 / len(rows))
    return best


def time_engine(engine, steps: int = 3000, repeats: int = 3, warmup: int = 200) -> dict:
    """{"ms_per_step": whole step, "features_ms": pipelines alone, "model_ms": the difference}."""
    rows = sample_rows(steps)
    with one_thread():
        engine.reset()
        total = _best_ms(engine.step, rows, repeats, warmup)
        engine.reset()
        feats = _best_ms(engine.features, rows, repeats, warmup)
    engine.reset()
    return {"ms_per_step": total, "features_ms": feats, "model_ms": max(total - feats, 0.0)}


def _read_cache(path: str) -> dict | None:
    try:
        with open(path) as fh:
            cached = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None
    ok = (isinstance(cached, dict) and cached.get("format") == FORMAT and cached.get("engine") == VERSION
          and cached.get("host") == platform.node())             # another machine's timing says little here
    return cached if ok and isinstance(cached.get("ms_per_step"), (int, float)) else None


def latency_file(precision: str = "float32") -> str:
    """The cache file of a member's cost with weights stored in ``precision``."""
    return LATENCY_FILE if check_precision(precision) == "float32" else f"latency-{precision}.json"


def member_cost_ms(bundle_dir: str, steps: int = 3000, refresh: bool = False, precision: str = "float32") -> float:
    """ms per step of one member alone in the packaged engine with weights stored in ``precision``;
    cached in ``bundle_dir/latency_file(precision)``.

    A cache written by another engine version or on another host is measured again; ``refresh``
    always re-measures.
    """
    path = os.path.join(str(bundle_dir), latency_file(precision))
    cached = None if refresh else _read_cache(path)
    if cached is not None:
        return float(cached["ms_per_step"])
    timing = time_engine(engine_from_bundles([bundle_dir], precision=precision), steps=steps)
    record = {"format": FORMAT, "engine": VERSION, "precision": precision, **timing, "steps": int(steps),
              "host": platform.node(), "machine": platform.machine(),
              "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    fd, tmp = tempfile.mkstemp(prefix=".latency-", suffix=".json", dir=str(bundle_dir))
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return float(timing["ms_per_step"])


def member_costs(bundle_dirs: list[str], precision: str = "float32") -> np.ndarray:
    """Each member's cost (ms per step) alone in the packaged engine: the additive cost model."""
    return np.array([member_cost_ms(p, precision=precision) for p in bundle_dirs], dtype=np.float64)


def cost_metrics(bundle_dir: str) -> dict:
    """The metrics a member's MLflow run carries about its cost: this member alone in the packaged engine."""
    return {"ms_per_step": member_cost_ms(bundle_dir)}


def ensemble_cost_ms(bundle_dirs: list[str], steps: int = 3000, weights=None, precision: str = "float32") -> float:
    """Measured ms per step of the fused engine running all of ``bundle_dirs`` together."""
    engine = engine_from_bundles(list(bundle_dirs), weights, precision=precision)
    return float(time_engine(engine, steps=steps)["ms_per_step"])
