"""Thin flows, one per stage, and the steps ``full-search`` chains.

    feature-search   data -> best_features.json
    hpo              data (+ features) -> sweep leaderboard
    retrain          leaderboard -> pool of bundles (seeds x top configs)
    ensemble         bundles -> ensemble spec -> zip -> score   (the deployment the import event triggers)
    package          ensemble spec -> zip

A flow checks all of its parameters first (``profiles.resolve``): a bad value
fails in one line before any data is generated or any stage starts. A step
calls one task with the result storage of the run folder and reports whether
it ran or came from the cache, with its wall time next to the time the stage
itself reported (their difference is orchestration overhead).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from prefect import flow, get_run_logger

from .. import progress
from . import tasks
from .budget import ADOPT_SHARES, SHARES, Plan
from ..submission.precision import check_precision
from .identity import bundles_identity, data_identity
from .profiles import (Settings, check_data_dir, check_endpoints, check_ensemble, check_run_dir,
                       resolve)


def say(msg: str) -> None:
    """Progress: into the flow run's log (console and Prefect UI) where INFO is shown, else to stdout."""
    try:
        logger = get_run_logger()
    except Exception:            # outside a run context (plain .fn() calls)
        logger = None
    if logger is not None and logger.isEnabledFor(logging.INFO):
        logger.info(msg)
    else:
        progress.say(msg)


@dataclass
class Run:
    """One flow run's resolved inputs and its step log."""

    settings: Settings | None
    run_dir: str
    tracking_uri: str
    data_dir: str | None = None
    data_id: dict | None = None
    steps: list = field(default_factory=list)      # {"stage", "cached", "wall_s", "stage_s"}
    started: float = field(default_factory=time.perf_counter)
    plan: Plan | None = None                       # the wall-clock budget's plan (budget.py), if any

    def budget(self, stage: str) -> dict:
        """Task keywords for ``stage`` under the budget: the run's total and this stage's allotment now."""
        if self.plan is None:
            return {}
        return {"time_budget_s": self.plan.total_s, "time_limit_s": self.plan.allot(stage)}

    def spent(self, stage: str, since: float) -> None:
        if self.plan is not None:
            self.plan.done(stage, time.perf_counter() - since)

    def call(self, t, label: str, **kwargs) -> dict:
        """Run task ``t`` with this run's result storage; raises the task's own error when it fails."""
        t0 = time.perf_counter()
        state = tasks.with_storage(t, self.run_dir)(**kwargs, return_state=True)
        out = state.result()
        cached = state.name == "Cached"
        wall = time.perf_counter() - t0
        stage_s = 0.0 if cached or not isinstance(out, dict) else float(out.get("seconds", wall))
        self.steps.append({"stage": label, "cached": cached, "wall_s": wall, "stage_s": stage_s})
        say(f"[{label}] {'cached (inputs unchanged)' if cached else 'done'} in {wall:.1f} s")
        return out


def start(settings: Settings) -> Run:
    """The run folder, the data (synthetic default generated on first use) and its identity."""
    from .. import tracking as trk
    os.makedirs(settings.run_dir, exist_ok=True)
    os.environ["LOBSWEEP_RUN_DIR"] = settings.run_dir
    run = Run(settings, settings.run_dir, trk.tracking_uri(settings.tracking_uri, settings.run_dir))
    if settings.time_budget_s:
        run.plan = Plan(settings.time_budget_s, dict(ADOPT_SHARES if settings.retrain.get("adopt") else SHARES))
        if not settings.feature_search:
            run.plan.skip("feature-search")
        say(run.plan.header())
    t0 = time.perf_counter()
    run.data_dir = tasks.with_storage(tasks.ensure_data, run.run_dir)(settings.data_dir, settings.default_data_dir())
    run.data_id = data_identity(run.data_dir)
    run.steps.append({"stage": "data", "cached": False, "wall_s": time.perf_counter() - t0,
                      "stage_s": time.perf_counter() - t0})
    say(f"data: {run.data_dir}; run folder: {run.run_dir}; MLflow: {run.tracking_uri}")
    return run


def step_feature_search(run: Run) -> dict | None:
    s = run.settings
    if not s.feature_search:
        say("[feature-search] skipped: the default feature pipeline is used")
        return None
    fs = s.feature_search
    t0, budget = time.perf_counter(), run.budget("feature-search")
    say(f"[feature-search] {fs['num_samples']} candidate pipelines, {fs['max_epochs']} epoch(s) each"
        + _allotted(budget))
    out = run.call(tasks.feature_search, "feature-search", data_dir=run.data_dir, data_id=run.data_id,
                   settings=fs, resources=s.resources, seed=s.seed, run_dir=run.run_dir,
                   tracking_uri=run.tracking_uri, ray_address=s.ray_address, **budget)
    run.spent("feature-search", t0)
    return out


