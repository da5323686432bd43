"""The sweep's leaderboard: top-K trained trials per family, ranked on the tune split.

A trained trial is one that completed, or one the time budget cut after at least one epoch
(``stopped_at_epoch_k``: its best weights so far are its bundle). ASHA-pruned trials lost on
merit and have no bundle.

``leaderboard.json`` (in ``<run_dir>/sweeps/<name>/``) is what the retrain
stage reads::

    {"format": "lobsweep.leaderboard/1", "sweep": name, "rank_by": "final_tune_mean",
     "top_k": K, "counts": {family: {"completed": n, "stopped": n, "failed": n, "pruned": n, "total": n}},
     "families": {family: [entry, ...]},        best first, at most K each
     "overall": [entry, ...],                   all families' entries, best first
     "floor": entry | null}                     the best recipe trial (the strongest default), on tune
    entry = {"family", "trial_id", "hparams" (full model Config), "train_config" (full
             TrainConfig), "features" (pipeline spec), "tune_score", "tune_t0", "tune_t1",
             "report_score", "report_t0", "report_t1", "fraction_of_oracle", "params_count",
             "epochs", "best_epoch", "status", "recipe", "train_seconds", "bundle", "mlflow_run_id"}

Ranking uses the tune score only; the report score is shown beside it and
never chooses anything. Entries come from the bundles completed trials wrote,
so hparams and train_config are exactly what was trained.

In MLflow the sweep is a parent run (``start_tracking``, before any trial logs,
with the leaderboard view) that ends holding the leaderboard file, each
family's best scores and the winners' bundles (``finish_tracking``).
"""

from __future__ import annotations

import json
import os
import time

from ..errors import UserError, read_json

FORMAT = "lobsweep.leaderboard/1"
FILE = "leaderboard.json"
VIEW_KEY_PREFIX = "mlflow.sharedViewState."
EXPERIMENT = "hpo"                 # the MLflow experiment of every sweep


def _entry(rec: dict) -> dict | None:
    from ..training.bundle import read_spec
    kept = rec.get("status") == "completed" or str(rec.get("status", "")).startswith("stopped_")
    if not kept or not rec.get("bundle") or not os.path.isdir(rec["bundle"]):
        return None
    spec = read_spec(rec["bundle"])
    m = spec.get("metrics", {})
    return {"family": spec["family"], "trial_id": rec["trial_id"], "hparams": spec["config"],
            "train_config": spec.get("train_config"), "features": spec["features"],
            "tune_score": m.get("tune_mean"), "tune_t0": m.get("tune_t0"), "tune_t1": m.get("tune_t1"),
            "report_score": m.get("report_mean"), "report_t0": m.get("report_t0"), "report_t1": m.get("report_t1"),
            "fraction_of_oracle": m.get("fraction_of_oracle"), "params_count": spec.get("n_params"),
            "train_seconds": m.get("train_seconds"),
            "epochs": rec.get("epochs") or len(spec.get("history") or []), "best_epoch": spec.get("best_epoch"), "status": rec["status"],
            "recipe": rec.get("recipe"), "bundle": os.path.abspath(rec["bundle"]),
            "mlflow_run_id": rec.get("mlflow_run_id")}


def build_leaderboard(records: list[dict], sweep: str, top_k: int = 3) -> dict:
    """Top-``top_k`` trained trials (completed or cut by the budget) per family from trial records (``experiment.trial_records``)."""
    counts: dict[str, dict] = {}
    entries: dict[str, list] = {}
    recipes: list[dict] = []
    for rec in records:
        fam = rec.get("family") or rec.get("config", {}).get("family", "?")
        c = counts.setdefault(fam, {"completed": 0, "stopped": 0, "failed": 0, "pruned": 0, "total": 0})
        c["total"] += 1
        c[rec["status"].split("_")[0]] += 1
        e = _entry(rec)
        if e is not None:
            entries.setdefault(e["family"], []).append(e)
            if e.get("recipe"):
                recipes.append(e)
    key = lambda e: -(e["tune_score"] if e["tune_score"] is not None else -1e9)   # noqa: E731
    families = {f: sorted(es, key=key)[:top_k] for f, es in sorted(entries.items())}
    overall = sorted((e for es in families.values() for e in es), key=key)
    floor = min(recipes, key=key) if recipes else None
    return {"format": FORMAT, "sweep": sweep, "rank_by": "final_tune_mean", "top_k": int(top_k),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "counts": counts, "families": families,
            "overall": overall, "floor": floor}


