"""Multi-seed retraining of a sweep's winners, in parallel on Ray.

For each family, the top-K leaderboard entries are retrained with S new seeds
on the full fit data (the sweep may have subsampled), each as a Ray task with
the same per-trial resources as the sweep (fractional GPUs, ``RAY_ADDRESS``).
A retrain that fails is reported and skipped; the others go on.

With ``adopt`` (the budgeted presets) the sweep's best trials are members as
they are: trained on the same fit split, early-stopped on tune, they are
copied into the pool instead of being trained again, and the seeds go to the
best config overall and the floor. The *floor* is the strongest default: the
best recipe trial of the sweep (leaderboard ``floor``). Its config is always
retrained (and adopted), and ``floor.json`` in the pool names its members so
the ensemble stage can never be forced below it on tune.

Output: ``<run_dir>/retrain/<name>/retrain.json`` (bundles, failures, parent
configs), and the bundles in ``<run_dir>/checkpoints/<name>/<family>-<trial>-s<seed>/``,
the member pool that the ensemble stage reads (imported bundles join it too).

MLflow: experiment ``retrain``, one parent run per stage and a child run per
member (seed, parent config, sweep), plus the seed-diversity report on the
parent: the member correlation matrix and the gain from averaging k seeds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import numpy as np

from ..data.metric import score
from ..data.splits import report_roles, row_roles
from ..errors import UserError
from ..progress import Stage, say
from ..training.bundle import load_bundle
from ..training.member import FLOOR_FILE
from .retrain_plan import data_dir_of, plan_jobs, write_summary

log = logging.getLogger("lobsweep.retrain")


def _run_job(job: dict, data_dir: str, out_root: str, prepare_kwargs: dict, tracking: dict | None) -> dict:
    """Train one member; never raises (a failure becomes a record)."""
    import torch
    from ..submission.cost import cost_metrics
    from ..training.member import train_member
    try:
        torch.set_num_threads(max(1, int(job.get("threads", 1))))
        if job.get("deadline"):          # anneal by the stage's deadline, counted from when it really starts
            job["train_config"] = {**job["train_config"], "time_limit_s": max(job["deadline"] - time.time(), 1.0)}
        b = train_member(data_dir, job["family"], os.path.join(out_root, job["name"]),
                         hparams=job["hparams"], train_cfg=job["train_config"], features_spec=job["features"],
                         seed=job["seed"], prepare_kwargs=prepare_kwargs,
                         tracking=tracking and {**tracking, "run_name": job["name"],
                                                "tags": {**tracking.get("tags", {}),
                                                         "parent_config": job["parent_trial"]}},
                         extra_spec={"parent_trial": job["parent_trial"], "sweep": tracking and
                                     tracking.get("tags", {}).get("sweep")}, measure=cost_metrics)
        return {"ok": True, "name": job["name"], "bundle": b.path, "metrics": b.spec["metrics"], **_key(job)}
    except Exception as exc:             # reported and skipped; the other retrains go on
        return {"ok": False, "name": job["name"], "error": f"{type(exc).__name__}: {exc}", **_key(job)}


def finished_member(job: dict, out_root: str) -> dict | None:
    """The result record of ``job`` when an earlier attempt already wrote its bundle, else None.

    Bundles are written atomically, so one that loads is complete; it is reused only when its
    spec names the same family, config, training config and seed as the job (the pool folder is
    named by a digest of the stage's inputs, so a match is the same member).
    """
    path = os.path.join(out_root, job["name"])
    if not os.path.isfile(os.path.join(path, "spec.json")):
        return None
    try:
        spec = load_bundle(path).spec
    except UserError:
        return None
    same = (spec.get("family") == job["family"] and int(spec.get("seed", -1)) == job["seed"]
            and spec.get("parent_trial") == job["parent_trial"]
            and all(spec.get("config", {}).get(k) == v for k, v in job["hparams"].items()))
    if not same:
        return None
    return {"ok": True, "name": job["name"], "bundle": path, "metrics": spec["metrics"], "reused": True,
            **_key(job)}


def adopt_trials(board: dict, top_k: int, out_root: str) -> list[dict]:
    """Every family's top ``top_k`` trials and the floor, copied into the pool as members.

    Only bundles trained on the whole fit split qualify (a sweep that subsampled its training
    sequences trained on less than a member does); the others are left out with a line.
    """
    import shutil
    entries = [e for es in board.get("families", {}).values() for e in es[:top_k]]
    floor = board.get("floor")
    if floor and not any(e["trial_id"] == floor["trial_id"] for e in entries):
        entries.append(floor)
    out = []
    for e in entries:
        name = f"{e['family']}-{e['trial_id']}-trial"
        dst = os.path.join(out_root, name)
        if not os.path.isfile(os.path.join(dst, "spec.json")):
            spec = load_bundle(e["bundle"]).spec
            if spec.get("data", {}).get("max_train_seqs"):
                say(f"[retrain] {name}: not adopted (the sweep trained on a subsample of the fit split)")
                continue
            shutil.rmtree(dst + ".tmp", ignore_errors=True)
            shutil.copytree(e["bundle"], dst + ".tmp")
            os.replace(dst + ".tmp", dst)
        spec = load_bundle(dst).spec
        out.append({"ok": True, "name": name, "bundle": dst, "metrics": spec["metrics"], "adopted": True,
                    "family": e["family"], "parent_trial": e["trial_id"], "seed": int(spec.get("seed", 0))})
    return out


START_FRACTION = 0.5         # a seed starts only while the time left covers half its parent's training
DEADLINE_FRACTION = 0.9      # of a timed stage: the rest is process start-up, data and writing bundles


def seed_order(jobs: list[dict]) -> list[dict]:
    """Seed 0 of every config first (the floor's, then the best configs'), then seed 1, and so on."""
    return sorted(jobs, key=lambda j: (j["seed"] % 100, not j.get("floor"), j["rank"]))


def may_start(job: dict, left_s: float, needed: bool = False, first_wave: bool = False) -> bool:
    """Start ``job`` with ``left_s`` seconds to the stage's deadline? While the time left covers
    ``START_FRACTION`` of what its parent trial trained (a member cut by the deadline has annealed
    by it: the timed cosine, trainer.py); the first wave (``first_wave``) while it covers one of
    the parent's epochs (or the later seeds' rule, when that asks less), so that a short share still
    adds seeds (the ensemble judges them on tune) without a first epoch that would end past the
    deadline. ``needed``: the pool has no member
    yet, so it starts whatever the clock says."""
    if needed:
        return True
    rule = START_FRACTION * float(job.get("train_seconds") or 0.0)
    if first_wave:                     # one epoch, or what a later seed needs when that is less
        rule = min(rule, float(job.get("epoch_seconds") or 0.0))
    return left_s > 0 and left_s >= rule


def write_floor(out_root: str, board: dict, results: list[dict]) -> list[str]:
    """``floor.json`` in the pool: the members (adopted trial and seeds) of the floor's config."""
    floor = board.get("floor")
    names = sorted(r["name"] for r in results if r["ok"] and floor and r["parent_trial"] == floor["trial_id"])
    with open(os.path.join(out_root, FLOOR_FILE + ".tmp"), "w") as fh:
        json.dump({"trial_id": floor and floor["trial_id"], "recipe": floor and floor.get("recipe"),
                   "family": floor and floor["family"], "tune_score": floor and floor["tune_score"],
                   "members": names}, fh, indent=1)
    os.replace(os.path.join(out_root, FLOOR_FILE + ".tmp"), os.path.join(out_root, FLOOR_FILE))
    return names


