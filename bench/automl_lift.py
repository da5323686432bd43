"""Does the AutoML pay for itself? full-search at budget B against the plain default GRU trained for B.

    python bench/automl_lift.py [--budgets 5m,10m,20m] [--datasets default,shifted] [--out bench/results]
    python bench/automl_lift.py --cases default:5m,shifted:5m,default:10m,shifted:10m,shifted:20m --work W

``--baselines-from W`` reuses an earlier bench's data, test set and default-GRU
zips (same sizes and seed), so a change to the search is measured against the
very baseline runs it was measured against before; only full-search runs again.

``--cases`` lists (dataset, budget) pairs in the order they run (instead of every
dataset x every budget). Each finished case is appended to ``<work>/results.jsonl``
and the table is rewritten after every case; rerunning with the same ``--work``
skips the cases already there (the library is snapshotted afresh, so only rerun
to finish an interrupted bench of the same code).

For each dataset (the synthetic default, and the ``shifted`` generator variant
whose signal lives at other time scales with other interactions) and each
budget B, in one run on the same machine, one after the other:

- **full-search**: ``lobsweep full-search --data D --time-budget B`` (default preset);
- **baseline**: ``lobsweep train --family gru`` with every default, on raw
  features, given B as its time limit (``--train-set time_limit_s=B`` and
  epochs enough to fill it; early stopping as by default), then
  ``lobsweep package`` as a one-member zip. With ``--baseline-seeds K`` it is
  trained K times (seeds 0..K-1, each its own run of budget B), and the lift
  is against the mean of their scores: one default GRU's early stopping moves
  its score by more than the lift grows with B, so one draw is not a baseline.

Both zips are scored step by step on held-out sequences that neither saw (a
test file generated with another seed from the same generator, with its
oracle), and the lift (full-search minus baseline) gets a paired
sequence-bootstrap 95% CI. Wall times are printed beside the scores. The table
is written to ``<out>/automl_lift.md``.

The library under test is a snapshot: at start the installed package layout is
copied under ``<work>/lib`` and every command runs with ``PYTHONPATH`` pointing
there, so an edit to the checkout during a long bench cannot leak into it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

TEST_SEED_OFFSET = 1000


ENV = dict(os.environ)
CWD = None


def snapshot_library(work: str) -> str:
    """The installed lobsweep layout copied under ``work/lib`` (what every command then imports)."""
    import shutil
    from lobsweep.flows.identity import library_roots
    root = os.path.join(work, "lib")
    for name, src in library_roots().items():
        shutil.copytree(src, os.path.join(root, *name.split(".")), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    ENV["PYTHONPATH"] = root              # commands run with cwd=work: a checkout as cwd would shadow it
    global CWD
    CWD = work
    check = subprocess.run([sys.executable, "-c", "import lobsweep.flows.budget as b; print(b.__file__)"],
                           env=ENV, capture_output=True, text=True, cwd=work)
    assert check.stdout.startswith(root), f"the snapshot is not what runs: {check.stdout or check.stderr}"
    sys.path.insert(0, root)                  # and in this process (data, scoring): drop what was imported
    for mod in [m for m in sys.modules if m == "lobsweep" or m.startswith("lobsweep.")]:
        del sys.modules[mod]
    return root


def cli(*args: str, log: str) -> tuple[str, float]:
    """Run ``lobsweep ARGS``; (stdout, wall seconds). Output is kept in ``log``; a failure raises."""
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "lobsweep", *args], capture_output=True, text=True, env=ENV, cwd=CWD)
    with open(log, "a") as fh:
        fh.write(f"$ lobsweep {' '.join(args)}\n{r.stdout}\n{r.stderr}\n")
    if r.returncode != 0:
        raise RuntimeError(f"lobsweep {args[0]} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return r.stdout, time.time() - t0


def source_commit() -> str:
    """The checkout's commit, with ``+dirty`` when the library differs from it."""
    here = os.path.dirname(os.path.abspath(__file__))
    git = lambda *a: subprocess.run(["git", *a], cwd=here, capture_output=True, text=True).stdout.strip()  # noqa: E731
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                      ":(top,exclude)bench/results")
                   else "")


