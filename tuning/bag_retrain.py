"""``lobsweep retrain --from SWEEP --folds K``: the sweep's winners as k-fold bagged members.

The same jobs as the multi-seed retrain (``retrain_plan.plan_jobs``: top-K configs
per family, S seeds each), but each job trains one bagged member of K fold
models (``training/bagging.py``). All bags of one run share one fold assignment (one
fold seed), so the ensemble stage can select on their out-of-fold rows.

Reduced: bags train one after another in this process (``threads`` torch
threads), not as Ray tasks like the plain retrain; a bag's K folds are
sequential too. A bag that fails is reported and skipped.

Output: ``<run_dir>/retrain/<name>/retrain.json`` and the bundles in
``<run_dir>/checkpoints/<name>/<family>-<trial>-s<seed>-k<K>/``; MLflow
experiment ``retrain``, one parent run and one run per bag (tag ``bagged=K``,
``tune_mean`` = its out-of-fold score; a final fit carries a note instead of
report metrics).
"""

from __future__ import annotations

import os
import time

from ..errors import UserError
from ..training.bagging import NO_HONEST_SCORE, train_bagged_member
from .retrain_plan import data_dir_of, plan_jobs, write_summary


def run_bagged_retrain(sweep: str, *, folds: int, final: bool = False, fold_seed: int = 0, top_k: int = 2,
                       seeds: int = 2, data_dir: str | None = None, tracking_uri: str | None = None,
                       run_dir: str | None = None, name: str | None = None, max_epochs: int | None = None,
                       threads: int = 1, use_mlflow: bool = True) -> dict:
    """Train one bagged member per (config, seed) job of the sweep's leaderboard. Returns the summary."""
    import torch
    from .. import tracking as trk
    from .leaderboard import load_leaderboard

    if folds < 2:
        raise UserError(f"--folds must be >= 2, got {folds}")
    board = load_leaderboard(sweep, run_dir=run_dir)
    jobs = plan_jobs(board, top_k, seeds, max_epochs)
    data_dir = data_dir or data_dir_of(board)
    name = name or f"{board['sweep']}-bag{folds}{'-final' if final else ''}"
    root = os.path.join(trk.run_dir(run_dir), "retrain", name)
    out_root = os.path.join(trk.run_dir(run_dir), "checkpoints", name)
    os.makedirs(root, exist_ok=True)
    prepare_kwargs = {"cache_dir": os.path.join(trk.run_dir(run_dir), "cache")}
    tracking = None
    if use_mlflow:
        import mlflow
        exp = trk.ensure_experiment("retrain", tracking_uri, run_dir)
        tags = {"stage": "retrain", "sweep": board["sweep"], "bagged": str(folds),
                **({"note": NO_HONEST_SCORE} if final else {})}
        with mlflow.start_run(experiment_id=exp, run_name=name, tags=tags) as parent:
            mlflow.log_params({"top_k": top_k, "seeds": seeds, "folds": folds, "final": final,
                               "fold_seed": fold_seed, "jobs": len(jobs)})
        tracking = {"experiment": "retrain", "uri": trk.tracking_uri(tracking_uri, run_dir), "stage": "retrain",
                    "parent_run_id": parent.info.run_id, "tags": {k: v for k, v in tags.items() if k != "stage"}}
    torch.set_num_threads(max(1, int(threads)))
    t0 = time.perf_counter()
    results = []
    for i, job in enumerate(jobs, 1):
        job_name = f"{job['name']}-k{folds}"
        try:
            b = train_bagged_member(data_dir, job["family"], os.path.join(out_root, job_name), k=folds,
                                    final=final, hparams=job["hparams"], train_cfg=job["train_config"],
                                    features_spec=job["features"], seed=job["seed"], fold_seed=fold_seed,
                                    prepare_kwargs=prepare_kwargs,
                                    extra_spec={"parent_trial": job["parent_trial"], "sweep": board["sweep"]})
            if tracking:
                from ..submission.cost import cost_metrics
                from ..training.member import log_member
                log_member(b, {**tracking, "run_name": job_name,
                               "tags": {**tracking["tags"], "parent_config": job["parent_trial"]}},
                           cost_metrics(b.path))
            r = {"ok": True, "name": job_name, "bundle": b.path, "metrics": b.spec["metrics"]}
        except UserError:
            raise                              # bad input (folds, data): the same for every job
        except Exception as exc:               # reported and skipped; the other bags go on
            r = {"ok": False, "name": job_name, "error": f"{type(exc).__name__}: {exc}"}
        r.update(family=job["family"], parent_trial=job["parent_trial"], seed=job["seed"])
        results.append(r)
        status = f"OOF {r['metrics']['tune_mean']:.4f}" if r["ok"] else f"FAILED ({r['error'][:120]})"
        print(f"[bagged retrain {i}/{len(jobs)}] {job_name}: {status}", flush=True)
    ok = [r for r in results if r["ok"]]
    summary = {"format": "lobsweep.retrain/1", "name": name, "sweep": board["sweep"], "data_dir": data_dir,
               "bundles_dir": out_root, "bundles": sorted(r["bundle"] for r in ok),
               "failed": [r for r in results if not r["ok"]], "results": results, "folds": folds,
               "final": final, "fold_seed": fold_seed, "seconds": time.perf_counter() - t0,
               **({"note": NO_HONEST_SCORE} if final else {})}
    return write_summary(root, summary, "bagged retrain")
