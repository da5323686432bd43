"""The feature-search stage: Optuna under Ray Tune ASHA over feature specs, scored by the GRU proxy.

Layout of ``<run_dir>/feature_search/``::

    latest.json                   pointer to the newest finished search's best_features.json
    <name>/best_features.json     {"spec", "proxy_tune_mean", "raw_proxy_tune_mean", "n_features", ...}
    <name>/importance.json        permutation importance of the winner per group (+ importance.png)
    <name>/trials.json            one record per candidate (config, spec, status, scores)
    <name>/ray/tune/              Ray Tune's experiment: trials, checkpoints, logs
    <name>/trials/<trial_id>/     the proxy model of every completed candidate (feature_proxy.py)

The space is ``feature_space.SPACE``; the candidates run through the generic
runner (sweep.run_experiment, and trial.py's SweepTrainable). The raw-features
spec ``{}`` is always scored too, in the driver process, with the same proxy
and the full epoch budget, so the winner is always shown beside it.

MLflow (experiment "feature-search"): one parent run per search, every
candidate a child run (params = its spec flattened, per-epoch ``tune_mean``,
final ``proxy_tune_mean`` and ``n_features``, tag stage=feature-search), the
raw baseline a child run tagged ``role=raw-baseline``; the parent holds both
scores, best_features.json and the importance plot.

Honest evaluation: candidates are ranked on the tune split only. The winner
is the best of many candidates on that split, so its proxy score is an
optimistic estimate; the raw baseline is one candidate and is not.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass

from ..errors import UserError
from .feature_proxy import FeatureTrialBuilder, ProxyRun, ProxySettings, group_importance, spec_params
from .feature_space import RAW_SPEC, SPACE, all_on_config, describe, spec_from_config

log = logging.getLogger("lobsweep.tuning")
EXPERIMENT, STAGE = "feature-search", "feature-search"
BEST_FILE, LATEST_FILE = "best_features.json", "latest.json"
BUDGET_KEYS = {"samples": "num_samples", "epochs": "max_epochs", "seqs": "max_train_seqs", "crop": "crop_len",
               "time": "time_budget_s"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh]?)$")


def parse_budget(text: str | None) -> dict:
    """``"samples=8,epochs=3,seqs=64,crop=256,time=10m"`` (any subset) or ``"8"`` -> run_feature_search kwargs."""
    if text is None or not str(text).strip():
        return {}
    text = str(text).strip()
    if text.isdigit():
        text = f"samples={text}"
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in BUDGET_KEYS:
            raise UserError(f"--budget: bad item {part.strip()!r}; use key=value with keys "
                            f"{', '.join(BUDGET_KEYS)} (e.g. samples=8,epochs=3,time=10m)")
        if key == "time":
            m = _DURATION.match(value)
            if not m or float(m.group(1)) <= 0:
                raise UserError(f"--budget: time must be a positive duration like 600, 90s, 10m or 1h, got {value!r}")
            out["time_budget_s"] = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        elif not value.isdigit():
            raise UserError(f"--budget: {key} must be a whole number, got {value!r}")
        else:
            out[BUDGET_KEYS[key]] = int(value)
    return out


def _check(data_dir, num_samples, time_budget_s, proxy: ProxySettings) -> None:
    from ..data.loader import data_paths
    if num_samples < 1:
        raise UserError(f"feature-search budget: samples must be >= 1, got {num_samples}")
    if time_budget_s is not None and not (float(time_budget_s) > 0):
        raise UserError(f"feature-search budget: time must be > 0 seconds, got {time_budget_s}")
    proxy.check()
    for role in ("train", "valid"):
        if not os.path.exists(data_paths(data_dir)[role]):
            raise UserError(f"{data_dir}: no {role}.parquet (--data DIR must hold train.parquet and valid.parquet)")


def _write_json(path: str, obj) -> None:
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)


class _Tracking:
    """The search's MLflow parent run and the driver-side child run (raw baseline)."""

    def __init__(self, uri: str | None, run_dir: str, name: str, params: dict):
        from mlflow.tracking import MlflowClient
        from .. import tracking as trk
        self.uri = trk.tracking_uri(uri, run_dir)
        self.experiment_id = trk.ensure_experiment(EXPERIMENT, self.uri, run_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        run = self.client.create_run(self.experiment_id, run_name=f"feature-search-{name}",
                                     tags={"stage": STAGE, "sweep": name, "kind": "search"})
        self.parent = run.info.run_id
        for k, v in trk.flat_params(params).items():
            self.client.log_param(self.parent, k, v)

    def child(self, name: str, run_name: str, params: dict, tags: dict) -> str:
        from mlflow.entities import Param
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={
            "stage": STAGE, "sweep": name, "mlflow.parentRunId": self.parent, **tags})
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])
        return run.info.run_id

    def metrics(self, run_id: str, values: dict, step: int = 0) -> None:
        from mlflow.entities import Metric
        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, step) for k, v in values.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        if ms:
            self.client.log_batch(run_id, metrics=ms)