def _allotted(budget: dict) -> str:
    return f"; {budget['time_limit_s']:.0f} s of the time budget" if budget else ""


def step_hpo(run: Run, features_spec: dict | None) -> dict:
    s = run.settings
    t0, budget = time.perf_counter(), run.budget("hpo")
    each = "in one joint study" if s.hpo.get("joint") else "each"
    say(f"[hpo] {len(s.families)} families ({', '.join(s.families)}), up to {s.hpo['num_samples']} trials {each}, "
        f"up to {s.hpo['max_epochs']} epochs"
        + (f", a cap of {s.hpo['time_budget_s']} s" if s.hpo["time_budget_s"] else "") + _allotted(budget))
    out = run.call(tasks.hpo, "hpo", data_dir=run.data_dir, data_id=run.data_id, families=list(s.families),
                   features_spec=features_spec, settings=s.hpo, resources=s.resources, seed=s.seed,
                   run_dir=run.run_dir, tracking_uri=run.tracking_uri, ray_address=s.ray_address, **budget)
    run.spent("hpo", t0)
    return out


def step_retrain(run: Run, hpo: dict) -> dict:
    s = run.settings
    t0, budget = time.perf_counter(), run.budget("retrain")
    if s.retrain.get("adopt"):
        fill = "as many as fit, " if budget else ""
        say(f"[retrain] every family's top {s.retrain['top_k']} trials adopted; seeds of the best "
            f"{s.retrain['top_k']} configs and the floor ({fill}up to {s.retrain['seeds']} each)" + _allotted(budget))
    else:
        say(f"[retrain] top {s.retrain['top_k']} config(s) per family x {s.retrain['seeds']} seeds"
            + _allotted(budget))
    out = run.call(tasks.retrain, "retrain", leaderboard=hpo["leaderboard"], leaderboard_digest=hpo["digest"],
                   data_dir=run.data_dir, data_id=run.data_id, settings=s.retrain, resources=s.resources,
                   run_dir=run.run_dir, tracking_uri=run.tracking_uri, ray_address=s.ray_address, **budget)
    run.spent("retrain", t0)
    for f in out["failed"]:
        say(f"[retrain] failed and skipped: {f}")
    return out


def step_ensemble(run: Run, checkpoints: str, settings: dict) -> dict:
    bundles_id = bundles_identity(checkpoints)
    say(f"[ensemble] {len(bundles_id)} bundles under {checkpoints}")
    return run.call(tasks.ensemble, "ensemble", checkpoints=os.path.abspath(checkpoints), bundles_id=bundles_id,
                    data_dir=run.data_dir, data_id=run.data_id, settings=settings, run_dir=run.run_dir,
                    tracking_uri=run.tracking_uri)


def step_package(run: Run, ens: dict, precision: str = "float32") -> dict:
    """The zip of ``ens``; a compact ``precision`` passes the score gate on the run's dataset."""
    compact = {} if precision == "float32" else {"precision": precision,
                                                 "data_dir": run.data_dir or ens.get("data_dir")}
    return run.call(tasks.package, "package", spec_path=ens["spec_path"], spec_digest=ens["digest"],
                    run_dir=run.run_dir, **compact)


def step_score(run: Run, ens: dict, pkg: dict) -> dict:
    data_dir = run.data_dir or ens["data_dir"]
    say("[score] scoring the zip step by step on the report split")
    return run.call(tasks.score, "score", zip_path=pkg["zip"], zip_digest=pkg["digest"], data_dir=data_dir,
                    data_id=data_identity(data_dir), split=ens["split"])


def _features_file(path: str | None) -> dict | None:
    import json
    from ..errors import UserError
    from ..features import FeaturePipeline
    if path is None:
        return None
    try:
        with open(path) as fh:
            spec = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"features {path}: cannot read a JSON spec ({exc})") from None
    spec = spec["spec"] if isinstance(spec, dict) and isinstance(spec.get("spec"), dict) else spec
    FeaturePipeline.from_spec(spec)
    return spec


@flow(name="feature-search")
def feature_search_flow(data_dir: str | None = None, profile: str = "demo", run_dir: str | None = None,
                        feature_samples: int | None = None, feature_budget_s: float | None = None,
                        resources: str | None = None, ray_address: str | None = None,
                        tracking_uri: str | None = None, seed: int = 0) -> dict:
    s = resolve(profile, data_dir=data_dir, run_dir=run_dir, resources=resources, ray_address=ray_address,
                tracking_uri=tracking_uri, seed=seed, feature_samples=feature_samples,
                feature_budget_s=feature_budget_s)
    return step_feature_search(start(s))


