"""Coarse Prefect tasks: one library stage each, paths and small dicts in and out.

Every stage task is cached on its inputs, its own source and the library's
code (``INPUTS + TASK_SOURCE + LibraryCode``, ``ray_address`` left out: where
it runs does not change what it makes) with persisted results, so a second run with the same
inputs recomputes nothing. Inputs include the identity of the files the stage
reads (``identity.py``) and the digest of the upstream output, so changed data
reruns that stage and every stage after it. The flows point the result storage
at ``<run_dir>/prefect-results`` (``with_storage``).

Outputs are named by a digest of the inputs, so a stage whose cache entry was
lost finds its own earlier output (the sweep resumes instead of refusing an
existing name). Retries happen only for I/O and trial-execution errors
(``is_transient``); a ``UserError`` is a deterministic verdict and fails at once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CachePolicy

from ..errors import UserError
from .identity import digest, file_digest, library_digest


@dataclass
class LibraryCode(CachePolicy):
    """Cache key part: the package version and a digest of the whole installed library source.

    ``TASK_SOURCE`` sees only the task wrapper; the work happens in the library it calls.
    """

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str:
        return library_digest()


# ``time_limit_s`` is a stage's share of a wall-clock budget, which depends on how long the stages
# before it took, and ``budget_record`` what they spent: the budget itself is an input
# (``time_budget_s``), its allotments and timings are not.
CACHE = (INPUTS - "ray_address" - "time_limit_s" - "budget_record") + TASK_SOURCE + LibraryCode()
# Worth another attempt: lost connections and timeouts (a tracking or Prefect server, a
# cluster), and Ray's own system failures (a lost worker, node or object). Not: a missing
# file or folder, a bad path, a permission error, or an error a trial's code raised, which
# fail the same way every time and must not redo finished work.
TRANSIENT = (ConnectionError, TimeoutError, EOFError)
RAY_TRANSIENT = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
                 "ObjectFetchTimedOutError", "GetTimeoutError", "RaySystemError", "RuntimeEnvSetupError",
                 "OutOfMemoryError", "ActorDiedError", "ActorUnavailableError", "ObjectReconstructionFailedError")


def plain(obj):
    """``obj`` as plain JSON types (numpy scalars become Python numbers).

    Prefect hashes a downstream task's inputs as JSON when it can and as pickle
    bytes otherwise; plain outputs keep every cache key on the JSON path, which
    depends on the values only.
    """
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def results_dir(run_dir: str) -> Path:
    return Path(run_dir) / "prefect-results"


def with_storage(t, run_dir: str):
    """``t`` persisting its results (and cache records) under ``<run_dir>/prefect-results``."""
    return t.with_options(result_storage=results_dir(run_dir))


def is_transient(exc: BaseException) -> bool:
    """True for failures worth another attempt (see ``TRANSIENT``); False for deterministic ones.

    A ``RayTaskError`` wraps the exception a task raised: it is judged by that cause.
    """
    if isinstance(exc, UserError) or type(exc).__name__ == "FeatureSpecError":
        return False
    if isinstance(exc, TRANSIENT):
        return True
    names = {c.__name__ for c in type(exc).__mro__ if c.__module__.split(".")[0] == "ray"}
    if "RayTaskError" in names:
        cause = getattr(exc, "cause", None)
        return cause is not None and cause is not exc and is_transient(cause)
    return bool(names & set(RAY_TRANSIENT))


def retry_if_transient(task_, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure ``is_transient``."""
    try:
        state.result()
    except BaseException as exc:        # the task's own exception, re-raised by the state
        return is_transient(exc)
    return False


def stage_task(name: str, retries: int = 1, cache: bool = True):
    return task(name=name, cache_policy=CACHE if cache else NO_CACHE, persist_result=cache, retries=retries,
                retry_delay_seconds=5, retry_condition_fn=retry_if_transient)


@stage_task("ensure-data", retries=2, cache=False)
def ensure_data(data_dir: str | None, default_dir: str) -> str:
    """``data_dir``, or the synthetic default written to ``default_dir`` on first use."""
    if data_dir:
        return data_dir
    from ..data.synth import ensure_dataset
    return os.path.abspath(ensure_dataset(default_dir))


def capped(settings: dict, time_limit_s: float | None) -> dict:
    """``settings`` with its ``time_budget_s`` cut to ``time_limit_s`` (a share of the run's budget)."""
    if not time_limit_s:
        return settings
    own = settings.get("time_budget_s")
    return {**settings, "time_budget_s": float(time_limit_s) if own is None else min(float(own), float(time_limit_s))}