def _score_raw(data_dir, proxy, cache_dir, trk: _Tracking | None, name: str, threads: int) -> dict:
    """The raw-features baseline, every epoch, in this process."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = ProxyRun(data_dir, RAW_SPEC, proxy, cache_dir)
        run_id = trk.child(name, "raw-baseline", run.params, {"role": "raw-baseline"}) if trk else None

        def on_epoch(rec: dict) -> None:
            if trk:
                trk.metrics(run_id, {k: v for k, v in rec.items() if k != "epoch"}, rec["epoch"])
        out = run.run_all(on_epoch)
    finally:
        torch.set_num_threads(before)
    if trk:
        trk.metrics(run_id, out, out["best_epoch"])
        trk.client.set_terminated(run_id, "FINISHED")
    log.info("feature search %s: raw features score %.4f on tune (%d features)", name, out["proxy_tune_mean"],
             out["n_features"])
    return {**out, "mlflow_run_id": run_id}


def _candidates(records: list[dict]) -> list[dict]:
    """Trial records + their spec and proxy score, best first (only completed ones have a model)."""
    out = []
    for r in records:
        spec = spec_from_config(r["config"])
        score = r["metrics"].get("proxy_tune_mean")
        out.append({**r, "spec": spec, "groups": describe(spec), "proxy_tune_mean": score})
    return sorted(out, key=lambda c: (c["status"] != "completed",
                                      -c["proxy_tune_mean"] if c["proxy_tune_mean"] is not None else math.inf))


@dataclass
class _Plan:
    """One search's checked settings and folders."""

    data_dir: str
    name: str
    sdir: str
    run_dir: str
    proxy: ProxySettings
    resources: dict
    num_samples: int
    time_budget_s: float | None
    ray_address: str | None
    local_cpus: int | None
    verbose: int

    @property
    def threads(self) -> int:
        return max(1, math.ceil(self.resources["cpu"]))

    def path(self, *parts: str) -> str:
        return os.path.join(self.sdir, *parts)

    def record(self) -> dict:
        """What the parent run and best_features.json record about the search."""
        return {"data_dir": self.data_dir, "num_samples": self.num_samples, "time_budget_s": self.time_budget_s,
                "resources": self.resources, "proxy": asdict(self.proxy)}


