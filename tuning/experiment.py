"""How a Tune experiment searches and schedules, and what its trials became.

Nothing here knows about models or features. ``run_experiment`` (sweep.py),
which the hyperparameter sweep and the feature search share, takes a trial
builder (see trial.py for the protocol), a space and these settings:

- ``space`` is plain data ``{name: dim}`` (search_spaces format) or an Optuna
  define-by-run function; ``constants`` are fixed config entries (``family``).
- Searcher: Optuna TPE (``searcher="tpe"``) or Optuna's random sampler
  (``"random"``), both through ``OptunaSearch``; concurrency is bounded by
  ``max_concurrent`` (Tune wraps the searcher in a ConcurrencyLimiter). Under a
  time budget with ``stagnation``, the searcher is ``StagnationStop``, a
  ConcurrencyLimiter that ends the search once it has stopped improving.
- Scheduler: ASHA on ``training_iteration`` (= epochs) with ``max_t``,
  ``grace_period`` and ``reduction_factor``, or FIFO (every trial to ``max_t``).
- A checkpoint every epoch, ``FailureConfig(max_failures)`` restarts a crashed
  trial from it, and ``resume=True`` continues an experiment whose driver was
  killed (``Tuner.restore``: finished trials are kept, the searcher state is
  restored, so only the missing trials run).

``trial_records`` turns the ResultGrid into plain records with a status per
trial (completed / failed / pruned_at_epoch_k), and ``reconcile_runs`` makes
every trial's MLflow run agree with it (trials killed with their driver left
theirs RUNNING).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ray import tune

from .trial import TrialContext

log = logging.getLogger("lobsweep.tuning")
# a checkpoint every epoch of short trials makes Tune warn about snapshot frequency on every result
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
SCHEDULERS = ("asha", "fifo")
SEARCHERS = ("tpe", "random")


@dataclass
class ExperimentSettings:
    """How one Tune experiment searches, schedules and spends resources."""

    num_samples: int
    max_t: int                                  # epochs a trial may get
    metric: str = "tune_mean"
    mode: str = "max"
    grace_period: int = 1
    reduction_factor: float = 3.0
    scheduler: str = "asha"
    searcher: str = "tpe"
    max_concurrent: int = 1
    resources: dict = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    time_budget_s: float | None = None
    seed: int = 0
    points_to_evaluate: list | None = None      # configs to try first (same keys as the space)
    # with points_to_evaluate: their known tune scores; the searcher is told them and runs none
    # of them again (``sweep --extend`` warm-starts from a finished sweep's trials this way)
    evaluated_rewards: list | None = None
    keep_points: list | None = None             # trials with these values ASHA never stops (recipes)
    # a joint study under a budget (sweep.coverage_of): while a family has no trial, rotating
    # trials past ``share_s`` are cut, keeping their bundles (recipe_points.KeepPointsASHA)
    coverage: dict | None = None
    # with time_budget_s: no new trials once the best has stalled for this fraction of the time gone
    # (after this fraction of the budget; stagnation.py); 0 = search until the budget or num_samples
    stagnation: float = 0.0
    stagnation_file: str | None = None          # where the stop is written (``stagnated_at_s``)
    max_failures: int = 2
    reuse_actors: bool = True
    verbose: int = 0
    callbacks: list = field(default_factory=list)


def trial_dirname(trial) -> str:
    return trial.trial_id


def complete_point(point: dict, space: dict) -> dict:
    """A point to evaluate with every dimension: missing ones take the range's centre
    (geometric for log scales) or the first choice. OptunaSearch requires full points."""
    out = {}
    for name, dim in space.items():
        if name in point:
            out[name] = point[name]
        elif dim["type"] == "choice":
            out[name] = dim["values"][0]
        else:
            lo, hi = float(dim["low"]), float(dim["high"])
            mid = (lo * hi) ** 0.5 if dim.get("log") else (lo + hi) / 2
            out[name] = int(round(mid)) if dim["type"] == "int" else mid
    return out


def make_searcher(space, s: ExperimentSettings):
    """OptunaSearch over a plain space (via the adapter) or a define-by-run function."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch
    from ..search_spaces.adapter import encode_value, to_optuna
    if s.searcher == "random":
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    else:
        startup = max(3, min(10, s.num_samples // 3))       # TPE needs a few random trials to model
        sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup)
    ot_space = space if callable(space) else to_optuna(space)
    points = [{k: encode_value(v) for k, v in (p if callable(space) else complete_point(p, space)).items()}
              for p in (s.points_to_evaluate or [])] or None
    rewards = [float(r) for r in s.evaluated_rewards] if points and s.evaluated_rewards else None
    searcher = OptunaSearch(space=ot_space, metric=s.metric, mode=s.mode, sampler=sampler,
                            points_to_evaluate=points, evaluated_rewards=rewards)
    if s.stagnation and s.time_budget_s:
        from .stagnation import StagnationStop
        return StagnationStop(searcher, max_concurrent=int(s.max_concurrent), budget_s=float(s.time_budget_s),
                              after=float(s.stagnation), n_points=0 if rewards else len(points or []),
                              events_path=s.stagnation_file)
    return searcher


def make_scheduler(s: ExperimentSettings):
    if s.scheduler == "fifo":
        return tune.schedulers.FIFOScheduler()
    kw = dict(time_attr="training_iteration", max_t=int(s.max_t), grace_period=int(s.grace_period),
              reduction_factor=s.reduction_factor)
    if s.keep_points or s.coverage:
        from .recipe_points import KeepPointsASHA
        return KeepPointsASHA(list(s.keep_points or []), coverage=s.coverage, **kw)
    return tune.schedulers.ASHAScheduler(**kw)


def _epochs(m: dict) -> int:
    """Epochs a trial trained: its own count when it reports one (a trial restored after its
    last epoch reports done once more, so Ray's iteration count can run one ahead)."""
    return int(m.get("epoch", m.get("training_iteration", 0)))


def _status(result) -> str:
    m = result.metrics or {}
    if result.error is not None or m.get("trial_status") == "failed":
        return "failed"
    if m.get("trial_status") == "completed":
        return "completed"
    return f"pruned_at_epoch_{_epochs(m)}"


def _cut_bundle(bundles_dir: str | None, trial_id: str) -> str | None:
    """The bundle a trial cut by the time budget wrote as it stopped (trial.py), if any."""
    if not bundles_dir:
        return None
    path = os.path.join(bundles_dir, trial_id)
    return path if os.path.isfile(os.path.join(path, "spec.json")) else None


def trial_records(results, bundles_dir: str | None = None) -> list[dict]:
    """One plain record per trial of a ResultGrid, sorted by trial id.

    A trial that reported ``running`` last but left a bundle in ``bundles_dir``
    was cut by the time budget: ``stopped_at_epoch_k``, with that bundle.
    """
    out = []
    for r in results:
        m = dict(r.metrics or {})
        tid = m.get("trial_id") or os.path.basename(str(r.path))
        status, bundle = _status(r), m.get("bundle") if m.get("trial_status") == "completed" else None
        epochs = _epochs(m)
        if status.startswith("pruned_at_epoch_") and _cut_bundle(bundles_dir, tid):
            # the budget can cut a trial between an epoch and its report: the bundle knows how far it got
            from ..training.bundle import read_spec
            bundle = _cut_bundle(bundles_dir, tid)
            epochs = max(epochs, len(read_spec(bundle).get("history") or []))
            status = f"stopped_at_epoch_{epochs}"
        out.append({
            "trial_id": tid, "status": status, "epochs": epochs,
            "config": {k: v for k, v in (r.config or {}).items()},
            "metrics": {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            "bundle": bundle,
            "mlflow_run_id": m.get("mlflow_run_id") or None,
            "device": m.get("device"), "gpu_ids": m.get("gpu_ids"), "node_id": m.get("node_id"),
            "cuda_visible_devices": m.get("cuda_visible_devices"),
            "error": (str(r.error).strip().splitlines() or [""])[-1][:300] if r.error is not None else m.get("error"),
            "path": str(r.path),
        })
    return sorted(out, key=lambda rec: rec["trial_id"])


def reconcile_runs(records: list[dict], ctx: TrialContext) -> None:
    """Give every trial's MLflow run the driver's status and end any left RUNNING.

    A trial that started but that Ray had not yet written into its experiment
    state when the driver was killed is unknown after a resume (the searcher
    proposes a replacement); its run, still RUNNING under this parent, is
    ended as KILLED with ``trial_status=abandoned``.
    """
    if not (ctx.tracking_uri and ctx.experiment_id):
        return
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=ctx.tracking_uri)
    if ctx.parent_run_id:
        known = {rec["trial_id"] for rec in records}
        for run in client.search_runs([ctx.experiment_id], filter_string=(
                f"tags.mlflow.parentRunId = '{ctx.parent_run_id}' and attributes.status = 'RUNNING'")):
            if run.data.tags.get("ray_trial_id") not in known:
                client.set_tag(run.info.run_id, "trial_status", "abandoned")
                client.set_terminated(run.info.run_id, "KILLED")
    for rec in records:
        run_id = rec.get("mlflow_run_id")
        if not run_id:
            found = client.search_runs([ctx.experiment_id], max_results=1,
                                       filter_string=f"tags.ray_trial_id = '{rec['trial_id']}' "
                                                     f"and tags.sweep = '{ctx.sweep}'")
            if not found:
                continue
            run_id = rec["mlflow_run_id"] = found[0].info.run_id
        client.set_tag(run_id, "trial_status", rec["status"])
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED" if rec["status"] == "failed" else "FINISHED")
