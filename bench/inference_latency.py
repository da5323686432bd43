"""Streaming latency per row: the packaged fused engine vs a naive loop over torch modules,
and compact weights (float16, int8) and onnxruntime int8 beside float32.

Run:  .venv/bin/python bench/inference_latency.py [--steps 2000] [--repeats 3] [--json OUT]
          [--cases all|members|precision] [--out bench/results/inference_latency.md]

One core and one thread, as in the competition container: the process pins itself
to CPU 0 (``taskset -c 0``) and sets every BLAS/OpenMP pool and torch to one thread
before numpy or torch load.

Members cases (random weights: the cost does not depend on them; default configs,
gru: 2 layers, h=128; saved as real bundles and run through ``engine_from_bundles``,
the code path of the zip): 1, 5 and 10 GRU members, and one member of each of the
five families. Columns, each the fastest of ``repeats`` passes over ``steps`` rows:
  fused     the packaged engine: pipelines once, each group of equal members stacked
  unfused   the same numpy code with every member in its own group (fusion's share)
  torch     features once per distinct pipeline, then ``model.step`` per member
            (torch.inference_mode) and the weighted sum: the naive loop
  x         torch / fused;  min/1500  fused projected to 1500 sequences x 1000 steps
  GB/s      weight bytes read per step / fused model time (features excluded)
  floor     one float32 GEMV over a matrix of the same bytes (width 128): the time just to
            stream those weights from cache/memory once, i.e. the bandwidth bound of a step

Precision cases (issue 16): 10 GRU 2x128, 10 GRU 4x128, and 5 bagged 4x128 members with
K=5 (25 models). Members are noise-perturbed copies of one GRU per depth trained briefly
on a synthetic dataset (each weight + NOISE x its tensor's std x N(0, 1)): trained-ish
weights, not a real ensemble. Columns (ms per step unless said):
  f32       the zip's engine, float32 weights
  f16, i8   the zip's engine over float16 / int8 storage decoded to float32 at load (what ships)
  f16mem    numpy with the matrices kept in float16 in memory, upcast by every matmul
  ort32     onnxruntime step graph per group (submission/engine_ort.py), float32
  ort8      what an int8-ort zip runs: the same graph with int8 dynamic-quantised matrices
            (per output channel), built and serialized as the packager ships it
  torch     the naive loop over every model's torch ``step``
  zip MB    float32 / float16 / int8 / int8-ort zips (compressed bytes, what the 20 MB limit
            counts; int8-ort carries the int8 npz for its numpy fallback and the .onnx graphs)
  d f16, d i8   the packager's score gate: ensemble score with the mode's weights minus
                float32's, on the report rows of the synthetic dataset (batch forward)
  d ort8    the int8-ort packager's gate: the zip's engine and the float32 engine streamed
            step by step over the first ``--score-seqs`` report sequences
  d2 ...    the same three gates on a second dataset (the shifted generator variant)
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

from lobsweep.data.synth import write_dataset  # noqa: E402
from lobsweep.features import FeaturePipeline  # noqa: E402
from lobsweep.models import create_model  # noqa: E402
from lobsweep.submission.cost import sample_rows, time_engine  # noqa: E402
from lobsweep.submission.engine_ort import ORTEngine  # noqa: E402
from lobsweep.submission.assemble import engine_from_bundles  # noqa: E402
from lobsweep.submission.package import package  # noqa: E402
from lobsweep.training.bundle import load_bundle, save_bundle  # noqa: E402
from lobsweep.training.member import train_member  # noqa: E402

FAMILIES = ("gru", "lstm", "gru_attention", "transformer", "ssm")
ROWS_1500_SEQ = 1500 * 1000
PRECISION_CASES = (("10 x gru 2x128", 10, 2, 1), ("10 x gru 4x128", 10, 4, 1), ("5 bags 4x128 K=5", 5, 4, 5))
NOISE = 0.05              # perturbation of the member copies, in units of each tensor's std
GOAL_MS, GOAL_MB = 1.25, 20.0


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
    models = [m for b in bundles for m in b.build_models()]        # a bag: its K models
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


# ---------------------------------------------------------------- precision cases
def perturbed_members(base: str, root: str, n: int, k: int, seed: int = 0) -> list[str]:
    """``n`` bundles from ``base``'s weights, each model's tensors + NOISE * std * N(0, 1); ``k`` > 1: bags of k."""
    b = load_bundle(base)
    sd = b.state_dict()
    gen = torch.Generator().manual_seed(seed)

    def copy() -> dict:
        return {name: v + NOISE * v.std() * torch.randn(v.shape, generator=gen) if v.numel() > 1 else v.clone()
                for name, v in sd.items()}

    paths, model = [], b.build_model()
    for i in range(n):
        spec = {**b.spec, **({"bag": {"k": k}} if k > 1 else {})}
        sets = ({f"fold{j}.{name}": v for j in range(k) for name, v in copy().items()} if k > 1 else copy())
        paths.append(save_bundle(os.path.join(root, f"m{i:02d}"), model, spec, b.valid_pred, state_dict=sets))
    return paths


def half_in_memory(engine):
    """The engine's GRU matrices as float16 in memory: every matmul upcasts them (float32 compute)."""
    for g in engine.groups:
        head = [p for p in (g.head["fc"], g.head["out"]) if p is not None]
        for p in [g.inp] + g.w_ih[1:] + g.w_hh + head:
            p["w"] = p["w"].astype(np.float16)
    return engine


