"""Carry out a sweep whose settings ``sweep.run_sweep`` checked (see sweep.py for the layout).

Order matters here: the data is prepared (and cached for the trials) and the
spaces validated before Ray starts, so a bad folder or space is one line, not
a cluster start-up; the MLflow store, experiment and parent run exist before
any trial logs (trials racing to create them lose data).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time

from ..search_spaces import sweep_space
from ..search_spaces.adapter import joint_define_by_run
from .driver import ExperimentSettings, reconcile_runs, run_experiment, trial_records
from .leaderboard import FILE, build_leaderboard, format_leaderboard, write_leaderboard
from .model_trial import ModelTrialBuilder
from ..progress import Stage
from .progress import TuneProgress
from .ray_setup import check_fits, default_concurrency, ray_session
from .sweep_extend import experiments
from .trainable import TrialContext

log = logging.getLogger("lobsweep.tuning")
EXPERIMENT = "hpo"


def save_meta(path: str, meta: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1, default=str)
    os.replace(tmp, path)


def start_tracking(meta: dict, run_dir: str) -> None:
    """Store, experiment, leaderboard view and the parent run, before any trial starts."""
    from mlflow.tracking import MlflowClient
    from .. import tracking as trk
    from .leaderboard import set_leaderboard_view
    uri = trk.tracking_uri(meta["tracking_uri"], run_dir)
    exp_id = trk.ensure_experiment(EXPERIMENT, uri, run_dir)
    meta.update(tracking_uri=uri, experiment_id=exp_id, view_key=set_leaderboard_view(exp_id, "final_tune_mean", tracking_uri=uri))
    client = MlflowClient(tracking_uri=uri)
    if meta.get("parent_run_id"):
        client.update_run(meta["parent_run_id"], status="RUNNING")
        return
    run = client.create_run(exp_id, run_name=f"sweep-{meta['name']}",
                            tags={"stage": EXPERIMENT, "sweep": meta["name"], "kind": "sweep"})
    meta["parent_run_id"] = run.info.run_id
    keys = ("families", "num_samples", "max_epochs", "grace_period", "reduction_factor", "time_budget_s",
            "resources", "scheduler", "searcher", "joint", "seed", "max_train_seqs", "data_dir")
    params = trk.flat_params({**{k: meta[k] for k in keys}, "features": meta["features_spec"] or "default"})
    for k, v in params.items():
        client.log_param(meta["parent_run_id"], k, v)


def finish_tracking(meta: dict, board: dict, board_path: str, ok: bool) -> None:
    """Leaderboard and winners onto the runs: each family's best bundle + curve on its child run,
    the overall winner's bundle on the parent run."""
    from mlflow.tracking import MlflowClient
    from .. import tracking as trk
    client = MlflowClient(tracking_uri=meta["tracking_uri"])
    parent = meta["parent_run_id"]
    client.log_artifact(parent, board_path)
    for fam, entries in board["families"].items():
        best = entries[0]
        client.log_metric(parent, f"best_tune_{fam}", float(best["tune_score"]))
        if best["report_score"] is not None:
            client.log_metric(parent, f"best_report_{fam}", float(best["report_score"]))
        if best.get("mlflow_run_id"):
            client.log_artifacts(best["mlflow_run_id"], best["bundle"], "bundle")
            spec = json.load(open(os.path.join(best["bundle"], "spec.json")))
            fig = trk.curve_figure(spec["history"], f"{fam} {best['trial_id']}")
            client.log_figure(best["mlflow_run_id"], fig, "training_curve.png")
            import matplotlib.pyplot as plt
            plt.close(fig)
    if board["overall"]:
        client.log_artifacts(parent, board["overall"][0]["bundle"], "winning_bundle")
        client.set_tag(parent, "winner", board["overall"][0]["trial_id"])
    client.set_terminated(parent, "FINISHED" if ok else "KILLED")


def family_budget(total: float | None, started: float, remaining: int) -> float | None:
    """An equal share of the time left: what one family did not use passes to the next."""
    if total is None:
        return None
    return max((float(total) - (time.time() - started)) / max(remaining, 1), 1.0)


def _points(points: list | None, family: str | None) -> list | None:
    """Points to evaluate that belong to ``family`` (those without a family go everywhere)."""
    if not points or family is None:
        return points
    out = [{k: v for k, v in p.items() if k != "family"} for p in points if p.get("family", family) == family]
    return out or None


