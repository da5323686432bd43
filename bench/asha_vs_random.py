"""Does ASHA pay? ASHA + TPE against random search with every trial trained to max_t.

    python bench/asha_vs_random.py [--trials 16] [--max-epochs 9] [--n-train 64] [--n-valid 32]

On one synthetic dataset and one space (the gru family, crops of 256 steps),
both sweeps run the same number of trials in one Ray session:

    (a) ASHA (grace 1, reduction factor 3 unless --grace / --rf) with Optuna TPE
    (b) random search, FIFO: every trial trains max_t epochs (patience off)

Both arms enqueue the gru recipes (search_spaces/recipes.py) as their first
trials, as every sweep does, unless --no-recipes.

and it prints each one's best tune score (the best epoch of any trial), the
epochs each consumed, and the epochs ASHA had consumed, in the order results
arrived, when its best-so-far first came within 0.005 of (b)'s best. The goal
is ASHA within 0.005 of (b) using at most 35% of (b)'s epochs. Report scores of
each winner are printed beside them (never used to choose).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOLERANCE = 0.005
GOAL_EPOCH_SHARE = 0.35


def bench_space() -> dict:
    from lobsweep.search_spaces import common_space, family_space
    model = family_space("gru")
    model["hidden"] = {"type": "int", "low": 16, "high": 128, "log": True}      # keeps the bench minutes long
    train = common_space()
    train["crop_len"] = {"type": "choice", "values": [256]}
    train["burn_in"] = {"type": "choice", "values": [64]}
    return {"gru": {"model": model, "train": train}}


def arrivals():
    """A Tune callback recording, in arrival order, the tune score of every epoch reported."""
    from ray.tune import Callback

    class Arrivals(Callback):
        def __init__(self):
            self.scores, self.by_trial = [], {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("trial_status") != "failed" and "epoch" in result:
                self.scores.append(float(result["tune_mean"]))
                self.by_trial.setdefault(trial.trial_id, []).append(float(result["tune_mean"]))

    return Arrivals()


def run_arm(data: str, name: str, common: dict, **kw) -> dict:
    from lobsweep.tuning import run_sweep
    seen = arrivals()
    out = run_sweep(data, ["gru"], name=name, callbacks=[seen], **common, **kw)
    board = json.load(open(out["leaderboard"]))
    best = board["overall"][0] if board["overall"] else {}
    return {"epochs": len(seen.scores), "best_tune": max(seen.scores), "trials": out["n_trials"],
            "completed": out["counts"].get("gru", {}).get("completed", 0), "seconds": out["seconds"],
            "winner_report": best.get("report_score"), "curve": seen.scores, "by_trial": seen.by_trial}


def rank_agreement(by_trial: dict, max_t: int) -> list[tuple[int, float, int]]:
    """How well epoch-k tune scores rank the trials by their best score (trials trained to max_t):
    (k, Spearman rho, trials) for k = 1, 2, 3, ..., the budget at which ASHA's rungs decide."""
    from scipy.stats import spearmanr
    full = [c for c in by_trial.values() if len(c) >= max_t]
    out = []
    for k in sorted({1, 2, 3, max_t // 3, max_t // 2} - {0}):
        if k < max_t and len(full) >= 3:
            rho = spearmanr([c[k - 1] for c in full], [max(c) for c in full]).statistic
            out.append((k, float(rho), len(full)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--max-epochs", type=int, default=9)
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-valid", type=int, default=32)
    ap.add_argument("--grace", type=int, default=1, help="ASHA grace period (epochs)")
    ap.add_argument("--rf", type=float, default=3.0, help="ASHA reduction factor")
    ap.add_argument("--cpus", type=int, default=2, help="logical CPUs of the local Ray (1 per trial)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for data and runs (default: a temp dir)")
    ap.add_argument("--no-recipes", action="store_true", help="do not enqueue the recipes in either arm")
    args = ap.parse_args(argv)

    from lobsweep.data.synth import write_dataset
    from lobsweep.tuning.ray_setup import ray_session
    root = args.out or tempfile.mkdtemp(prefix="asha-bench-")
    data = os.path.join(root, "data")
    if not os.path.exists(os.path.join(data, "valid.parquet")):
        write_dataset(data, n_train=args.n_train, n_valid=args.n_valid, seq_len=1000, seed=args.seed)
    # patience off in both arms: only ASHA may end a trial before max_t
    common = dict(num_samples=args.trials, max_epochs=args.max_epochs, run_dir=os.path.join(root, "runs"),
                  spaces=bench_space(), seed=args.seed, max_concurrent=args.cpus, track=False,
                  train_fixed={"patience": args.max_epochs}, recipes=not args.no_recipes)
    stamp = time.strftime("%H%M%S")
    with ray_session(num_cpus=args.cpus, log_dir=root):
        asha = run_arm(data, f"asha-{stamp}", common, grace_period=args.grace, reduction_factor=args.rf,
                       scheduler="asha", searcher="tpe")
        full = run_arm(data, f"random-{stamp}", common, grace_period=args.max_epochs,
                       scheduler="fifo", searcher="random")

    target = full["best_tune"] - TOLERANCE
    needed, best_so_far = None, -1.0
    for i, score in enumerate(asha["curve"], start=1):
        best_so_far = max(best_so_far, score)
        if best_so_far >= target:
            needed = i
            break
    print(f"data: {args.n_train} fit / {args.n_valid} valid sequences; {args.trials} trials per arm, "
          f"max_t {args.max_epochs}, ASHA grace {args.grace} rf {args.rf:g}")
    for name, r in (("(a) ASHA + TPE", asha), ("(b) random, full max_t", full)):
        rep = "-" if r["winner_report"] is None else f"{r['winner_report']:.4f}"
        print(f"{name:<24} best tune {r['best_tune']:.4f}  epochs {r['epochs']:>4}  trials {r['trials']:>3} "
              f"({r['completed']} completed)  {r['seconds']:.0f} s  winner report {rep}")
    gap = full["best_tune"] - asha["best_tune"]
    share = asha["epochs"] / max(full["epochs"], 1)
    print(f"ASHA best is {gap:+.4f} below random's; ASHA used {share:.0%} of random's epochs")
    if needed is None:
        print(f"ASHA never came within {TOLERANCE} of random's best")
    else:
        print(f"ASHA came within {TOLERANCE} of random's best after {needed} epochs "
              f"({needed / max(full['epochs'], 1):.0%} of random's {full['epochs']})")
    for k, rho, n in rank_agreement(full["by_trial"], args.max_epochs):
        print(f"random arm: epoch-{k} tune scores rank its {n} full trials by their best with Spearman {rho:+.2f}")
    met = needed is not None and gap <= TOLERANCE and share <= GOAL_EPOCH_SHARE
    print(f"goal (within {TOLERANCE} using <= {GOAL_EPOCH_SHARE:.0%} of the epochs): {'met' if met else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