def precision_case(name: str, paths: list[str], data_dir: str, rows: np.ndarray, args, root: str,
                   second: str | None = None) -> dict:
    def ms(engine) -> float:
        return time_engine(engine, steps=args.steps, repeats=args.repeats)["ms_per_step"]

    e32 = engine_from_bundles(paths)
    r = {"case": name, "models": sum(g.M for g in e32.groups), "weight_mb": e32.weight_bytes() / 1e6,
         "f32": ms(e32), "f16": ms(engine_from_bundles(paths, precision="float16")),
         "i8": ms(engine_from_bundles(paths, precision="int8")),
         "f16mem": ms(half_in_memory(engine_from_bundles(paths))),
         "ort32": ms(ORTEngine(engine_from_bundles(paths))),
         "ort8": ms(engine_from_bundles(paths, precision="int8-ort")),      # the engine an int8-ort zip runs
         "torch": naive_torch_ms(paths, rows, args.repeats)}
    for mode in ("float32", "float16", "int8", "int8-ort"):
        info = package(paths, os.path.join(root, f"{mode}.zip"), precision=mode, data_dir=data_dir,
                       tolerance=float("inf"), max_bytes=10 ** 12, gate_seqs=args.score_seqs)  # measure, never refuse
        r[f"zip_{mode}"] = info["bytes"] / 1e6
        if info["gate"]:
            r[f"d_{mode}"] = info["gate"]["ensemble"]["delta"]
            r["score32"] = info["gate"]["ensemble"]["score32"]
    r["score_rows_seqs"] = info["gate"]["ensemble"]["streamed_seqs"]
    for mode in ("float16", "int8", "int8-ort") if second else ():       # the same gates on a second dataset
        info = package(paths, os.path.join(root, f"{mode}-second.zip"), precision=mode, data_dir=second,
                       tolerance=float("inf"), max_bytes=10 ** 12, gate_seqs=args.score_seqs)
        r[f"d2_{mode}"] = info["gate"]["ensemble"]["delta"]
    return r


PRECISION_HEAD = (f"{'case':<18}{'models':>7}{'MB':>7}{'f32':>8}{'f16':>8}{'i8':>8}{'f16mem':>8}{'ort32':>8}"
                  f"{'ort8':>8}{'torch':>8}   {'zip MB f32/f16/i8/ort8':<24}{'d f16':>9}{'d i8':>9}{'d ort8':>9}"
                  f"{'d2 f16':>9}{'d2 i8':>9}{'d2 ort8':>9}")


def precision_line(r: dict) -> str:
    zips = f"{r['zip_float32']:.1f}/{r['zip_float16']:.1f}/{r['zip_int8']:.1f}/{r['zip_int8-ort']:.1f}"
    return (f"{r['case']:<18}{r['models']:>7}{r['weight_mb']:>7.2f}" + "".join(
        f"{r[k]:>8.3f}" for k in ("f32", "f16", "i8", "f16mem", "ort32", "ort8", "torch"))
        + f"   {zips:<24}{r['d_float16']:>+9.1e}{r['d_int8']:>+9.1e}{r['d_int8-ort']:>+9.1e}"
        + "".join(f"{r.get('d2_' + m, float('nan')):>+9.1e}" for m in ("float16", "int8", "int8-ort")))