@flow(name="hpo")
def hpo_flow(data_dir: str | None = None, profile: str = "demo", run_dir: str | None = None,
             families: str | None = None, features: str | None = None, num_samples: int | None = None,
             max_epochs: int | None = None, hpo_budget_s: float | None = None, max_train_seqs: int | None = None,
             resources: str | None = None, ray_address: str | None = None, tracking_uri: str | None = None,
             seed: int = 0) -> dict:
    s = resolve(profile, data_dir=data_dir, run_dir=run_dir, families=families, resources=resources,
                ray_address=ray_address, tracking_uri=tracking_uri, seed=seed, num_samples=num_samples,
                max_epochs=max_epochs, hpo_budget_s=hpo_budget_s, max_train_seqs=max_train_seqs)
    spec = _features_file(features)
    out = step_hpo(start(s), spec)
    say(out["table"])
    return out


@flow(name="retrain")
def retrain_flow(leaderboard: str, data_dir: str | None = None, profile: str = "demo", run_dir: str | None = None,
                 top_k: int | None = None, seeds: int | None = None, retrain_epochs: int | None = None,
                 resources: str | None = None, ray_address: str | None = None,
                 tracking_uri: str | None = None) -> dict:
    from ..tuning.leaderboard import load_leaderboard, sweep_dir
    from .identity import file_digest
    s = resolve(profile, data_dir=data_dir, run_dir=run_dir, resources=resources, ray_address=ray_address,
                tracking_uri=tracking_uri, top_k=top_k, seeds=seeds, retrain_epochs=retrain_epochs)
    load_leaderboard(leaderboard, run_dir=s.run_dir)                 # file, sweep folder or sweep name
    path = leaderboard
    if not os.path.exists(path) and os.sep not in path:
        path = sweep_dir(s.run_dir, path)
    if os.path.isdir(path):
        path = os.path.join(path, "leaderboard.json")
    return step_retrain(start(s), {"leaderboard": os.path.abspath(path), "digest": file_digest(path)})


@flow(name="ensemble")
def ensemble_flow(checkpoints: str, data_dir: str | None = None, run_dir: str | None = None,
                  budget_minutes: float = 60.0, safety: float = 2.0, tracking_uri: str | None = None,
                  score: bool = True, precision: str = "float32") -> dict:
    """Ensemble-only rerun: the bundles under ``checkpoints`` -> spec -> zip (-> report-split score)."""
    from .. import tracking as trk
    check_ensemble(checkpoints, budget_minutes, safety, precision)
    data_dir = check_data_dir(data_dir)
    check_endpoints(None, tracking_uri)
    rd = check_run_dir(run_dir)
    os.makedirs(rd, exist_ok=True)
    run = Run(None, rd, trk.tracking_uri(tracking_uri, rd), data_dir=data_dir,
              data_id=data_identity(data_dir) if data_dir else None)
    ens = step_ensemble(run, checkpoints, {"budget_minutes": budget_minutes, "safety": safety,
                                          "precision": precision})
    say(ens["table"])
    pkg = step_package(run, ens, precision)
    say(f"zip: {pkg['zip']} ({pkg['n_members']} members, {pkg['bytes'] / 1e6:.2f} MB)")
    out = {"ensemble": ens, "package": pkg}
    if score:
        out["score"] = step_score(run, ens, pkg)
        say(score_line(out["score"]))
    return out


@flow(name="package")
def package_flow(spec_path: str, run_dir: str | None = None, precision: str = "float32",
                 data_dir: str | None = None) -> dict:
    from ..errors import UserError
    from .identity import file_digest
    if not os.path.isfile(spec_path):
        raise UserError(f"spec_path {spec_path}: no such ensemble spec file")
    rd = check_run_dir(run_dir)
    os.makedirs(rd, exist_ok=True)
    check_precision(precision, "parameter precision")
    run = Run(None, rd, "", data_dir=check_data_dir(data_dir))
    return step_package(run, {"spec_path": os.path.abspath(spec_path), "digest": file_digest(spec_path)}, precision)


def score_line(s: dict) -> str:
    line = (f"report split: weighted pearson {s['weighted_pearson']:.4f} (t0 {s['t0']:.4f}, t1 {s['t1']:.4f}), "
            f"{s['ms_per_row']:.3f} ms/row, projected {s['projected_minutes_1500_seq']:.1f} min for 1500 sequences")
    if s.get("oracle_fraction") is not None:
        line += f"; {100 * s['oracle_fraction']:.1f}% of the oracle"
    return line