def write_leaderboard(path: str, board: dict) -> str:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(board, f, indent=1, default=str)
    os.replace(tmp, path)
    return path


def sweep_dir(run_dir: str | None, name: str) -> str:
    """The folder of sweep ``name``: ``<run_dir>/sweeps/<name>``."""
    from ..tracking import run_dir as _run_dir
    return os.path.join(_run_dir(run_dir), "sweeps", name)


def load_leaderboard(path_or_sweep_dir: str, run_dir: str | None = None) -> dict:
    """A sweep's leaderboard by file, sweep folder, or sweep name under ``run_dir``
    (UserError when absent or malformed)."""
    path = path_or_sweep_dir
    if not os.path.exists(path) and os.sep not in path:
        path = sweep_dir(run_dir, path)
    if os.path.isdir(path):
        path = os.path.join(path, FILE)
    if not os.path.exists(path):
        raise UserError(f"no leaderboard at {path_or_sweep_dir} (run `lobsweep sweep` first)")
    board = read_json(path)
    if not isinstance(board, dict) or board.get("format") != FORMAT:
        raise UserError(f"{path}: not a {FORMAT} file")
    return board


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_leaderboard(board: dict) -> str:
    """The leaderboard as a text table (tune decides the order, report is shown)."""
    lines = [f"sweep {board['sweep']}: top {board['top_k']} per family, ranked by the tune score"]
    lines.append(f"{'family':<14}{'trial':<14}{'tune':>8}{'report':>8}{'oracle%':>8}{'params':>10}{'epochs':>7}")
    for e in board["overall"]:
        frac = None if e.get("fraction_of_oracle") is None else 100 * e["fraction_of_oracle"]
        lines.append(f"{e['family']:<14}{e['trial_id']:<14}{_fmt(e['tune_score'], '.4f'):>8}"
                     f"{_fmt(e['report_score'], '.4f'):>8}{_fmt(frac, '.1f'):>8}{_fmt(e['params_count'], ','):>10}"
                     f"{_fmt(e['epochs'], 'd'):>7}")
    counts = ", ".join(f"{f}: {c['total']} started, {c['completed']} completed / {c.get('stopped', 0)} cut by "
                       f"the budget / {c['pruned']} pruned / {c['failed']} failed"
                       for f, c in sorted(board["counts"].items()))
    lines.append(f"trials: {counts or 'none'}")
    return "\n".join(lines)


def view_state(metric: str = "tune_mean", columns: tuple = ()) -> dict:
    """The runs-table state the MLflow UI restores from a share key: sorted by a tune metric,
    report shown beside it."""
    if "report" in metric:
        raise UserError(f"leaderboards sort by a tune score, never by the report split ('{metric}')")
    shown = [metric, *[c for c in ("final_tune_mean", "report_mean", "fraction_of_oracle", "params_count",
                                   "train_seconds") if c != metric], *columns]
    return {"selectedColumns": [f"metrics.`{m}`" for m in shown] + ["tags.`family`", "tags.`trial_status`"],
            "orderByKey": f"metrics.`{metric}`", "orderByAsc": False}


def set_leaderboard_view(experiment_id: str, metric: str = "tune_mean", tracking_uri: str | None = None) -> str:
    """Tag the experiment so ``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens sorted by ``metric``
    (a tune score: ``tune_mean`` for retrain and ensemble runs, ``final_tune_mean`` for sweep trials).

    The UI reads the tag ``mlflow.sharedViewState.<key>`` as JSON (it also
    accepts a compressed form) and takes ``selectedColumns``, ``orderByKey``
    and ``orderByAsc`` from it (MLflow 3.17 UI code, see TOOLING-FACTS.md).
    Returns the key.
    """
    from mlflow.tracking import MlflowClient
    state = view_state(metric)
    key = f"lobsweep-{metric.replace('_', '-')}"
    MlflowClient(tracking_uri=tracking_uri).set_experiment_tag(experiment_id, VIEW_KEY_PREFIX + key,
                                                               json.dumps(state))
    return key


def view_url(server: str, experiment_id: str, key: str) -> str:
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}"


def start_tracking(meta: dict, run_dir: str) -> None:
    """Store, experiment, leaderboard view and the parent run, before any trial starts."""
    from mlflow.tracking import MlflowClient
    from .. import tracking as trk
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