def run_feature_search(data_dir, *, name=None, num_samples=8, max_epochs=3, max_train_seqs=64, crop_len=256,
                       time_budget_s=None, resources=None, ray_address=None, tracking_uri=None, run_dir=None,
                       seed=0, track=True, local_cpus=None, verbose=0) -> dict:
    """Search feature specs; write ``best_features.json`` and ``latest.json``; return a summary.

    ``num_samples`` candidates (the first is every group on, the rest Optuna
    TPE), each trained up to ``max_epochs`` on ``max_train_seqs`` train
    sequences in crops of ``crop_len`` steps (0: whole sequences), pruned by
    ASHA on the tune score. Bad settings or a missing data folder raise
    UserError before anything is written.
    """
    from .. import tracking as trk_mod
    from .ray_setup import parse_resources
    proxy = ProxySettings(max_epochs=max_epochs, max_train_seqs=max_train_seqs, crop_len=crop_len, seed=seed)
    _check(data_dir, int(num_samples), time_budget_s, proxy)
    res = parse_resources(resources)
    name = name or time.strftime("fs-%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"--name must be letters, digits, '.', '_' or '-', got {name!r}")
    root = os.path.abspath(run_dir or os.environ.get("LOBSWEEP_RUN_DIR") or "runs")
    sdir = os.path.join(root, "feature_search", name)
    if os.path.exists(sdir):
        raise UserError(f"feature search {name!r} already exists in {os.path.dirname(sdir)}; pick another --name")
    plan = _Plan(os.path.abspath(data_dir), name, sdir, trk_mod.run_dir(root), proxy, res, int(num_samples),
                 time_budget_s, ray_address, local_cpus, verbose)
    for d in ("cache", "trials", "ray"):
        os.makedirs(plan.path(d))
    trk = _Tracking(tracking_uri, plan.run_dir, name, plan.record()) if track else None
    try:
        return _search(plan, trk)
    except BaseException:
        if trk:
            trk.client.set_terminated(trk.parent, "FAILED")
        raise


def _run_candidates(plan: _Plan, trk: _Tracking | None, time_left: float | None) -> list[dict]:
    """The Ray Tune experiment over SPACE; one record per candidate (experiment.trial_records)."""
    from .experiment import ExperimentSettings, reconcile_runs, trial_records
    from .sweep import run_experiment
    from .ray_setup import check_fits, default_concurrency, ray_session
    from .trial import TrialContext
    ctx = TrialContext(sweep=plan.name, bundles_dir=plan.path("trials"), metric="tune_mean", threads=plan.threads,
                       tracking_uri=trk.uri if trk else None, experiment_id=trk.experiment_id if trk else None,
                       parent_run_id=trk.parent if trk else None, stage=STAGE)
    builder = FeatureTrialBuilder(plan.data_dir, plan.proxy, plan.path("cache"))
    from ..progress import Stage
    from .progress import TuneProgress
    stage = Stage("feature-search", unit="pipelines", total=plan.num_samples, budget_s=time_left)
    try:
        with ray_session(plan.ray_address, num_cpus=plan.local_cpus, log_dir=plan.sdir):
            check_fits(plan.resources)
            settings = ExperimentSettings(
                num_samples=plan.num_samples, max_t=int(plan.proxy.max_epochs), metric="tune_mean", grace_period=1,
                reduction_factor=3.0, max_concurrent=default_concurrency(plan.resources), resources=plan.resources,
                time_budget_s=time_left, seed=int(plan.proxy.seed), points_to_evaluate=[all_on_config()],
                verbose=plan.verbose, callbacks=[TuneProgress(stage)])
            results = run_experiment(builder, SPACE, ctx, settings, storage_path=plan.path("ray"), name="tune")
            records = trial_records(results)
            reconcile_runs(records, ctx)
    finally:
        stage.close()
    return records


def _search(plan: _Plan, trk: _Tracking | None) -> dict:
    """Raw baseline, candidates, winner, importance, outputs (the folder and parent run exist)."""
    started = time.time()
    raw = _score_raw(plan.data_dir, plan.proxy, plan.path("cache"), trk, plan.name, plan.threads)
    time_left = None if plan.time_budget_s is None else max(1.0, plan.time_budget_s - (time.time() - started))
    cands = _candidates(_run_candidates(plan, trk, time_left))
    _write_json(plan.path("trials.json"), cands)
    done = [c for c in cands if c["status"] == "completed"]
    left = None if plan.time_budget_s is None else plan.time_budget_s - (time.time() - started)
    if done and done[0]["proxy_tune_mean"] > raw["proxy_tune_mean"] and (left is None or left > 0):
        best = done[0]
        # under a time budget one permutation per group (a third of the cost), and none once it is spent
        importance = group_importance(plan.data_dir, best["bundle"], plan.path("cache"), seed=plan.proxy.seed,
                                      n_repeats=3 if left is None else 1)
        _save_figure(importance, best["groups"], plan.path("importance.png"))
    elif done and done[0]["proxy_tune_mean"] > raw["proxy_tune_mean"]:
        best = done[0]
        importance = {"groups": {}, "note": "not computed: the time budget was spent"}
    else:
        # The search must pay for itself: no candidate beat the raw inputs on tune, or none finished
        # within the budget; the raw pipeline (always scored first) is the answer, said plainly.
        why = "no candidate finished within the budget" if not done else \
            f"no candidate beat the raw inputs on tune ({done[0]['proxy_tune_mean']:.4f} <= {raw['proxy_tune_mean']:.4f})"
        log.warning("feature search %s: %s; keeping the raw pipeline", plan.name, why)
        best = {"spec": RAW_SPEC, "groups": "raw", "proxy_tune_mean": raw["proxy_tune_mean"],
                "trial_id": "raw-baseline", "metrics": {k: raw[k] for k in ("n_features", "proxy_tune_t0",
                                                                           "proxy_tune_t1")}, "why": why}
        importance = {"groups": {}, "note": why}
    _write_json(plan.path("importance.json"), importance)
    m = best["metrics"]
    summary = {"name": plan.name, "spec": best["spec"], "groups": best["groups"],
               "proxy_tune_mean": best["proxy_tune_mean"], "raw_proxy_tune_mean": raw["proxy_tune_mean"],
               "n_features": int(m["n_features"]), "raw_n_features": raw["n_features"],
               "proxy_tune_t0": m.get("proxy_tune_t0"), "proxy_tune_t1": m.get("proxy_tune_t1"),
               "raw_proxy_tune_t0": raw["proxy_tune_t0"], "raw_proxy_tune_t1": raw["proxy_tune_t1"],
               "trial_id": best["trial_id"], "n_candidates": len(cands), "raw_kept": best.get("why"),
               "n_completed": sum(c["status"] == "completed" for c in cands),
               "importance": {g: v["importance"] for g, v in importance["groups"].items()},
               "search": plan.record(), "seconds": time.time() - started,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    best_path = plan.path(BEST_FILE)
    _write_json(best_path, summary)
    if trk:
        _finish_tracking(trk, summary, plan, best["trial_id"])
    latest_path = os.path.join(plan.run_dir, "feature_search", LATEST_FILE)
    _write_json(latest_path, {"name": plan.name, "path": best_path, "proxy_tune_mean": summary["proxy_tune_mean"],
                              "raw_proxy_tune_mean": summary["raw_proxy_tune_mean"],
                              "mlflow_parent_run_id": trk.parent if trk else None})
    shutil.rmtree(plan.path("cache"), ignore_errors=True)     # per-candidate feature arrays: large, not reused
    log.info("feature search %s: winner %s scores %.4f vs raw %.4f on tune", plan.name, best["groups"],
             summary["proxy_tune_mean"], summary["raw_proxy_tune_mean"])
    return {**summary, "best_features": best_path, "latest": latest_path, "search_dir": plan.sdir,
            "raw_mlflow_run_id": raw["mlflow_run_id"],
            "mlflow": {"tracking_uri": trk.uri, "experiment_id": trk.experiment_id, "parent_run_id": trk.parent}
            if trk else None,
            "candidates": [{k: c[k] for k in ("trial_id", "status", "groups", "proxy_tune_mean")} for c in cands]}


def _save_figure(importance: dict, groups: str, png: str) -> None:
    import matplotlib.pyplot as plt
    from .importance import importance_figure
    fig = importance_figure(importance, f"permutation importance per group\nwinner: {groups}")
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _finish_tracking(trk: _Tracking, summary: dict, plan: _Plan, trial_id: str) -> None:
    """Both scores, the winner's spec (tags + best_features.json) and the importance plot on the parent run."""
    trk.metrics(trk.parent, {"proxy_tune_mean": summary["proxy_tune_mean"], "n_features": summary["n_features"],
                             "raw_proxy_tune_mean": summary["raw_proxy_tune_mean"],
                             "gain_over_raw": summary["proxy_tune_mean"] - summary["raw_proxy_tune_mean"],
                             **{f"importance_{g}": v for g, v in summary["importance"].items()}})
    for f in (BEST_FILE, "importance.png", "importance.json", "trials.json"):
        if os.path.exists(plan.path(f)):                # no importance plot when the raw pipeline is kept
            trk.client.log_artifact(trk.parent, plan.path(f))
    for k, v in spec_params(summary["spec"]).items():
        trk.client.set_tag(trk.parent, f"winner.{k}", v[:500])
    trk.client.set_tag(trk.parent, "winner", trial_id)
    trk.client.set_terminated(trk.parent, "FINISHED")