def _with_recipes(meta: dict, spaces: dict) -> dict:
    """Widen each family's space to hold its recipes; their points (first trials) go into meta."""
    from ..search_spaces.recipes import fit_recipes
    points, notes = [], []
    for fam in meta["families"]:
        spaces[fam], pts, lines = fit_recipes(fam, spaces[fam], joint=bool(meta["joint"]))
        points += [{"family": fam, **p} if "family" not in p else p for p in pts]
        notes += lines
    if meta["joint"]:          # one study: the plain default, every family's own default, the literature's
        points.sort(key=lambda p: (not str(p["recipe"]).startswith("plain-"),
                                   not str(p["recipe"]).startswith("default-")))
    meta["recipe_points"] = points
    meta["recipe_notes"] = notes
    for line in notes:
        log.info("sweep %s: %s", meta["name"], line)
    return spaces


def _first_points(meta: dict, fam: str | None) -> list | None:
    """Recipes first, then the caller's points; per family (without the family key) unless joint."""
    recipe = [{k: v for k, v in p.items() if k != "recipe"} for p in meta.get("recipe_points") or []]
    if fam is not None:
        recipe = _points(recipe, fam) or []
    return (recipe + (_points(meta["points_to_evaluate"], fam) or [])) or None


def _recipe_values(meta: dict, fam: str | None) -> list[dict]:
    """The recipe points ASHA never stops, as values a trial config holds.

    Per family: all of them. A joint study is where the budget must flow to what works, so
    there only the first (``plain-gru`` when the GRU is searched: the plain model the sweep
    must beat) is kept; the other recipes are first trials that ASHA may stop like any other.
    """
    pts = [{k: v for k, v in p.items() if k != "recipe"} for p in meta.get("recipe_points") or []]
    return pts[:1] if fam is None else [{k: v for k, v in p.items() if k != "family"}
                                        for p in pts if p["family"] == fam]


def _mark_recipes(recs: list[dict], meta: dict) -> None:
    """Tag the trial that ran each recipe (its config holds every key of the recipe's point)."""
    from .schedulers import matches
    for p in meta.get("recipe_points") or []:
        want = {k: v for k, v in p.items() if k not in ("recipe", "family")}
        for r in recs:
            if r["family"] == p["family"] and matches(r["config"], want):
                r["recipe"] = p["recipe"]
                break


def _extension_search(meta, exp, spaces, records, fail_score) -> tuple[dict, list | None, list | None]:
    """An extension's space (overrides laid on), and its warm start from the records of its family."""
    from .sweep_extend import apply_overrides, flat_defaults, warm_start
    fam = exp["family"]
    space = apply_overrides(spaces[fam], exp["extension"]["set_space"].get(fam, {}))
    prior = [r for r in records if r.get("family") == fam]
    points, rewards, skipped = warm_start(prior, space, flat_defaults(fam, meta["train_fixed"]), fail_score)
    log.info("sweep %s: %s warm-starts from %d recorded trials (%d outside the narrowed space)",
             meta["name"], exp["name"], len(points), skipped)
    return space, points or None, rewards or None