def make_data(root: str, variant: str, n_train: int, n_valid: int, n_test: int, seed: int) -> tuple[str, str]:
    from lobsweep.data.synth import write_dataset
    data, test = os.path.join(root, "data"), os.path.join(root, "test")
    if not os.path.exists(os.path.join(data, "valid.parquet")):
        write_dataset(data, n_train=n_train, n_valid=n_valid, seed=seed, variant=variant)
        write_dataset(test, n_train=2, n_valid=n_test, seed=seed + TEST_SEED_OFFSET, variant=variant)
    return data, test


def score(zip_path: str, test: str) -> dict:
    from lobsweep.submission.scorer import score_zip
    return score_zip(zip_path, os.path.join(test, "valid.parquet"),
                     oracle_path=os.path.join(test, "oracle_valid.parquet"), progress=False)


def lift_ci(test: str, a: dict, bs: list[dict]) -> dict:
    """score(a) minus the mean score of the baselines ``bs`` on the test rows, with a paired
    sequence-bootstrap 95% CI: every zip is scored on the same resampled sequences."""
    import pandas as pd
    from lobsweep.ensemble.selection import tune_gain
    df = pd.read_parquet(os.path.join(test, "valid.parquet"), columns=["seq_ix", "need_prediction", "t0", "t1"])
    rows = df[df["need_prediction"]]
    y = rows[["t0", "t1"]].to_numpy(np.float64)
    return tune_gain(y, a["predictions"], [b["predictions"] for b in bs], rows["seq_ix"].to_numpy(), n_boot=1000,
                     level=0.95)


def run_case(root: str, data: str, test: str, budget: str, seconds: float, seeds: int,
             baselines_from: str | None = None) -> dict:
    log = os.path.join(root, f"log-{budget}.txt")
    out, fs_wall = cli("full-search", "--data", data, "--run-dir", os.path.join(root, f"runs-{budget}"),
                       "--time-budget", budget, log=log)
    fs_zip = re.search(r"^zip: (.+?) \(\d+ members", out, re.M).group(1)
    base = []
    for seed in range(seeds):
        old = baselines_from and os.path.join(baselines_from, f"baseline-{budget}-s{seed}.zip")
        if old and os.path.exists(old):                  # the same command on the same data, run before
            base.append((old, float("nan")))
            continue
        bundle = os.path.join(root, f"baseline-{budget}-s{seed}")
        _, train_wall = cli("train", "--family", "gru", "--data", data, "--out", bundle, "--no-mlflow",
                            "--seed", str(seed), "--epochs", "1000", "--train-set", f"time_limit_s={seconds}", log=log)
        base_zip = os.path.join(root, f"baseline-{budget}-s{seed}.zip")
        _, pkg_wall = cli("package", "--members", bundle, "--out", base_zip, "--precision", "float32", log=log)
        base.append((base_zip, train_wall + pkg_wall))
    load = os.getloadavg()[1]             # 5-minute load average after both arms: another job would show here
    a, bs = score(fs_zip, test), [score(z, test) for z, _ in base]
    oracle = [b.get("oracle_fraction") for b in bs]
    return {"budget": budget, "full_search": a["weighted_pearson"], "full_search_oracle": a.get("oracle_fraction"),
            "full_search_wall_s": fs_wall, "baseline": float(np.mean([b["weighted_pearson"] for b in bs])),
            "baseline_oracle": None if None in oracle else float(np.mean(oracle)),
            "baseline_wall_s": float(np.mean([w for _, w in base])), "baselines_from": baselines_from,
            "baseline_seeds": [b["weighted_pearson"] for b in bs], "stages": stages_of(out),
            "lift": lift_ci(test, a, bs), "load5": load}


def stages_of(out: str) -> dict:
    """The run's time-budget table (planned / allotted / spent per stage) and what its stages did."""
    rows = re.findall(r"^(feature-search|hpo|retrain|finish)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", out, re.M)
    info = {st: {"planned": p, "allotted": a, "spent": sp} for st, p, a, sp in rows}
    m = re.search(r"^trials: (.+)$", out, re.M)
    info["trials"] = m.group(1) if m else None
    m = re.search(r"search stagnated at (\S+)", out)
    info["stagnated_at"] = m.group(1) if m else None
    m = re.search(r"^chosen on tune: .*$", out, re.M)
    info["ensemble"] = m.group(0) if m else None
    m = re.search(r"^zip: .*\((\d+) members", out, re.M)
    info["members"] = int(m.group(1)) if m else None
    return info


