"""Train-only ensemble vs k-fold bagged ensemble, at equal configs and seeds, on report.

Run:  .venv/bin/python bench/kfold_bagging.py [--out bench/results/kfold_bagging.md] [--k 5]

Two synthetic datasets of the same small size: the default generator, and the
same with ``valid_shift`` (a share of the valid sequences from a volatility
regime train never has). On each, one GRU config and ``--seeds`` seeds:

  train-only   ``train_member`` per seed: fits on train, early-stops on the tune
               role; the ensemble stage selects on tune, reports on report
  bagged K     ``train_bagged_member`` per seed: K fold models over train + the
               tune role, each early-stopping on its own fold; the ensemble
               stage selects on out-of-fold pool rows, reports on report

Columns: the used ensemble's report score with its sequence-bootstrap 95% CI,
the paired bootstrap 95% CI of (bagged - train-only) on the same report rows,
and each ensemble's cost in ms per step in the packaged engine, whole step and
(in brackets) the models' share without the feature pipelines (one thread,
fastest of 5 interleaved passes of 2000 steps; the machine is shared, so treat
the ratio, not the level).

Small on purpose (one core, a few minutes): short crops and few epochs, so
the absolute scores are far below the oracle; this measures the direction
and size of the difference at this scale, not the real-data gain.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lobsweep.data.loader import load  # noqa: E402
from lobsweep.data.splits import row_roles, split_roles  # noqa: E402
from lobsweep.data.synth import write_dataset  # noqa: E402
from lobsweep.ensemble.selection import tune_gain  # noqa: E402
from lobsweep.ensemble.stage import run_ensemble  # noqa: E402
from lobsweep.submission.cost import time_engine  # noqa: E402
from lobsweep.submission.assemble import engine_from_bundles, offline_predictions  # noqa: E402
from lobsweep.features import FeaturePipeline  # noqa: E402
from lobsweep.models import create_model  # noqa: E402
from lobsweep.training.bagging import train_bagged_member  # noqa: E402
from lobsweep.training.bundle import save_bundle  # noqa: E402
from lobsweep.training.member import train_member  # noqa: E402

HP = {"hidden": 32, "layers": 1}
CFG = {"epochs": 4, "batch_size": 8, "crop_len": 400, "burn_in": 64, "lr": 4e-3, "patience": 2}


def report_arrays(data_dir: str):
    valid = load(os.path.join(data_dir, "valid.parquet"))
    tune_idx, _ = split_roles(valid.seq_ix, 0.5, 0)
    seq, is_tune = row_roles(valid.mask, tune_idx)
    return valid.Y[valid.mask][~is_tune], seq[~is_tune], ~is_tune


def ensemble(pool: str, run_dir: str, data_dir: str) -> dict:
    s = run_ensemble(checkpoints=pool, run_dir=run_dir, data_dir=data_dir, n_boot=200, use_mlflow=False)
    spec = s["spec"]
    pred = offline_predictions(spec["members"], np.array(spec["weights"]), spec["post_scale"])
    engine = engine_from_bundles(spec["members"], np.array(spec["weights"]), spec["post_scale"])
    return {"spec": spec, "pred": pred, "engine": engine}


def time_side_by_side(engines: list, rounds: int = 5) -> list[dict]:
    """Fastest of ``rounds`` interleaved passes per engine (the machine is shared: interleaving
    spreads any load over both sides): whole step and the models' share (step - features)."""
    best = [{"ms_per_step": np.inf, "model_ms": np.inf} for _ in engines]
    for _ in range(rounds):
        for b, e in zip(best, engines):
            t = time_engine(e, steps=2000, repeats=1)
            for k in b:
                b[k] = min(b[k], t[k])
    return best


def run_variant(root: str, name: str, shift: float, args) -> dict:
    data = os.path.join(root, name, "data")
    write_dataset(data, n_train=args.n_train, n_valid=args.n_valid, seed=args.seed, valid_shift=shift)
    t0 = time.perf_counter()
    for s in range(args.seeds):
        train_member(data, "gru", os.path.join(root, name, "plain", f"gru-s{s}"), hparams=HP, train_cfg=CFG, seed=s)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(args.seeds):
        train_bagged_member(data, "gru", os.path.join(root, name, "bag", f"gru-s{s}"), k=args.k, hparams=HP,
                            train_cfg=CFG, seed=s)
    t_bag = time.perf_counter() - t0
    Y, groups, rows = report_arrays(data)
    plain = ensemble(os.path.join(root, name, "plain"), os.path.join(root, name, "runs-p"), data)
    bagged = ensemble(os.path.join(root, name, "bag"), os.path.join(root, name, "runs-b"), data)
    diff = tune_gain(Y, bagged["pred"][rows], plain["pred"][rows], groups, n_boot=500, seed=0, level=0.95)
    plain["ms"], bagged["ms"] = time_side_by_side([plain.pop("engine"), bagged.pop("engine")])
    return {"name": name, "shift": shift, "plain": plain, "bagged": bagged, "diff": diff,
            "train_s": {"plain": t_plain, "bagged": t_bag}}


