"""MLflow plumbing shared by every stage: where runs go, experiments, plots.

Default store: ``sqlite:///<run_dir>/mlflow.db`` with artifacts under
``<run_dir>/mlartifacts``. With several processes logging at once (Ray trials
on a cluster) point ``--tracking-uri``/``MLFLOW_TRACKING_URI`` at an MLflow
server instead. The store and each experiment are created by the driver before
any trial starts: trials racing to create them lose data (TOOLING-FACTS.md).
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

STAGES = ("feature-search", "hpo", "retrain", "ensemble", "submission")


def run_dir(path: str | None = None) -> str:
    d = os.path.abspath(path or os.environ.get("LOBSWEEP_RUN_DIR") or "runs")
    os.makedirs(d, exist_ok=True)
    return d


def tracking_uri(uri: str | None = None, run_dir_: str | None = None) -> str:
    """The tracking URI: explicit, else $MLFLOW_TRACKING_URI, else the run folder's sqlite store."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{os.path.join(run_dir(run_dir_), 'mlflow.db')}"


def setup(uri: str | None = None, run_dir_: str | None = None) -> str:
    """Point mlflow at the store (creating the sqlite schema now, in this process)."""
    import mlflow
    uri = tracking_uri(uri, run_dir_)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; put the user's value back so a
    # later stage in this process (another run folder) is not steered by this one's store.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    mlflow.search_experiments(max_results=1)      # forces schema creation before any trial
    return uri


def ensure_experiment(name: str, uri: str | None = None, run_dir_: str | None = None) -> str:
    """Experiment id of ``name``, created with artifacts under the run folder if new."""
    import mlflow
    from mlflow.tracking import MlflowClient
    setup(uri, run_dir_)
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri(uri, run_dir_).startswith("sqlite:"):
        location = "file://" + os.path.join(run_dir(run_dir_), "mlartifacts", name)
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        return client.get_experiment_by_name(name).experiment_id   # created concurrently


def curve_figure(history: list[dict], title: str = ""):
    """Training curves: train loss and tune/report mean score per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(ep, [h["train_loss"] for h in history], marker="o")
    a.set_xlabel("epoch"), a.set_ylabel("train loss"), a.set_title("loss")
    for key, label in (("tune_mean", "tune"), ("report_mean", "report")):
        if history and key in history[0]:
            b.plot(ep, [h[key] for h in history], marker="o", label=label)
    b.set_xlabel("epoch"), b.set_ylabel("weighted pearson (mean)"), b.legend(), b.set_title("score")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def log_figure(fig, name: str) -> None:
    import matplotlib.pyplot as plt
    import mlflow
    mlflow.log_figure(fig, name)
    plt.close(fig)


def flat_params(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {"a.b": value} with values MLflow accepts (<= 500 chars)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


def log_history(history: list[dict]) -> None:
    """Per-epoch metrics with step = epoch."""
    import mlflow
    for h in history:
        mlflow.log_metrics({k: float(v) for k, v in h.items() if k != "epoch"}, step=int(h["epoch"]))


LEADERBOARD_COLUMNS = ("tune_mean", "report_mean", "report_t0", "report_t1", "fraction_of_oracle",
                       "ms_per_step", "params_count")


def stage_leaderboard(stage: str, top: int = 20, uri: str | None = None, run_dir_: str | None = None) -> list[dict]:
    """The runs of one stage's experiment, best tune score first, report beside it (parent runs left
    out). Sweep trials rank by ``final_tune_mean``, other stages by ``tune_mean``; runs without a tune
    score (a packaged zip scored on report only) come last, in start order."""
    import mlflow
    from .errors import UserError
    if stage not in STAGES:
        raise UserError(f"unknown stage '{stage}'; choose one of {', '.join(STAGES)}")
    setup(uri, run_dir_)
    exp = mlflow.get_experiment_by_name(stage)
    if exp is None:
        raise UserError(f"no MLflow experiment '{stage}' at {tracking_uri(uri, run_dir_)}; run that stage first")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              output_format="list", max_results=1000)
    rows = []
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        if "report_mean" not in m and "tune_mean" not in m:
            continue
        tune = m.get("final_tune_mean", m.get("tune_mean"))
        rows.append({"run": r.info.run_name, "run_id": r.info.run_id, "family": t.get("family", t.get("method", "")),
                     "seed": t.get("seed", ""), **{k: m.get(k) for k in LEADERBOARD_COLUMNS}, "tune_mean": tune})
    rows.sort(key=lambda row: (row["tune_mean"] is None, -(row["tune_mean"] or 0.0)))
    return rows[:top]


def format_rows(rows: list[dict]) -> str:
    if not rows:
        return "(no finished runs with a report score)"
    head = f"{'#':>3} {'run':<28}{'family':<14}{'seed':>6}" + "".join(f"{c:>19}" for c in LEADERBOARD_COLUMNS)
    lines = [head]
    for i, r in enumerate(rows, 1):
        vals = "".join(f"{'' if r[c] is None else format(r[c], '.4f' if abs(r[c]) < 100 else '.0f'):>19}"
                       for c in LEADERBOARD_COLUMNS)
        lines.append(f"{i:>3} {str(r['run'])[:27]:<28}{str(r['family'])[:13]:<14}{str(r['seed']):>6}{vals}")
    return "\n".join(lines)