def main() -> int:
    from lobsweep.flows.budget import parse_duration
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="5m")
    ap.add_argument("--datasets", default="default,shifted")
    ap.add_argument("--cases", default=None, help="dataset:budget,... in run order (overrides the two above)")
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-valid", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-seeds", type=int, default=3, help="default-GRU runs per case; the lift is vs their mean")
    ap.add_argument("--work", default=None)
    ap.add_argument("--baselines-from", default=None,
                    help="an earlier bench's work dir: its data, test set and default-GRU zips are reused (the "
                         "baseline is `lobsweep train` with every default, so a change to the search leaves it "
                         "as it was); only full-search runs again")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    if args.baseline_seeds < 1:
        ap.error("--baseline-seeds must be >= 1")
    work = args.work or tempfile.mkdtemp(prefix="automl-lift-")
    os.makedirs(work, exist_ok=True)
    commit = source_commit()
    print(f"library snapshot: {snapshot_library(work)} (commit {commit})", flush=True)
    cases = ([tuple(c.split(":")) for c in args.cases.split(",")] if args.cases else
             [(v, b) for v in args.datasets.split(",") for b in args.budgets.split(",")])
    done_path = os.path.join(work, "results.jsonl")
    results = [json.loads(line) for line in open(done_path)] if os.path.exists(done_path) else []
    for variant, budget in cases:
        if any(r["dataset"] == variant and r["budget"] == budget for r in results):
            continue
        root = os.path.join(work, variant)
        os.makedirs(root, exist_ok=True)
        src = os.path.join(args.baselines_from, variant) if args.baselines_from else None
        data, test = (os.path.join(src, "data"), os.path.join(src, "test")) if src else \
            make_data(root, variant, args.n_train, args.n_valid, args.n_test, args.seed)
        r = {"dataset": variant, "commit": commit,
             **run_case(root, data, test, budget, parse_duration(budget), args.baseline_seeds, src)}
        results.append(r)
        with open(done_path, "a") as fh:
            fh.write(json.dumps(r, default=float) + "\n")
        print(json.dumps(r, default=float), flush=True)
        write_table(results, args)
    write_table(results, args)
    return 0


def write_table(results: list[dict], args) -> None:
    lines = [f"# AutoML lift: full-search at budget B vs the default GRU trained for B ({time.strftime('%Y-%m-%d')})",
             "", f"{args.n_train} train / {args.n_valid} valid sequences; scored on {args.n_test} held-out test "
             "sequences (another seed, same generator); 2-core CPU machine; load5 is the 5-minute load "
             "average after both arms (2.0 = both cores busy, more = something else ran too).", "",
             "The default GRU's score is the mean over its seeds (each a run of budget B); the lift and its "
             "paired sequence-bootstrap CI are against that mean.", "",
             "| dataset | B | full-search | (oracle %) | wall s | default GRU, mean | (oracle %) | seeds | wall s | "
             "lift | 95% CI | load5 | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
        lines.append(f"| {r['dataset']} | {r['budget']} | {r['full_search']:.4f} | {pct(r['full_search_oracle'])} | "
                     f"{r['full_search_wall_s']:.0f} | {r['baseline']:.4f} | {pct(r['baseline_oracle'])} | "
                     f"{' / '.join(f'{v:.4f}' for v in r.get('baseline_seeds', [r['baseline']]))} | "
                     f"{'reused' if r['baseline_wall_s'] != r['baseline_wall_s'] else round(r['baseline_wall_s'])} | "
                     f"{r['lift']['gain']:+.4f} | "
                     f"[{r['lift']['lo']:+.4f}, {r['lift']['hi']:+.4f}] | {r.get('load5', float('nan')):.2f} | "
                     f"{r.get('commit', '-')} |")
    table = "\n".join(lines)
    print(table, flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "automl_lift.md"), "w") as fh:
        fh.write(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