def fmt(r: dict, k: int) -> list[str]:
    out = []
    for label, e, secs in (("train-only", r["plain"], r["train_s"]["plain"]),
                           (f"bagged K={k}", r["bagged"], r["train_s"]["bagged"])):
        rep = e["spec"]["report"]
        out.append(f"| {r['name']} | {label} | {e['spec']['selected_on']} | {e['spec']['method']} | "
                   f"{e['spec']['tune_score']:.4f} | {rep['mean']:.4f} [{rep['ci_lo']:.4f}, {rep['ci_hi']:.4f}] | "
                   f"{rep['t0']:.4f} / {rep['t1']:.4f} | {e['ms']['ms_per_step']:.3f} ({e['ms']['model_ms']:.3f}) | "
                   f"{secs:.0f} |")
    d = r["diff"]
    out.append(f"| {r['name']} | bagged - train-only | | | | {d['gain']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] | | "
               f"x{r['bagged']['ms']['ms_per_step'] / r['plain']['ms']['ms_per_step']:.2f} "
               f"(x{r['bagged']['ms']['model_ms'] / max(r['plain']['ms']['model_ms'], 1e-9):.2f}) | |")
    return out


def default_size_cost(root: str, k: int, n_members: int = 2) -> list[str]:
    """Engine cost of ``n_members`` plain default GRUs (2 layers, h=128) vs ``n_members`` bags of K
    such models: random weights (the cost does not depend on them), saved as real bundles."""
    pipe = FeaturePipeline.from_spec({})
    pipe.fit(np.random.default_rng(0).standard_normal((2, 200, 32)).astype(np.float32))
    features = json.loads(pipe.to_json())
    plain, bags = [], []
    for i in range(n_members):
        models = []
        for j in range(k):
            torch.manual_seed(100 * i + j)
            models.append(create_model("gru", n_features=pipe.n_features_out))
        spec = {"family": "gru", "config": dict(vars(models[0].config)), "features": features, "seed": i,
                "data": {}, "metrics": {}}
        plain.append(save_bundle(os.path.join(root, f"plain{i}"), models[0], spec, np.zeros((1, 2))))
        sets = {f"fold{j}.{n}": v for j, m in enumerate(models) for n, v in m.state_dict().items()}
        bags.append(save_bundle(os.path.join(root, f"bag{i}"), models[0], {**spec, "bag": {"k": k}},
                                np.zeros((1, 2)), state_dict=sets))
    a, b = time_side_by_side([engine_from_bundles(plain), engine_from_bundles(bags)])
    return ["", f"Default-size members (GRU 2 layers, h=128, random weights), {n_members} members, same timing:", "",
            "| ensemble | models in the engine | ms/step (models) |", "|---|---|---|",
            f"| train-only | {n_members} | {a['ms_per_step']:.3f} ({a['model_ms']:.3f}) |",
            f"| bagged K={k} | {n_members * k} | {b['ms_per_step']:.3f} ({b['model_ms']:.3f}) |",
            f"| ratio | x{k} | x{b['ms_per_step'] / a['ms_per_step']:.2f} "
            f"(x{b['model_ms'] / max(a['model_ms'], 1e-9):.2f}) |"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "kfold_bagging.md"))
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-valid", type=int, default=48)
    ap.add_argument("--shift", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--append", action="store_true", help="add this run's table to --out")
    ap.add_argument("--cost-only", action="store_true", help="only the default-size engine cost table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cost_only:
        with tempfile.TemporaryDirectory() as root:
            text = "\n".join(default_size_cost(root, args.k)) + "\n"
        print(text)
        with open(args.out, "a") as f:
            f.write(text)
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        results = [run_variant(root, "default", 0.0, args), run_variant(root, f"valid-shift {args.shift}", args.shift, args)]
    lines = [f"## data seed {args.seed} (bench/kfold_bagging.py, {time.strftime('%Y-%m-%d')})", "",
             f"Synthetic data, {args.n_train} train / {args.n_valid} valid sequences (half tune, half report), "
             f"GRU {json.dumps(HP)}, training {json.dumps(CFG)}, seeds 0..{args.seeds - 1}; "
             f"one thread. Report score = the used ensemble on the report role, sequence-bootstrap 95% CI; "
             f"the difference row is a paired bootstrap on the same report rows.", "",
             "| data | ensemble | selected on | method | selection score | report mean [95% CI] | report t0 / t1 "
             "| ms/step (models) | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines += fmt(r, args.k)
    lines += ["", f"total {time.perf_counter() - t0:.0f} s. Selection score: cross-fitted tune score (train-only) or "
              "out-of-fold pool score (bagged); they are on different rows and not comparable with each other."]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "a" if args.append else "w") as f:
        f.write(("\n" if args.append else "# k-fold bagged vs train-only ensemble\n\n") + text)


if __name__ == "__main__":
    main()
