"""Streaming latency per row: the packaged fused engine vs a naive loop over torch modules.

Run:  .venv/bin/python bench/inference_latency.py [--steps 2000] [--repeats 3] [--json OUT]

One core and one thread, as in the competition container: the process pins itself
to CPU 0 (``taskset -c 0``) and sets every BLAS/OpenMP pool and torch to one thread
before numpy or torch load. Members have random weights (the cost does not depend
on them) and the default configs (gru: 2 layers, h=128); they are saved as real
bundles and run through ``engine_from_bundles``, the code path of the zip.

Cases: 1, 5 and 10 GRU members, and one member of each of the five families.
Columns, each the fastest of ``repeats`` passes over ``steps`` rows:
  fused     the packaged engine: pipelines once, each group of equal members stacked
  unfused   the same numpy code with every member in its own group (fusion's share)
  torch     features once per distinct pipeline, then ``model.step`` per member
            (torch.inference_mode) and the weighted sum: the naive loop
  x         torch / fused;  min/1500  fused projected to 1500 sequences x 1000 steps
  GB/s      weight bytes read per step / fused model time (features excluded)
  floor     one float32 GEMV over a matrix of the same bytes (width 128): the time just to
            stream those weights from cache/memory once, i.e. the bandwidth bound of a step
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {0})

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lobsweep.features import FeaturePipeline  # noqa: E402
from lobsweep.models import create_model  # noqa: E402
from lobsweep.submission.cost import sample_rows, time_engine  # noqa: E402
from lobsweep.submission.package import engine_from_bundles  # noqa: E402
from lobsweep.training.bundle import load_bundle, save_bundle  # noqa: E402

FAMILIES = ("gru", "lstm", "gru_attention", "transformer", "ssm")
ROWS_1500_SEQ = 1500 * 1000


def make_bundles(root: str, families: list[str], pipeline: FeaturePipeline) -> list[str]:
    """Random-weight bundles of the default configs, all reading ``pipeline``."""
    features = json.loads(pipeline.to_json())
    paths = []
    for i, family in enumerate(families):
        torch.manual_seed(i)
        model = create_model(family, n_features=pipeline.n_features_out)
        spec = {"family": family, "config": dict(vars(model.config)), "features": features, "seed": i,
                "data": {}, "metrics": {}}
        paths.append(save_bundle(os.path.join(root, f"{i:02d}-{family}"), model, spec, np.zeros((1, 2))))
    return paths


def naive_torch_ms(paths: list[str], rows: np.ndarray, repeats: int) -> float:
    """ms per row of the naive loop: shared features, then each member's torch ``step``."""
    bundles = [load_bundle(p) for p in paths]
    models = [b.build_model() for b in bundles]
    pipe = bundles[0].pipeline()
    w = torch.full((len(models), 2), 1.0 / len(models))
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            pstate, states = pipe.init_state(), [m.init_state(1) for m in models]
            t0 = time.perf_counter()
            for row in rows:
                pstate, f = pipe.update(pstate, row)
                x = torch.from_numpy(f.astype(np.float32))[None]
                ys = []
                for j, m in enumerate(models):
                    y, states[j] = m.step(x, states[j])
                    ys.append(y[0])
                (torch.stack(ys) * w).sum(0).numpy()
            best = min(best, (time.perf_counter() - t0) * 1000.0 / len(rows))
    return best


def stream_floor_ms(nbytes: int, repeats: int, calls: int = 300) -> float:
    """ms of one GEMV reading ``nbytes`` of float32 weights: the memory-traffic floor of a step."""
    W = np.random.default_rng(0).standard_normal((max(1, nbytes // 512), 128)).astype(np.float32)
    x = np.ones(128, np.float32)
    for _ in range(20):
        W @ x
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            W @ x
        best = min(best, (time.perf_counter() - t0) * 1000.0 / calls)
    return best


def run_case(name: str, paths: list[str], rows: np.ndarray, steps: int, repeats: int) -> dict:
    fused_engine = engine_from_bundles(paths)
    fused = time_engine(fused_engine, steps=steps, repeats=repeats)
    unfused = time_engine(engine_from_bundles(paths, fuse=False), steps=steps, repeats=repeats)
    naive = naive_torch_ms(paths, rows, repeats)
    wbytes = fused_engine.weight_bytes()
    return {"case": name, "members": len(paths), "weight_mb": wbytes / 1e6, "fused_ms": fused["ms_per_step"],
            "fused_model_ms": fused["model_ms"], "features_ms": fused["features_ms"],
            "unfused_ms": unfused["ms_per_step"], "torch_ms": naive, "ratio": naive / fused["ms_per_step"],
            "projected_min": fused["ms_per_step"] * ROWS_1500_SEQ / 60000.0,
            "gb_per_s": wbytes / (fused["model_ms"] * 1e-3) / 1e9 if fused["model_ms"] > 0 else float("nan"),
            "floor_ms": stream_floor_ms(wbytes, repeats)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = sample_rows(args.steps, seed=1)
    pipeline = FeaturePipeline.from_spec({}).fit(sample_rows(4000, seed=2)[None])
    cases = [(f"{n} x gru", ["gru"] * n) for n in (1, 5, 10)] + [("mixed 5 families", list(FAMILIES))]
    results = []
    print(f"{'case':<18}{'M':>3}{'MB':>7}{'fused':>9}{'model':>8}{'unfused':>9}{'torch':>9}{'x':>7}"
          f"{'min/1500':>10}{'GB/s':>7}{'floor':>8}   (ms per row, one core)")
    with tempfile.TemporaryDirectory(prefix="lobsweep-bench-") as root:
        for name, families in cases:
            r = run_case(name, make_bundles(os.path.join(root, name.replace(" ", "_")), families, pipeline),
                         rows, args.steps, args.repeats)
            results.append(r)
            print(f"{r['case']:<18}{r['members']:>3}{r['weight_mb']:>7.2f}{r['fused_ms']:>9.3f}"
                  f"{r['fused_model_ms']:>8.3f}{r['unfused_ms']:>9.3f}{r['torch_ms']:>9.3f}{r['ratio']:>7.1f}"
                  f"{r['projected_min']:>10.1f}{r['gb_per_s']:>7.1f}{r['floor_ms']:>8.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": _cpu_name(), "steps": args.steps, "results": results}, fh, indent=1)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
