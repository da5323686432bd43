"""The ``full-search`` flow: feature search -> HPO over the families -> multi-seed retraining
-> ensemble -> package -> score on the report split -> the submission run in MLflow.

Every stage is a cached task (see tasks.py): a second run with the same inputs
recomputes nothing, a changed input reruns that stage and what follows. The
flow ends by printing the leaderboard, the retrained members, the ensemble
comparison, the score as a fraction of the oracle, the zip path, how to open
the MLflow UI on the leaderboard, and where the time went.
"""

from __future__ import annotations

import shlex
import time

from prefect import flow

from . import tasks
from .profiles import resolve
from .stages import Run, say, score_line, start, step_ensemble, step_feature_search, step_hpo, step_package, \
    step_retrain, step_score

UI = "http://127.0.0.1:5000"


@flow(name="full-search")
def full_search(data_dir: str | None = None, profile: str = "demo", run_dir: str | None = None,
                families: str | None = None, num_samples: int | None = None, max_epochs: int | None = None,
                hpo_budget_s: float | None = None, max_train_seqs: int | None = None,
                feature_samples: int | None = None, feature_budget_s: float | None = None,
                top_k: int | None = None, seeds: int | None = None, retrain_epochs: int | None = None,
                budget_minutes: float | None = None, safety: float | None = None, resources: str | None = None,
                ray_address: str | None = None, tracking_uri: str | None = None, feature_search: bool = True,
                score: bool = True, seed: int = 0, folds: int | None = None,
                time_budget: str | None = None, precision: str | None = None,
                stagnation: float | None = None) -> dict:
    """The whole modelling loop. None keeps the profile's value (profiles.py).

    ``time_budget`` ("5m", "2h", seconds) shares one wall-clock budget out over the stages (budget.py).
    """
    s = resolve(profile, data_dir=data_dir, run_dir=run_dir, families=families, resources=resources,
                ray_address=ray_address, tracking_uri=tracking_uri, feature_search=feature_search, score=score,
                seed=seed, num_samples=num_samples, max_epochs=max_epochs, hpo_budget_s=hpo_budget_s,
                max_train_seqs=max_train_seqs, feature_samples=feature_samples, feature_budget_s=feature_budget_s,
                top_k=top_k, seeds=seeds, retrain_epochs=retrain_epochs, budget_minutes=budget_minutes,
                safety=safety, folds=folds, time_budget=time_budget, precision=precision, stagnation=stagnation)
    say(f"full-search, profile {s.profile}")
    run = start(s)
    fs = step_feature_search(run)
    hpo = step_hpo(run, fs["spec"] if fs else None)
    rt = step_retrain(run, hpo)
    finish_started = time.perf_counter()
    ens = step_ensemble(run, rt["bundles_dir"], s.ensemble)
    pkg = step_package(run, ens, s.ensemble["precision"])
    sc = step_score(run, ens, pkg) if s.score else None
    params = {"profile": s.profile, "data_dir": run.data_dir, "families": ",".join(s.families),
              "sweep": hpo["name"], "retrain": rt["name"], "feature_search": fs["name"] if fs else "off"}
    run.spent("finish", finish_started)
    summary = {"profile": s.profile, "params": params, "hpo": hpo, "ensemble": ens, "package": pkg, "score": sc,
               "time_budget_s": s.time_budget_s}
    sub = run.call(tasks.log_submission, "log-submission", summary=summary, tracking_uri=run.tracking_uri,
                   run_dir=run.run_dir, budget_record=run.plan.record() if run.plan else None)
    out = {**summary, "feature_search": fs, "retrain": rt, "submission_run": sub, "steps": run.steps,
           "flow_seconds": time.perf_counter() - run.started, "tracking_uri": run.tracking_uri,
           "run_dir": run.run_dir, "budget_table": run.plan.table() if run.plan else None}
    say(final_report(out))
    return out


def members_table(rt: dict) -> str:
    lines = [f"{'member':<34}{'tune':>8}{'report':>8}{'oracle%':>9}"]
    for m in sorted(rt["members"], key=lambda m: -(m.get("tune_mean") or -1e9)):
        frac = "-" if m.get("fraction_of_oracle") is None else f"{100 * m['fraction_of_oracle']:.1f}"
        rep = "-" if m.get("report_mean") is None else f"{m['report_mean']:.4f}"
        lines.append(f"{m['name'][:33]:<34}{m['tune_mean']:>8.4f}{rep:>8}{frac:>9}")
    return "\n".join(lines)


def mlflow_lines(out: dict) -> list[str]:
    uri = out["tracking_uri"]
    if uri.startswith("sqlite:"):
        head = [f"open the UI:  mlflow ui --backend-store-uri {shlex.quote(uri)} --host 127.0.0.1", "then"]
        base = UI
    else:
        head, base = [], uri.rstrip("/")
    hpo_m = out["hpo"].get("mlflow") or {}
    links = []
    if hpo_m.get("experiment_id") and hpo_m.get("view_key"):
        links.append(f"  hpo leaderboard:     {base}/#/experiments/{hpo_m['experiment_id']}/runs"
                     f"?viewStateShareKey={hpo_m['view_key']}")
    rt = out["retrain"]
    links.append(f"  retrain leaderboard: {base}/#/experiments/{rt['experiment_id']}/runs"
                 f"?viewStateShareKey={rt['view_key']}")
    links.append(f"  submission run:      {base}/#/experiments/{out['submission_run']['experiment_id']}/runs/"
                 f"{out['submission_run']['run_id']}")
    return head + links


def time_line(out: dict) -> str:
    stage_s = sum(st["stage_s"] for st in out["steps"])
    parts = ", ".join(st["stage"] + (" cached" if st["cached"] else f" {st['stage_s']:.0f} s") for st in out["steps"])
    return (f"flow {out['flow_seconds']:.0f} s: stages {stage_s:.0f} s, orchestration "
            f"{out['flow_seconds'] - stage_s:.0f} s ({parts})")


def final_report(out: dict) -> str:
    """The end of a full-search run, as printed."""
    ens, pkg, rt = out["ensemble"], out["package"], out["retrain"]
    lines = ["", "== leaderboard (HPO: top configs per family, ranked on the tune split) ==", out["hpo"]["table"],
             "", f"== retrained members ({rt['n_bundles']} bundles in {rt['bundles_dir']}) ==", members_table(rt),
             "", "== ensemble comparison (report split, 95% CI; chosen on tune) ==", ens["table"], "",
             "== submission =="]
    if out["score"]:
        lines.append(score_line(out["score"]))
    lines += [f"zip: {pkg['zip']} ({pkg['n_members']} members, {pkg['bytes'] / 1e6:.2f} MB)", "",
              "== MLflow ==", *mlflow_lines(out), "", time_line(out)]
    if out.get("budget_table"):
        lines += ["", "== time budget (planned / allotted when the stage started / spent, m:ss) ==",
                  out["budget_table"]]
    return "\n".join(lines)