def execute(meta: dict, meta_path: str, run_dir: str, *, ray_address=None, callbacks=None, verbose=0,
            local_cpus=None, local_gpus=None) -> dict:
    from ..training.prepare import prepare
    sdir = os.path.dirname(meta_path)
    dirs = {k: os.path.join(sdir, k) for k in ("cache", "bundles", "families", "ray")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    prep = prepare(meta["data_dir"], meta["features_spec"], max_train_seqs=meta["max_train_seqs"],
                   cache_dir=dirs["cache"])
    spaces = {f: sweep_space(f, **meta["spaces"].get(f, {})) for f in meta["families"]}
    if meta.get("recipes"):
        spaces = _with_recipes(meta, spaces)
    if meta["track"]:
        start_tracking(meta, run_dir)
    save_meta(meta_path, meta)
    builder = ModelTrialBuilder(data_dir=meta["data_dir"], max_epochs=int(meta["max_epochs"]),
                                features_spec=meta["features_spec"], max_train_seqs=meta["max_train_seqs"],
                                cache_dir=dirs["cache"], seed=int(meta["seed"]), train_fixed=meta["train_fixed"])
    exps = experiments(meta)
    res = meta["resources"]
    ctx = TrialContext(sweep=meta["name"], bundles_dir=dirs["bundles"], threads=max(1, math.ceil(res["cpu"])),
                       tracking_uri=meta.get("tracking_uri") if meta["track"] else None,
                       experiment_id=meta.get("experiment_id"), parent_run_id=meta.get("parent_run_id"))
    started, records, ok, short = time.time(), [], False, False
    stage = Stage("hpo", total=sum(int(e["num_samples"]) for e in exps), budget_s=meta["time_budget_s"])
    callbacks = [*(callbacks or []), TuneProgress(stage)]
    log.info("sweep %s: %d fit / %d tune / %d report sequences, %d features", meta["name"], prep.info["n_fit"],
             prep.info["n_tune"], prep.info["n_report"], prep.info["n_features"])
    try:
        with ray_session(ray_address, num_cpus=local_cpus, num_gpus=local_gpus, log_dir=sdir):
            check_fits(res)
            conc = int(meta["max_concurrent"] or default_concurrency(res))
            for i, exp in enumerate(exps):
                group, fam = exp["name"], exp["family"]
                done_file = os.path.join(dirs["families"], f"{group}.json")
                if os.path.exists(done_file):
                    loaded = json.load(open(done_file))
                    records += loaded
                    stage.add("done", len(loaded))
                    continue
                ext = exp["extension"]
                if ext is None:              # the sweep's own experiments share its time budget
                    same = [e for e in exps if e["extension"] is None]
                    budget = family_budget(meta["time_budget_s"], started, len(same) - i)
                    space = spaces[fam] if fam else joint_define_by_run(spaces)
                    points, rewards = _first_points(meta, fam), None
                    keep = _recipe_values(meta, fam)
                else:                        # an extension: its own budget, warm-started searcher
                    budget = ext.get("time_budget_s")
                    space, points, rewards = _extension_search(meta, exp, spaces, records, ctx.fail_score)
                    keep = None
                settings = ExperimentSettings(
                    num_samples=exp["num_samples"], max_t=int(meta["max_epochs"]),
                    grace_period=int(meta["grace_period"]), reduction_factor=float(meta["reduction_factor"]),
                    scheduler=meta["scheduler"], searcher=meta["searcher"], max_concurrent=conc, resources=res,
                    time_budget_s=budget, seed=int(meta["seed"]) + i, points_to_evaluate=points,
                    evaluated_rewards=rewards, keep_points=keep, verbose=verbose, callbacks=list(callbacks))
                exp_ctx = ctx if budget is None else dataclasses.replace(ctx, deadline=time.time() + budget)
                results = run_experiment(builder, space, exp_ctx, settings, storage_path=dirs["ray"], name=group,
                                         constants={"family": fam} if fam else {},
                                         resume=os.path.isdir(os.path.join(dirs["ray"], group)))
                recs = trial_records(results, bundles_dir=dirs["bundles"])
                for r in recs:
                    r["family"] = r["config"].get("family", fam)
                    r["experiment"] = group
                if ext is None:
                    _mark_recipes(recs, meta)
                short |= len(recs) < exp["num_samples"]
                reconcile_runs(recs, ctx)
                save_meta(done_file, recs)
                records += recs
        ok = True
    finally:
        stage.close()
        board = build_leaderboard(records, meta["name"], int(meta["top_k"]))
        board_path = write_leaderboard(os.path.join(sdir, FILE), board)
        if meta["track"]:
            finish_tracking(meta, board, board_path, ok)
    elapsed = time.time() - started
    budget_hit = meta["time_budget_s"] is not None and (short or elapsed >= float(meta["time_budget_s"]))
    return {"name": meta["name"], "sweep_dir": sdir, "leaderboard": board_path, "counts": board["counts"],
            "best": board["overall"][0] if board["overall"] else None, "n_trials": len(records),
            "records": records, "seconds": elapsed, "budget_exhausted": bool(budget_hit),
            "mlflow": {k: meta.get(k) for k in ("tracking_uri", "experiment_id", "parent_run_id", "view_key")},
            "table": format_leaderboard(board)}