def _key(job: dict) -> dict:
    return {"family": job["family"], "parent_trial": job["parent_trial"], "seed": job["seed"]}


def run_retrain(sweep: str, *, top_k: int = 2, seeds: int = 2, data_dir: str | None = None,
                resources=None, ray_address: str | None = None, tracking_uri: str | None = None,
                run_dir: str | None = None, name: str | None = None, max_epochs: int | None = None,
                use_mlflow: bool = True, folds: int | None = None, final: bool = False,
                time_budget_s: float | None = None, adopt: bool = False) -> dict:
    """Retrain the sweep's top-K configs per family with ``seeds`` seeds each. Returns the summary.

    Each member early-stops on tune (patience) within its epoch cap. ``time_budget_s`` bounds the
    stage: the members run in waves of as many as fit the cluster at once, and each gets the
    wave's share as its ``time_limit_s`` (no epoch starts that would end past it). It does not
    apply to bagged members (a reduced path: they train one after another, unbounded). With
    ``adopt`` the best trials join as they are (``adopt_trials``) and, under a time budget, the
    stage fills its time with seeds: ``seeds`` is then a cap per config, the seeds start in
    ``seed_order`` as slots free up and while ``may_start`` says they fit, and each anneals by
    the stage's deadline.
    """
    entered = time.time()               # a timed stage's deadline counts from here
    if folds is not None or final:      # k-fold bagged members: tuning/bag_retrain.py
        from .bag_retrain import run_bagged_retrain
        return run_bagged_retrain(sweep, folds=folds or 0, final=final, top_k=top_k, seeds=seeds, data_dir=data_dir,
                                  tracking_uri=tracking_uri, run_dir=run_dir, name=name, max_epochs=max_epochs,
                                  use_mlflow=use_mlflow)
    from .. import tracking as trk
    from ..training.prepare import prepare
    from .ray_setup import parse_resources, ray_session
    from .leaderboard import load_leaderboard

    res = parse_resources(resources)
    board = load_leaderboard(sweep, run_dir=run_dir)
    jobs = plan_jobs(board, top_k, seeds, max_epochs, adopt=adopt)
    data_dir = data_dir or data_dir_of(board)
    name = name or f"{board['sweep']}-retrain"
    root = os.path.join(trk.run_dir(run_dir), "retrain", name)
    out_root = os.path.join(trk.run_dir(run_dir), "checkpoints", name)   # the pool every ensemble reads
    for d in (root, out_root):
        os.makedirs(d, exist_ok=True)
    adopted = adopt_trials(board, top_k, out_root) if adopt else []
    if adopted:
        say(f"[retrain] {len(adopted)} sweep trials adopted as members (trained on the same fit split)")
    reused = [r for r in (finished_member(j, out_root) for j in jobs) if r is not None]
    done_names = {r["name"] for r in reused}
    todo = [j for j in jobs if j["name"] not in done_names]
    if reused:
        say(f"[retrain] {len(reused)} of {len(jobs)} members already in {out_root}: reused, not retrained")
    cache = os.path.join(trk.run_dir(run_dir), "cache")
    prepare_kwargs = {"cache_dir": cache}
    for spec in {json.dumps(j["features"], sort_keys=True) for j in todo}:   # warm the cache before workers
        prepare(data_dir, json.loads(spec), **prepare_kwargs)

    tracking, parent = None, None
    if use_mlflow:
        import mlflow
        exp = trk.ensure_experiment("retrain", tracking_uri, run_dir)
        parent = mlflow.start_run(experiment_id=exp, run_name=name, tags={"stage": "retrain", "sweep": board["sweep"]})
        mlflow.log_params({"top_k": top_k, "seeds": seeds, "sweep": board["sweep"], "jobs": len(jobs)})
        tracking = {"experiment": "retrain", "uri": trk.tracking_uri(tracking_uri, run_dir), "stage": "retrain",
                    "parent_run_id": parent.info.run_id, "tags": {"sweep": board["sweep"]}}
        mlflow.end_run()
    t0 = time.perf_counter()
    results = list(adopted) + list(reused)
    stage = Stage("retrain", unit="members", total=len(jobs) + len(adopted), score_label="best member tune")
    stage.counts.update(adopted=len(adopted), reused=len(reused), trained=0, failed=0)
    for r in results:
        stage.score(r["metrics"].get("tune_mean"))
    if todo:
        with ray_session(ray_address, num_cpus=None, log_dir=root) as ray:
            from .ray_setup import default_concurrency
            slots = default_concurrency(res)
            for j in todo:
                j["threads"] = max(1, int(res["cpu"]))
            rolling = bool(adopt and time_budget_s)
            if rolling:            # seeds start while they fit, each annealing by the stage's deadline
                deadline = entered + DEADLINE_FRACTION * float(time_budget_s)
                todo = [{**j, "deadline": deadline} for j in seed_order(todo)]
            elif time_budget_s:    # every planned member: waves of what fits at once share the time
                waves = math.ceil(len(todo) / slots)
                for j in todo:
                    j["train_config"] = {**j["train_config"],
                                         "time_limit_s": DEADLINE_FRACTION * float(time_budget_s) / waves}
            remote = ray.remote(num_cpus=res["cpu"], num_gpus=res["gpu"], max_retries=1)(_run_job)
            queue, running, started = list(todo), [], 0
            while queue or running:
                if rolling:        # the time left only shrinks: a seed that does not fit now never will
                    left = deadline - time.time()
                    needed, first = not results and started < slots, started < slots
                    fits = [j for k, j in enumerate(queue) if may_start(j, left, needed, first and k < slots - started)]
                    if len(fits) < len(queue):
                        stage.event(f"{len(queue) - len(fits)} seeds left out: {left:.0f} s to the deadline")
                    queue = fits
                while queue and len(running) < slots:
                    running.append(remote.remote(queue.pop(0), data_dir, out_root, prepare_kwargs, tracking))
                    started += 1
                if not running:
                    break
                done, running = ray.wait(running, num_returns=1)
                r = ray.get(done[0])
                results.append(r)
                stage.add("trained" if r["ok"] else "failed")
                if r["ok"]:
                    stage.score(r["metrics"].get("tune_mean"))
                stage.event(f"{r['name']}: " + ("ok" if r["ok"] else f"FAILED ({r['error'][:120]})"))
            stage.total = len(results)
    stage.close()
    ok = [r for r in results if r["ok"]]
    failed = [r for r in results if not r["ok"]]
    floor = write_floor(out_root, board, results)
    summary = {"format": "lobsweep.retrain/1", "name": name, "sweep": board["sweep"], "data_dir": data_dir,
               "floor": {"trial_id": (board.get("floor") or {}).get("trial_id"), "members": floor},
               "bundles_dir": out_root, "bundles": sorted(r["bundle"] for r in ok), "failed": failed,
               "results": sorted(results, key=lambda r: r["name"]), "seconds": time.perf_counter() - t0}
    if ok and use_mlflow:
        _diversity_report(summary, parent.info.run_id)
    return write_summary(root, summary, "retrain")