@stage_task("feature-search")
def feature_search(data_dir: str, data_id: dict, settings: dict, resources: dict, seed: int, run_dir: str,
                   tracking_uri: str, ray_address: str | None = None, time_budget_s: float | None = None,
                   time_limit_s: float | None = None) -> dict:
    """Run the feature search; returns {"name", "path" (best_features.json), "spec", "seconds"}."""
    from ..tuning.feature_search import run_feature_search
    name = "fs-" + digest(data_id, settings, resources, seed, time_budget_s, library_digest())
    settings = capped(settings, time_limit_s)
    path = os.path.join(run_dir, "feature_search", name, "best_features.json")
    t0 = time.perf_counter()
    if not os.path.exists(path):
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)     # an unfinished attempt with these inputs
        run_feature_search(data_dir, name=name, resources=resources, ray_address=ray_address,
                           tracking_uri=tracking_uri, run_dir=run_dir, seed=seed, **settings)
    with open(path) as fh:
        spec = json.load(fh)["spec"]
    return plain({"name": name, "path": path, "spec": spec, "seconds": time.perf_counter() - t0})


@stage_task("hpo")
def hpo(data_dir: str, data_id: dict, families: list, features_spec: dict | None, settings: dict, resources: dict,
        seed: int, run_dir: str, tracking_uri: str, ray_address: str | None = None,
        time_budget_s: float | None = None, time_limit_s: float | None = None) -> dict:
    """One sweep over ``families`` (one Tune experiment per family, a share of the time budget each)."""
    from ..tuning.leaderboard import sweep_dir
    from ..tuning.sweep import run_sweep
    name = "hpo-" + digest(data_id, families, features_spec, settings, resources, seed, time_budget_s, library_digest())
    settings = capped(settings, time_limit_s)
    resume = os.path.exists(os.path.join(sweep_dir(run_dir, name), "sweep.json"))
    t0 = time.perf_counter()
    out = run_sweep(data_dir, list(families), name=name, resources=resources, features_spec=features_spec,
                    ray_address=ray_address, tracking_uri=tracking_uri, resume=resume, run_dir=run_dir, seed=seed,
                    **settings)
    keep = ("name", "sweep_dir", "leaderboard", "counts", "n_trials", "budget_exhausted", "mlflow", "table")
    return plain({**{k: out[k] for k in keep}, "stagnated": out.get("stagnated") or {},
                  "digest": file_digest(out["leaderboard"]),
                  "seconds": time.perf_counter() - t0})


@stage_task("retrain")
def retrain(leaderboard: str, leaderboard_digest: str, data_dir: str, data_id: dict, settings: dict,
            resources: dict, run_dir: str, tracking_uri: str, ray_address: str | None = None,
            time_budget_s: float | None = None, time_limit_s: float | None = None) -> dict:
    """Multi-seed retraining of each family's top configs; the bundles land in one pool folder."""
    from .. import tracking as trk
    from ..tuning.retrain import run_retrain
    from ..tuning.leaderboard import set_leaderboard_view
    from .identity import bundles_identity
    name = "rt-" + digest(leaderboard_digest, data_id, settings, resources, time_budget_s, library_digest())
    t0 = time.perf_counter()
    out = run_retrain(leaderboard, data_dir=data_dir, resources=resources, ray_address=ray_address,
                      tracking_uri=tracking_uri, run_dir=run_dir, name=name, time_budget_s=time_limit_s, **settings)
    exp = trk.ensure_experiment("retrain", tracking_uri, run_dir)
    members = [{"name": r["name"], "family": r["family"], "seed": r["seed"],
                **{k: r["metrics"].get(k) for k in ("tune_mean", "report_mean", "fraction_of_oracle")}}
               for r in out["results"] if r["ok"]]
    return plain({"name": name, "bundles_dir": out["bundles_dir"], "n_bundles": len(out["bundles"]),
                  "failed": [f"{r['name']}: {r['error']}" for r in out["failed"]], "members": members,
                  "bundles_id": bundles_identity(out["bundles_dir"]), "experiment_id": exp,
                  "view_key": set_leaderboard_view(exp, tracking_uri=tracking_uri),
                  "seconds": time.perf_counter() - t0})


@stage_task("ensemble", retries=2)
def ensemble(checkpoints: str, bundles_id: dict, data_dir: str | None, data_id: dict | None, settings: dict,
             run_dir: str, tracking_uri: str) -> dict:
    """Select and weight members from the bundles under ``checkpoints``; writes the ensemble spec."""
    from ..ensemble.stage import format_table, run_ensemble
    out_path = os.path.join(run_dir, "ensemble", digest(checkpoints, bundles_id, data_id, settings), "ensemble.json")
    t0 = time.perf_counter()
    out = run_ensemble(checkpoints=checkpoints, data_dir=data_dir, out=out_path, tracking_uri=tracking_uri,
                       run_dir=run_dir, **settings)
    spec = out["spec"]
    return plain({"spec_path": out["spec_path"], "digest": file_digest(out["spec_path"]),
                  "table": format_table(spec), "method": spec["method"], "report": spec["report"],
                  "fraction_of_oracle": spec["fraction_of_oracle"],
                  "members": [os.path.basename(m) for m in spec["members"]], "candidates": spec["candidates"],
                  "rejected": out["rejected"], "split": spec["data"]["split"], "data_dir": spec["data"]["data_dir"],
                  "mlflow_run_id": out.get("mlflow_run_id"), "champion": out.get("champion"),
                  "seconds": time.perf_counter() - t0})


