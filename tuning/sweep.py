"""The hyperparameter sweep: every family's space, ASHA + TPE, one folder, one MLflow parent run.

Layout of ``<run_dir>/sweeps/<name>/``::

    sweep.json          settings, MLflow ids, per-family progress (resume reads it)
    cache/              the prepared feature arrays all trials open
    ray/<family>/       Ray Tune's experiment (storage_path): trials, checkpoints, logs
    families/<f>.json   trial records of a family whose experiment has ended
    bundles/<trial_id>/ the best model of every *completed* trial (pruned ones get none)
    leaderboard.json    top-K per family (leaderboard.py), read by the retrain stage

Families run one after another, each a Tune experiment with its own space and
``num_samples`` trials; with ``joint=True`` one experiment searches the family
itself as a categorical dimension (``num_samples`` trials in all). A time
budget is shared out as it goes: each family gets an equal part of what is
left, so time a family did not use passes to the next. Resume continues the
family that was running when the driver died and skips finished ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time

from ..errors import UserError
from .leaderboard import sweep_dir

log = logging.getLogger("lobsweep.tuning")
ALL = "all"


def resolve_families(families) -> list[str]:
    """``"gru,lstm"`` / a list / ``"all"`` -> checked family names (UserError for unknown ones)."""
    from ..models import get_config_class, list_models
    if isinstance(families, str):
        families = [f.strip() for f in families.split(",") if f.strip()]
    families = list(families or [])
    if families == [ALL]:
        families = list_models()
    if not families:
        raise UserError("no model family given (--families gru,lstm,... or all)")
    for f in families:
        get_config_class(f)
    if len(set(families)) != len(families):
        raise UserError(f"a family is listed twice in {','.join(families)}")
    return families


def _check_data(data_dir) -> None:
    from ..data.loader import data_paths
    if data_dir is None:
        raise UserError("--data DIR is required (a folder with train.parquet and valid.parquet)")
    for role in ("train", "valid"):
        if not os.path.exists(data_paths(data_dir)[role]):
            raise UserError(f"{data_dir}: no {role}.parquet (--data DIR must hold train.parquet and valid.parquet)")


def check_settings(s: dict) -> None:
    def need(ok, msg):
        if not ok:
            raise UserError(msg)
    need(int(s["num_samples"]) >= 1, f"--num-samples must be >= 1, got {s['num_samples']}")
    need(int(s["max_epochs"]) >= 1, f"--max-epochs must be >= 1, got {s['max_epochs']}")
    need(1 <= int(s["grace_period"]) <= int(s["max_epochs"]),
         f"--grace-period must be in [1, max epochs = {s['max_epochs']}], got {s['grace_period']}")
    need(float(s["reduction_factor"]) > 1, f"--reduction-factor must be > 1, got {s['reduction_factor']}")
    need(s["time_budget_s"] is None or float(s["time_budget_s"]) > 0,
         f"--time-budget must be > 0 seconds, got {s['time_budget_s']}")
    need(s["max_concurrent"] is None or int(s["max_concurrent"]) >= 1,
         f"--max-concurrent must be >= 1, got {s['max_concurrent']}")
    need(int(s["top_k"]) >= 1, f"--top-k must be >= 1, got {s['top_k']}")
    need(s.get("max_train_seqs") is None or int(s["max_train_seqs"]) >= 1,
         f"--max-train-seqs must be >= 1, got {s.get('max_train_seqs')}")
    need(0 <= float(s.get("stagnation") or 0) < 1,
         f"stagnation must be a fraction in [0, 1) (0 = off), got {s.get('stagnation')}")
    need(s["scheduler"] in ("asha", "fifo") and s["searcher"] in ("tpe", "random"),
         "scheduler must be asha or fifo and searcher tpe or random")


def run_sweep(data_dir, families, *, name=None, num_samples=8, max_epochs=8, grace_period=1, reduction_factor=3,
              time_budget_s=None, resources=None, max_concurrent=None, features_spec=None, max_train_seqs=None,
              ray_address=None, tracking_uri=None, resume=False, run_dir=None, seed=0, top_k=3, joint=False,
              scheduler="asha", searcher="tpe", spaces=None, train_fixed=None, points_to_evaluate=None,
              callbacks=None, track=True, verbose=0, local_cpus=None, local_gpus=None, recipes=True,
              extend=None, set_space=None, stagnation=0.0) -> dict:
    """Run, resume or extend a sweep; returns a summary with the leaderboard path.

    ``spaces`` (``{family: {"model": {...}, "train": {...}}}``) replaces the
    default spaces; ``points_to_evaluate`` lists configs to try first (keys as
    in the sweep space: ``"model.hidden"``, ``"train.lr"``). With ``recipes``
    each family's named recipes (search_spaces/recipes.py) are its first
    trials. On resume the stored settings are used and only ``ray_address`` /
    ``resources`` apply. ``extend=NAME`` continues a finished sweep with
    ``num_samples`` more trials per family, its space narrowed by
    ``set_space`` (``["model.layers=[3,4]", ...]``; see sweep_extend.py).
    With a time budget and ``stagnation`` (a fraction, stagnation.py) the sweep's own
    experiments stop starting trials once their best has stalled, and hand the time on.
    """
    from ..tracking import run_dir as _run_dir
    from .ray_setup import parse_resources
    from .sweep_extend import extension
    run_dir = _run_dir(run_dir)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(name)):
        raise UserError(f"sweep name must be letters, digits, '.', '_' or '-', got {name!r}")
    if extend:
        meta, meta_path = extension(run_dir, str(extend), num_samples, set_space, time_budget_s)
        name = meta["name"]
        if resources is not None:
            meta["resources"] = parse_resources(resources)
    elif resume:
        if not name:
            raise UserError("resume needs the sweep's name (--resume NAME)")
        meta_path = os.path.join(sweep_dir(run_dir, name), "sweep.json")
        if not os.path.exists(meta_path):
            raise UserError(f"no sweep named {name!r} under {run_dir}/sweeps (nothing to resume)")
        meta = json.load(open(meta_path))
        if resources is not None:
            meta["resources"] = parse_resources(resources)
    else:
        name = name or time.strftime("sweep-%Y%m%d-%H%M%S")
        meta_path = os.path.join(sweep_dir(run_dir, name), "sweep.json")
        if os.path.exists(meta_path):
            raise UserError(f"sweep {name!r} already exists; resume it with --resume {name} or pick another --name")
        _check_data(data_dir)
        meta = {"name": name, "data_dir": os.path.abspath(data_dir), "families": resolve_families(families),
                "num_samples": num_samples, "max_epochs": max_epochs, "grace_period": grace_period,
                "reduction_factor": reduction_factor, "time_budget_s": time_budget_s,
                "resources": parse_resources(resources), "max_concurrent": max_concurrent,
                "features_spec": features_spec, "max_train_seqs": max_train_seqs, "seed": seed, "top_k": top_k,
                "joint": bool(joint), "scheduler": scheduler, "searcher": searcher, "spaces": spaces or {},
                "train_fixed": train_fixed or {}, "points_to_evaluate": points_to_evaluate,
                "tracking_uri": tracking_uri, "track": bool(track), "recipes": bool(recipes),
                "stagnation": float(stagnation or 0.0), "feature_dim": True}
        check_settings(meta)
    return execute(meta, meta_path, run_dir, ray_address=ray_address, callbacks=callbacks, verbose=verbose,
                   local_cpus=local_cpus, local_gpus=local_gpus)


def save_meta(path: str, meta: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1, default=str)
    os.replace(tmp, path)


def family_budget(total: float | None, started: float, remaining: int) -> float | None:
    """An equal share of the time left: what one family did not use passes to the next."""
    if total is None:
        return None
    return max((float(total) - (time.time() - started)) / max(remaining, 1), 1.0)


def feature_sets(meta: dict) -> dict | None:
    """With recipes and searched features, the features are a dimension too: the searched ones or
    the plain inputs (z-normalised, as ``lobsweep train`` uses them). The plain default recipe
    trains on the plain ones, so the floor is the default model itself, and the searcher can turn
    to them wherever the searched ones learn faster but reach less. None otherwise."""
    from ..search_spaces import PLAIN, SEARCHED
    if not (meta.get("recipes") and meta.get("features_spec") and meta.get("feature_dim")):
        return None                    # (a sweep created before the dimension resumes as it began)
    return {SEARCHED: meta["features_spec"], PLAIN: {}}


def coverage_of(meta: dict, fam: str | None, budget: float | None, slots: int, num_samples: int,
                cut_dir: str) -> dict | None:
    """Every family's recipe trial in a joint study with recipes under a budget (recipe_points.py).

    The first round is one recipe per family, first in the queue. With two slots or more the
    first of them (the plain default, the kept floor) keeps a slot and trains as a recipe needs;
    the others rotate through the other slots (``rounds`` in that order, ``round_slots`` of them),
    each ending by an equal share of the time left when it starts (``trial.trial_deadline``). None
    for a per-family experiment, without a budget, or when the study samples fewer trials than that.
    """
    from .recipe_points import first_per_family
    points = [{k: v for k, v in p.items() if k != "recipe"} for p in first_per_family(meta.get("recipe_points") or [])]
    if fam is not None or budget is None or len(points) < 2 or num_samples < len(points):
        return None
    exempt = points[0] if slots >= 2 else None
    rounds = points[1:] if exempt else points
    free = max(1, slots - (1 if exempt else 0))
    return {"families": [p["family"] for p in points], "cut_dir": cut_dir, "exempt": exempt, "rounds": rounds,
            "round_slots": free, "share_s": float(budget) * free / len(rounds)}


def execute(meta: dict, meta_path: str, run_dir: str, *, ray_address=None, callbacks=None, verbose=0,
            local_cpus=None, local_gpus=None) -> dict:
    from ..progress import Stage
    from ..search_spaces import sweep_space
    from ..search_spaces.adapter import joint_define_by_run
    from ..training.prepare import prepare
    from .experiment import ExperimentSettings, reconcile_runs, trial_records
    from .leaderboard import FILE, build_leaderboard, finish_tracking, format_leaderboard, start_tracking, write_leaderboard
    from .progress import TuneProgress
    from .ray_setup import check_fits, default_concurrency, ray_session
    from .recipe_points import first_points, mark_recipes, recipe_values, with_recipes
    from .stagnation import read_events
    from .sweep_extend import experiments, extension_search
    from ..search_spaces import FEATURES_KEY, PLAIN
    from .trial import ModelTrialBuilder, TrialContext
    sdir = os.path.dirname(meta_path)
    dirs = {k: os.path.join(sdir, k) for k in ("cache", "bundles", "families", "ray")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    prep = prepare(meta["data_dir"], meta["features_spec"], max_train_seqs=meta["max_train_seqs"],
                   cache_dir=dirs["cache"])
    spaces = {f: sweep_space(f, **meta["spaces"].get(f, {})) for f in meta["families"]}
    sets = feature_sets(meta)
    if sets:
        prepare(meta["data_dir"], sets[PLAIN], max_train_seqs=meta["max_train_seqs"], cache_dir=dirs["cache"])
        for space in spaces.values():
            space[FEATURES_KEY] = {"type": "choice", "values": list(sets)}
    if meta.get("recipes"):
        spaces = with_recipes(meta, spaces)
    if meta["track"]:
        start_tracking(meta, run_dir)
    save_meta(meta_path, meta)
    builder = ModelTrialBuilder(data_dir=meta["data_dir"], max_epochs=int(meta["max_epochs"]),
                                features_spec=meta["features_spec"], max_train_seqs=meta["max_train_seqs"],
                                cache_dir=dirs["cache"], seed=int(meta["seed"]), train_fixed=meta["train_fixed"],
                                feature_sets=sets)
    exps = experiments(meta)
    res = meta["resources"]
    ctx = TrialContext(sweep=meta["name"], bundles_dir=dirs["bundles"], threads=max(1, math.ceil(res["cpu"])),
                       tracking_uri=meta.get("tracking_uri") if meta["track"] else None,
                       experiment_id=meta.get("experiment_id"), parent_run_id=meta.get("parent_run_id"))
    started, records, ok, short, stalled = time.time(), [], False, False, {}
    stage = Stage("hpo", total=sum(int(e["num_samples"]) for e in exps), budget_s=meta["time_budget_s"])
    cut_dir = os.path.join(dirs["families"], "cut")         # trials cut so that every family gets one
    callbacks = [*(callbacks or []), TuneProgress(stage, cut_dir=cut_dir)]
    log.info("sweep %s: %d fit / %d tune / %d report sequences, %d features", meta["name"], prep.info["n_fit"],
             prep.info["n_tune"], prep.info["n_report"], prep.info["n_features"])
    try:
        with ray_session(ray_address, num_cpus=local_cpus, num_gpus=local_gpus, log_dir=sdir):
            check_fits(res)
            conc = int(meta["max_concurrent"] or default_concurrency(res))
            for i, exp in enumerate(exps):
                group, fam = exp["name"], exp["family"]
                done_file = os.path.join(dirs["families"], f"{group}.json")
                stall_file = os.path.join(dirs["families"], f"{group}.stagnation.json")
                if os.path.exists(done_file):
                    loaded = json.load(open(done_file))
                    records += loaded
                    stage.add("done", len(loaded))
                    if ev := read_events(stall_file):
                        stalled[group] = ev
                    continue
                ext = exp["extension"]
                if ext is None:              # the sweep's own experiments share its time budget
                    same = [e for e in exps if e["extension"] is None]
                    budget = family_budget(meta["time_budget_s"], started, len(same) - i)
                    space = spaces[fam] if fam else joint_define_by_run(spaces)
                    points, rewards = first_points(meta, fam), None
                    keep = recipe_values(meta, fam)
                    coverage = coverage_of(meta, fam, budget, conc, int(exp["num_samples"]), cut_dir)
                else:                        # an extension: its own budget, warm-started searcher
                    budget = ext.get("time_budget_s")
                    space, points, rewards = extension_search(meta, exp, spaces, records, ctx.fail_score)
                    keep = coverage = None
                settings = ExperimentSettings(
                    num_samples=exp["num_samples"], max_t=int(meta["max_epochs"]),
                    grace_period=int(meta["grace_period"]), reduction_factor=float(meta["reduction_factor"]),
                    scheduler=meta["scheduler"], searcher=meta["searcher"], max_concurrent=conc, resources=res,
                    time_budget_s=budget, seed=int(meta["seed"]) + i, points_to_evaluate=points,
                    evaluated_rewards=rewards, keep_points=keep, coverage=coverage, verbose=verbose,
                    callbacks=list(callbacks),
                    stagnation=float(meta.get("stagnation") or 0.0) if ext is None else 0.0,
                    stagnation_file=stall_file)
                exp_ctx = ctx if budget is None else dataclasses.replace(ctx, deadline=time.time() + budget)
                if coverage:
                    exp_ctx = dataclasses.replace(exp_ctx, cut_dir=cut_dir, rounds=tuple(coverage["rounds"]),
                                                  round_slots=coverage["round_slots"])
                results = run_experiment(builder, space, exp_ctx, settings, storage_path=dirs["ray"], name=group,
                                         constants={"family": fam} if fam else {},
                                         resume=os.path.isdir(os.path.join(dirs["ray"], group)))
                recs = trial_records(results, bundles_dir=dirs["bundles"])
                for r in recs:
                    r["family"] = r["config"].get("family", fam)
                    r["experiment"] = group
                if ext is None:
                    mark_recipes(recs, meta)
                if ev := read_events(stall_file):            # ended on purpose, not by the budget
                    stalled[group] = ev
                else:
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
            "records": records, "seconds": elapsed, "budget_exhausted": bool(budget_hit), "stagnated": stalled,
            "mlflow": {k: meta.get(k) for k in ("tracking_uri", "experiment_id", "parent_run_id", "view_key")},
            "table": format_leaderboard(board)}


def run_experiment(builder, space, ctx, s, *, storage_path: str, name: str,
                   constants: dict | None = None, resume: bool = False):
    """Run (or resume) one Tune experiment at ``storage_path/name``; returns its ResultGrid.

    ``builder`` makes each trial's run (trial.py has the protocol); ``space`` is plain data
    ``{name: dim}`` or an Optuna define-by-run function; ``constants`` are fixed config entries.
    """
    from ray import tune
    from .experiment import SCHEDULERS, SEARCHERS, make_scheduler, make_searcher, trial_dirname
    from .ray_setup import tune_resources
    from .trial import SweepTrainable
    if s.scheduler not in SCHEDULERS or s.searcher not in SEARCHERS:
        raise ValueError(f"scheduler must be in {SCHEDULERS} and searcher in {SEARCHERS}")
    trainable = tune.with_resources(tune.with_parameters(SweepTrainable, builder=builder, ctx=ctx),
                                    tune_resources(s.resources))
    path = os.path.join(storage_path, name)
    if resume and tune.Tuner.can_restore(path):
        log.info("resuming the Tune experiment at %s", path)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        return tuner.fit()
    run_config = tune.RunConfig(
        name=name, storage_path=storage_path, verbose=s.verbose, log_to_file=True, callbacks=list(s.callbacks),
        sync_config=tune.SyncConfig(sync_artifacts=True),        # trial stdout/stderr land beside its results
        stop={"training_iteration": int(s.max_t)},
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=1, checkpoint_at_end=True),
        failure_config=tune.FailureConfig(max_failures=int(s.max_failures)))
    from ray.tune.search import ConcurrencyLimiter
    searcher = make_searcher(space, s)
    limited = isinstance(searcher, ConcurrencyLimiter)       # StagnationStop limits concurrency itself
    tune_config = tune.TuneConfig(
        metric=s.metric, mode=s.mode, search_alg=searcher, scheduler=make_scheduler(s),
        num_samples=int(s.num_samples), max_concurrent_trials=None if limited else int(s.max_concurrent),
        time_budget_s=s.time_budget_s, reuse_actors=s.reuse_actors, trial_dirname_creator=trial_dirname)
    tuner = tune.Tuner(trainable, param_space=dict(constants or {}), tune_config=tune_config, run_config=run_config)
    return tuner.fit()