def seed_averaging_gain(preds: list[np.ndarray], y: np.ndarray) -> list[float]:
    """Mean score of the average of the first k seeds, k = 1..len(preds)."""
    return [score(y, np.mean(preds[:k], axis=0))["mean"] for k in range(1, len(preds) + 1)]


def _diversity_report(summary: dict, parent_run_id: str) -> None:
    """Correlation matrix of members and the k-seed averaging curve, on the report split."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from ..data.loader import load
    bundles = [load_bundle(p) for p in summary["bundles"]]
    split = bundles[0].spec["data"]["split"]
    valid = load(os.path.join(summary["data_dir"], "valid.parquet"))
    _, rep = row_roles(valid.mask, report_roles(valid.seq_ix, split))
    y = valid.Y[valid.mask][rep]
    P = np.stack([b.valid_pred[rep] for b in bundles], axis=1)           # [rows, M, 2]
    names = [b.name for b in bundles]
    with mlflow.start_run(run_id=parent_run_id):
        fig, axes = plt.subplots(1, 2, figsize=(5 + 0.5 * len(names), 4 + 0.25 * len(names)))
        for k, ax in enumerate(axes):
            c = np.atleast_2d(np.corrcoef(P[:, :, k].T))          # one member: a 1x1 matrix
            im = ax.imshow(c, vmin=min(0.0, c.min()), vmax=1.0, cmap="viridis")
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
            ax.set_yticks(range(len(names)), names, fontsize=6)
            ax.set_title(f"t{k} prediction correlation")
            fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        mlflow.log_figure(fig, "member_correlation.png")
        plt.close(fig)
        groups: dict[str, list[int]] = {}
        for i, b in enumerate(bundles):
            groups.setdefault(f"{b.spec['family']}:{b.spec.get('parent_trial')}", []).append(i)
        fig, ax = plt.subplots(figsize=(6, 4))
        curves = {}
        for g, idx in groups.items():
            curve = seed_averaging_gain([P[:, i] for i in idx], y)
            curves[g] = curve
            ax.plot(range(1, len(curve) + 1), curve, marker="o", label=g)
        ax.set_xlabel("seeds averaged (k)"), ax.set_ylabel("report mean score"), ax.legend(fontsize=6)
        ax.set_title("gain from averaging seeds")
        fig.tight_layout()
        mlflow.log_figure(fig, "seed_averaging_gain.png")
        plt.close(fig)
        mlflow.log_dict({"members": names, "seed_averaging": curves}, "seed_diversity.json")
        summary["seed_averaging"] = curves