@stage_task("package", retries=2)
def package(spec_path: str, spec_digest: str, run_dir: str, precision: str = "float32", fallback: bool = False,
            data_dir: str | None = None) -> dict:
    """The submission zip of an ensemble spec, under ``<run_dir>/submissions/<digest>/`` (a float16 or int8
    zip under ``<digest>-<precision>/``), its weights stored in ``precision`` behind the score gate."""
    from ..submission.package import package_from_spec
    folder = spec_digest if precision == "float32" else f"{spec_digest}-{precision}"
    out_zip = os.path.join(run_dir, "submissions", folder, "submission.zip")
    os.makedirs(os.path.dirname(out_zip), exist_ok=True)
    t0 = time.perf_counter()
    out = package_from_spec(spec_path, out_zip, precision=precision, fallback=fallback, data_dir=data_dir)
    return plain({"zip": out["path"], "bytes": out["bytes"], "n_members": out["n_members"],
                  "families": out["families"], "precision": precision, "member_precision": out["member_precision"],
                  "digest": file_digest(out["path"]), "seconds": time.perf_counter() - t0})


def write_report_split(valid_path: str, split: dict, out_path: str) -> str:
    """The report-role sequences of the valid file, rows in file order, as their own parquet file."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from ..data.splits import report_roles
    table = pq.read_table(valid_path)
    ids = pd.unique(table.column("seq_ix").to_numpy())
    report_idx = report_roles(ids, split)
    keep = pc.is_in(table.column("seq_ix"), value_set=pa.array(np.asarray(ids)[report_idx]))
    tmp = out_path + ".tmp"
    pq.write_table(table.filter(keep), tmp)
    os.replace(tmp, out_path)
    return out_path


@stage_task("score", retries=2)
def score(zip_path: str, zip_digest: str, data_dir: str, data_id: dict, split: dict) -> dict:
    """Score the zip step by step on the report split (never used to choose anything)."""
    from ..data.loader import data_paths
    from ..submission.scorer import score_zip
    paths = data_paths(data_dir)
    report = write_report_split(paths["valid"], split, os.path.join(os.path.dirname(zip_path), "report.parquet"))
    oracle = paths["oracle_valid"] if os.path.exists(paths["oracle_valid"]) else None
    from ..progress import Stage
    t0 = time.perf_counter()
    stage = Stage("score", unit="rows", score_label="")
    res = score_zip(zip_path, report, oracle_path=oracle, progress=stage)
    stage.close()
    res.pop("predictions", None)
    res["predict_seconds"] = res.pop("seconds")
    return plain({**res,
                  "report_path": report, "seconds": time.perf_counter() - t0})


@stage_task("log-submission", retries=2)
def log_submission(summary: dict, tracking_uri: str, run_dir: str, budget_record: dict | None = None) -> dict:
    """One run in the MLflow experiment "submission": score metrics, the zip and the leaderboard as artifacts."""
    import mlflow
    from .. import tracking as trk
    exp = trk.ensure_experiment("submission", tracking_uri, run_dir)
    s = summary.get("score") or {}
    metrics = {"zip_bytes": summary["package"]["bytes"], "n_members": summary["package"]["n_members"],
               "ensemble_report_mean": summary["ensemble"]["report"]["mean"]}
    if s:
        metrics.update(report_t0=s["t0"], report_t1=s["t1"], report_mean=s["weighted_pearson"],
                       ms_per_row=s["ms_per_row"], projected_minutes_1500_seq=s["projected_minutes_1500_seq"])
    if s.get("oracle_fraction") is not None:
        metrics["fraction_of_oracle"] = s["oracle_fraction"]
    with mlflow.start_run(experiment_id=exp, run_name=f"submission-{summary['package']['digest'][:8]}",
                          tags={"stage": "submission", "profile": summary.get("profile", ""),
                                "zip_path": summary["package"]["zip"],
                                "ensemble_method": summary["ensemble"]["method"]}) as run:
        mlflow.log_params(trk.flat_params(summary.get("params", {})))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_artifact(summary["package"]["zip"])
        mlflow.log_artifact(summary["ensemble"]["spec_path"])
        mlflow.log_text(summary["ensemble"]["table"], "ensemble_comparison.txt")
        if budget_record:
            mlflow.log_dict(budget_record, "time_budget.json")
            mlflow.log_metric("time_budget_s", float(budget_record["total_s"]))
        if summary.get("hpo"):
            mlflow.log_artifact(summary["hpo"]["leaderboard"])
            mlflow.log_text(summary["hpo"]["table"], "leaderboard.txt")
        return plain({"run_id": run.info.run_id, "experiment_id": exp})
