"""What the named recipes are worth here, and whether enqueuing them lifts a sweep.

    python bench/recipes.py [--n-train 64] [--n-valid 32] [--epochs 4] [--trials 6] [--write PATH]

On two synthetic datasets, the default and the ``shifted`` variant (other
time scales and interactions, data/synth_signal.py), in one process on one
core:

    (1) every recipe (search_spaces/recipes.py) trained alone with its own
        model, training and feature config, for ``--epochs`` epochs: its tune
        and report scores and the report score as a share of the oracle's;
    (2) two gru sweeps at the same number of trials, ASHA + TPE, on the sweep's
        default features: with the gru recipes enqueued as first trials, and
        without. The best trial of each (ranked on tune, report beside it).

Tune chooses; report is only printed. At this budget (tens of sequences, a few
epochs) the public recipes are far from the regime they were made for (10.7k
sequences, 15-20 epochs; batch 192 is one optimiser step per epoch on 64
sequences), so (1) measures them at a CI-sized budget, nothing more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train_recipes(data: str, root: str, epochs: int, seed: int) -> list[dict]:
    from lobsweep.search_spaces.recipes import get_recipe, list_recipes
    from lobsweep.training.member import train_member
    from lobsweep.training.prepare import prepare
    preps, rows = {}, []
    for name in list_recipes():
        r = get_recipe(name)
        key = json.dumps(r["features"], sort_keys=True)
        if key not in preps:
            preps[key] = prepare(data, r["features"], cache_dir=os.path.join(root, "cache"))
        t0 = time.perf_counter()
        b = train_member(data, r["family"], os.path.join(root, "recipes", name), hparams=r["model"],
                         train_cfg={**r["train"], "epochs": epochs, "device": "cpu"}, features_spec=r["features"],
                         seed=seed, prep=preps[key])
        m = b.spec["metrics"]
        rows.append({"recipe": name, "family": r["family"], "tune": m["tune_mean"], "report": m["report_mean"],
                     "oracle_share": m.get("fraction_of_oracle"), "best_epoch": b.spec["best_epoch"],
                     "params": b.spec["n_params"], "seconds": time.perf_counter() - t0})
        print(f"  {name:<22} tune {m['tune_mean']:.4f}  report {m['report_mean']:.4f}", flush=True)
    return rows


def sweep_arm(data: str, root: str, name: str, recipes: bool, trials: int, epochs: int, seed: int) -> dict:
    from lobsweep.tuning import run_sweep
    out = run_sweep(data, ["gru"], name=name, run_dir=os.path.join(root, "runs"), num_samples=trials,
                    max_epochs=epochs, grace_period=1, reduction_factor=3, seed=seed, max_concurrent=1,
                    track=False, recipes=recipes)
    best = out["best"] or {}
    by_id = {r["trial_id"]: r for r in out["records"]}
    tagged = [r for r in out["records"] if r.get("recipe")]
    return {"arm": "with recipes" if recipes else "without", "trials": out["n_trials"],
            "completed": out["counts"].get("gru", {}).get("completed", 0), "best_tune": best.get("tune_score"),
            "best_report": best.get("report_score"), "best_is": by_id.get(best.get("trial_id"), {}).get("recipe"),
            "recipe_trials": len(tagged), "seconds": out["seconds"]}


def _f(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def table(variant: str, info: dict, rows: list[dict], arms: list[dict]) -> str:
    o = info["oracle_valid"]["mean"]
    lines = [f"### data: {variant} (oracle on the whole valid file {o:.4f})", "",
             "| recipe | family | params | tune | report | report / oracle | best epoch | s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        share = "-" if r["oracle_share"] is None else f"{100 * r['oracle_share']:.1f}%"
        lines.append(f"| {r['recipe']} | {r['family']} | {r['params']:,} | {_f(r['tune'])} | {_f(r['report'])} "
                     f"| {share} | {r['best_epoch']} | {r['seconds']:.0f} |")
    lines += ["", "| gru sweep | trials (completed) | recipe trials | best tune | its report | best is | s |",
              "|---|---:|---:|---:|---:|---|---:|"]
    for a in arms:
        lines.append(f"| {a['arm']} | {a['trials']} ({a['completed']}) | {a['recipe_trials']} | {_f(a['best_tune'])} "
                     f"| {_f(a['best_report'])} | {a['best_is'] or 'a searched config'} | {a['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-valid", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4, help="epochs per recipe, and a sweep trial's max_t")
    ap.add_argument("--trials", type=int, default=6, help="trials per sweep arm")
    ap.add_argument("--variants", default="default,shifted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for data and runs (default: a temp dir)")
    ap.add_argument("--write", default=None, help="also write the tables to this markdown file")
    args = ap.parse_args(argv)

    import torch
    from lobsweep.data.synth import write_dataset
    from lobsweep.tuning.ray_setup import ray_session
    torch.set_num_threads(1)
    root = args.out or tempfile.mkdtemp(prefix="recipes-bench-")
    head = (f"{args.n_train} fit / {args.n_valid} valid sequences (half tune, half report), {args.epochs} epochs "
            f"per recipe and per sweep trial (ASHA grace 1, rf 3), {args.trials} trials per sweep arm, 1 CPU, "
            f"seed {args.seed}\n")
    parts = [head]
    ray_tmp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    try:
        with ray_session(num_cpus=1, temp_dir=ray_tmp):
            for variant in args.variants.split(","):
                sub = os.path.join(root, variant)
                data = os.path.join(sub, "data")
                info = write_dataset(data, n_train=args.n_train, n_valid=args.n_valid, seed=args.seed,
                                     variant=variant)
                print(f"{variant}: recipes", flush=True)
                rows = train_recipes(data, sub, args.epochs, args.seed)
                stamp = time.strftime("%H%M%S")
                arms = [sweep_arm(data, sub, f"{name}-{stamp}", rec, args.trials, args.epochs, args.seed)
                        for name, rec in (("with", True), ("without", False))]
                parts.append(table(variant, info, rows, arms))
                print(parts[-1], flush=True)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if args.write:
        with open(args.write, "w") as f:
            f.write("# Recipes at a CI-sized budget (bench/recipes.py)\n\n" + "\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