def run_precision_cases(args, rows: np.ndarray, root: str) -> tuple[list[dict], str]:
    data_dir = os.path.join(root, "data")
    write_dataset(data_dir, n_train=args.train_seqs, n_valid=args.valid_seqs, seed=0)
    second = os.path.join(root, "data-shifted")          # a second dataset for the score gates (d2 columns)
    write_dataset(second, n_train=2, n_valid=args.valid_seqs, seed=1, variant="shifted")
    bases = {}
    for layers in sorted({c[2] for c in PRECISION_CASES}):
        torch.manual_seed(0)
        bases[layers] = train_member(data_dir, "gru", os.path.join(root, f"base-{layers}x128"),
                                     hparams={"hidden": 128, "layers": layers},
                                     train_cfg={"epochs": args.epochs, "batch_size": 8, "device": "cpu"},
                                     prepare_kwargs={"max_train_seqs": args.train_seqs}).path
    trained = {k: load_bundle(p).spec["metrics"].get("report_mean") for k, p in bases.items()}
    note = (f"Members: copies of one GRU per depth trained {args.epochs} epoch(s) on {args.train_seqs} synthetic "
            f"sequences (report score {', '.join(f'{k}x128 {v:.3f}' for k, v in trained.items() if v is not None)}), "
            f"each weight + {NOISE} x its tensor's std x N(0, 1): trained-ish weights, not a real ensemble. "
            f"Score deltas on the report rows of a {args.valid_seqs}-sequence synthetic valid file "
            f"(d ort8 streamed on {args.score_seqs} of its report sequences); d2: the same gates on the report rows "
            f"of a second dataset, the shifted generator variant (seed 1), which the members never saw.")
    print(note)
    print(PRECISION_HEAD + "   (ms per row, one core)")
    results = []
    for name, n, layers, k in PRECISION_CASES:
        case_root = os.path.join(root, name.replace(" ", "_").replace("=", ""))
        paths = perturbed_members(bases[layers], case_root, n, k)
        results.append(precision_case(name, paths, data_dir, rows, args, case_root, second))
        print(precision_line(results[-1]), flush=True)
    return results, note


# ---------------------------------------------------------------- report
MEMBERS_HEAD = (f"{'case':<18}{'M':>3}{'MB':>7}{'fused':>9}{'model':>8}{'unfused':>9}{'torch':>9}{'x':>7}"
                f"{'min/1500':>10}{'GB/s':>7}{'floor':>8}")


def members_line(r: dict) -> str:
    return (f"{r['case']:<18}{r['members']:>3}{r['weight_mb']:>7.2f}{r['fused_ms']:>9.3f}"
            f"{r['fused_model_ms']:>8.3f}{r['unfused_ms']:>9.3f}{r['torch_ms']:>9.3f}{r['ratio']:>7.1f}"
            f"{r['projected_min']:>10.1f}{r['gb_per_s']:>7.1f}{r['floor_ms']:>8.3f}")


def write_markdown(path: str, args, members: list[dict], precision: list[dict], note: str) -> None:
    lines = ["# Streaming inference latency (bench/inference_latency.py)", "",
             f"One core of {_cpu_name()}, one thread; fastest of {args.repeats} passes over {args.steps} rows. "
             "Column meanings: the module docstring of bench/inference_latency.py.", ""]
    if members:
        lines += ["## Members: fused numpy engine vs the torch loop", "", "```", MEMBERS_HEAD + "   (ms per row)"]
        lines += [members_line(r) for r in members] + ["```", ""]
    if precision:
        lines += ["## Precision: compact weights and onnxruntime int8 (issue 16)", "", note, "",
                  f"Goal: 10 members of 4x128 at <= {GOAL_MS} ms/step and <= {GOAL_MB:g} MB, each compact mode within "
                  "1e-4 of the float32 score; stretch: 5 bagged members (25 models) of 4x128.", "",
                  "```", PRECISION_HEAD + "   (ms per row)"]
        lines += [precision_line(r) for r in precision] + ["```", ""]
    with open(path + ".tmp", "w") as fh:
        fh.write("\n".join(lines))
    os.replace(path + ".tmp", path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", choices=("all", "members", "precision"), default="all")
    ap.add_argument("--train-seqs", type=int, default=64, help="precision cases: synthetic train sequences")
    ap.add_argument("--valid-seqs", type=int, default=64, help="precision cases: synthetic valid sequences")
    ap.add_argument("--epochs", type=int, default=1, help="precision cases: epochs of the base GRUs")
    ap.add_argument("--score-seqs", type=int, default=8, help="report sequences the int8-ort gate streams (d ort8)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "inference_latency.md"), help="markdown report to write")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = sample_rows(args.steps, seed=1)
    members, precision, note = [], [], ""
    with tempfile.TemporaryDirectory(prefix="lobsweep-bench-") as root:
        if args.cases in ("all", "members"):
            pipeline = FeaturePipeline.from_spec({}).fit(sample_rows(4000, seed=2)[None])
            cases = [(f"{n} x gru", ["gru"] * n) for n in (1, 5, 10)] + [("mixed 5 families", list(FAMILIES))]
            print(MEMBERS_HEAD + "   (ms per row, one core)")
            for name, families in cases:
                r = run_case(name, make_bundles(os.path.join(root, name.replace(" ", "_")), families, pipeline),
                             rows, args.steps, args.repeats)
                members.append(r)
                print(members_line(r), flush=True)
        if args.cases in ("all", "precision"):
            precision, note = run_precision_cases(args, rows, os.path.join(root, "precision"))
    write_markdown(args.out, args, members, precision, note)
    print(f"wrote {args.out}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": _cpu_name(), "steps": args.steps, "results": members, "precision": precision}, fh,
                      indent=1)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
