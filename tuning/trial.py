"""One trial: the Ray Tune trainable every search shares, and the sweep's model trial it runs.

``SweepTrainable`` trains one epoch per ``step`` with a checkpoint per epoch.

What is trained is not decided here. A *trial builder* (picklable callable)
makes a *trial run* from the sampled config::

    run = builder(config: dict, ctx: TrialContext)
    run.params          flat dict logged once as MLflow params
    run.device          str, where it trains
    run.step() -> dict  train one epoch; a flat record of numbers holding ctx.metric;
                        raises TrainingDiverged when the loss goes NaN / inf
    run.done            True once the run needs no more epochs
    run.finish(bundle_dir) -> dict   final metrics (numbers) + "bundle": path written
    run.state_dict() / run.load_state_dict(s)   tensors and plain containers only

``SweepTrainable`` wraps it for Ray: per-epoch results and checkpoints
(``torch.save``, loaded back with ``weights_only=True``), one MLflow child run
per trial under the sweep's parent run, and the trial's end state:

    completed            the run said done; its bundle is written; result has done=True
    failed               the loss diverged: reported once with ctx.fail_score as the
                         metric (so the searcher learns the region is bad) and done=True
    pruned_at_epoch_k    stopped by ASHA after k epochs (it lost on merit: no bundle)
    stopped_at_epoch_k   stopped by the experiment's time budget after k epochs: the run is
                         cut, not beaten, so its best weights so far are written as its bundle
                         (``ctx.deadline``); with full-size trials under a wall-clock budget
                         that is where most of the sweep's training lives. The same for a
                         trial the scheduler cut after its share so that every family
                         gets a trial (a marker in ``ctx.cut_dir``; recipe_points.py)

A crash (any other exception) propagates to Ray, whose FailureConfig restarts
the trial from its last checkpoint. A trial restored from a checkpoint taken
after it finished reports done at once and trains nothing.

``ModelTrialBuilder`` / ``ModelTrial`` (the end of this file) are the sweep's trial run,
what ``SweepTrainable`` calls in each trial process: one family, one sampled config,
the Trainer (training/trainer.py). The builder prepares the data through ``training.prepare`` with the sweep's cache dir,
so trials open the transformed arrays the driver already wrote (memory-mapped)
instead of transforming again; an actor reused for several trials keeps the
prepared roles in memory.

Honest evaluation: trials train on *fit*, score *tune* every epoch (ASHA and
the searcher see only that), and score *report* once, at the end of a trial
that completed, for the leaderboard. ``report`` is never passed to the
Trainer, so no per-epoch report score exists to be looked at.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

# Imported before Ray redirects a trial's stderr: torch and MLflow bind their log handlers
# to the sys.stderr of import time, which would otherwise be the first trial's log file,
# closed when a reused actor moves on (a burst of flush errors at exit).
import mlflow  # noqa: F401
import torch
from ray import tune

from ..models import count_params, create_model
from ..search_spaces import FEATURES_KEY, SEARCHED, feature_choice, split_config
from ..submission.cost import member_cost_ms
from ..training.bundle import save_bundle
from ..training.member import build_spec, feature_set_name, member_metrics
from ..training.prepare import Prepared, prepare
from ..training.trainer import TrainConfig, Trainer, predict, set_seed
from .ray_setup import trial_placement

log = logging.getLogger("lobsweep.tuning")
STATE_FILE = "trial_state.pt"
BUDGET_SLACK_S = 2.0        # a stop this close to the deadline is the budget's, not ASHA's


@dataclass
class TrialContext:
    """What every trial of one experiment shares (picklable, small)."""

    sweep: str                       # sweep name, tagged on every MLflow run
    bundles_dir: str                 # bundles/<trial_id>/ are written here
    metric: str = "tune_mean"
    fail_score: float = -1.0         # reported for a diverged trial (the metric's worst value)
    threads: int = 1                 # torch threads per trial (its CPU share)
    tracking_uri: str | None = None  # None: no MLflow logging
    experiment_id: str | None = None
    parent_run_id: str | None = None
    stage: str = "hpo"
    deadline: float | None = None    # epoch seconds when the experiment's time budget ends
    cut_dir: str | None = None       # where the scheduler marks trials it cut for coverage (recipe_points.py)
    # coverage (sweep.coverage_of): the first-round recipe points that rotate through ``round_slots``
    # slots, in order; such a trial anneals by its share of the time left, so the next family starts
    rounds: tuple = ()
    round_slots: int = 1


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now: Ray points it at each new trial's log file."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def _setup_logging() -> None:
    lg = logging.getLogger("lobsweep")
    if not any(isinstance(h, _StderrHandler) for h in lg.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        lg.addHandler(h)
        lg.setLevel(logging.INFO)


class _ChildRun:
    """The trial's MLflow run: found again by its trial id after a retry or a resume."""

    def __init__(self, ctx: TrialContext, trial_id: str, run_name: str, params: dict, tags: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        self.client = MlflowClient(tracking_uri=ctx.tracking_uri)
        found = self.client.search_runs(
            [ctx.experiment_id], max_results=1,
            filter_string=f"tags.ray_trial_id = '{trial_id}' and tags.sweep = '{ctx.sweep}'")
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        all_tags = {"ray_trial_id": trial_id, "sweep": ctx.sweep, "stage": ctx.stage, "trial_status": "running",
                    **({"mlflow.parentRunId": ctx.parent_run_id} if ctx.parent_run_id else {}), **tags}
        run = self.client.create_run(ctx.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        items = [Param(k, str(v)[:500]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric
        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, step) for k, v in values.items() if isinstance(v, (int, float))]
        if ms:
            self.client.log_batch(self.run_id, metrics=ms)

    def close(self, status: str) -> None:
        self.client.set_tag(self.run_id, "trial_status", status)
        self.client.set_terminated(self.run_id, "FAILED" if status == "failed" else "FINISHED")


class SweepTrainable(tune.Trainable):
    """Class trainable around a trial builder; use with ``tune.with_parameters(..., builder=, ctx=)``."""

    def setup(self, config, builder=None, ctx: TrialContext | None = None):
        if builder is None or ctx is None:
            raise ValueError("SweepTrainable needs builder= and ctx= (tune.with_parameters)")
        self.builder, self.ctx = builder, ctx
        _setup_logging()
        torch.set_num_threads(max(1, int(ctx.threads)))
        self._start(config)

    def _start(self, config: dict) -> None:
        self.status, self.final, self.last, self.tracker = "running", None, {}, None
        # this trial's id, kept: when Ray reuses the actor it names the next trial before _close runs
        self._tid = self.trial_id
        self.placement = trial_placement()
        self.run = self.builder(dict(config), self.ctx)
        log.info("trial %s: training on %s (Ray GPU ids [%s], CUDA_VISIBLE_DEVICES=%r)", self.trial_id,
                 self.run.device, self.placement["gpu_ids"], self.placement["cuda_visible_devices"])

    # ------------------------------------------------------------ tracking
    def _tracker(self) -> _ChildRun | None:
        if self.tracker is None and self.ctx.tracking_uri and self.ctx.experiment_id:
            tags = {"family": str(self.config.get("family", "")), **getattr(self.run, "tags", {})}
            name = f"{tags['family'] or 'trial'}-{self.trial_id}"
            self.tracker = _ChildRun(self.ctx, self.trial_id, name, self.run.params, tags)
        return self.tracker

    def _close(self) -> None:
        """Record how the trial ended; a trial still running here was stopped from outside."""
        if self.status == "running":
            self.status = f"pruned_at_epoch_{self.iteration}"
            if self._cut_by_budget() or self._cut_for_coverage():
                self._keep_cut_trial()
        if self.tracker is not None:
            try:
                self.tracker.close(self.status)
            except Exception as exc:                       # never let tracking break Ray's cleanup
                log.warning("trial %s: could not close its MLflow run (%s)", self._tid, exc)
            self.tracker = None

    def _cut_by_budget(self) -> bool:
        """Stopped at (or past) the time budget's end, after at least one epoch."""
        return (self.ctx.deadline is not None and self.iteration >= 1 and self.final is None
                and time.time() >= self.ctx.deadline - BUDGET_SLACK_S)

    def _cut_for_coverage(self) -> bool:
        """Stopped by the scheduler so that every family gets a trial (it left a marker), after an epoch."""
        from .recipe_points import cut_marker
        return (self.ctx.cut_dir is not None and self.iteration >= 1 and self.final is None
                and os.path.exists(cut_marker(self.ctx.cut_dir, self._tid)))

    def _keep_cut_trial(self) -> None:
        """Write the best weights so far as the trial's bundle (``stopped_at_epoch_k``)."""
        try:
            self.final = self.run.finish(os.path.join(self.ctx.bundles_dir, self._tid))
        except Exception as exc:                       # the trial stays pruned; Ray's cleanup goes on
            log.warning("trial %s: cut by the time budget, but its bundle could not be written (%s)",
                        self._tid, exc)
            return
        self.status = f"stopped_at_epoch_{self.iteration}"
        t = self._tracker()
        if t is not None:
            t.metrics({k: v for k, v in self.final.items() if k != "bundle"}, step=int(self.iteration))

    def _extras(self) -> dict:
        t = self._tracker()
        return {"device": str(self.run.device), "gpu_ids": self.placement["gpu_ids"],
                "cuda_visible_devices": self.placement["cuda_visible_devices"],
                "node_id": self.placement["node_id"], "mlflow_run_id": t.run_id if t else ""}

    # ------------------------------------------------------------ Ray hooks
    def step(self) -> dict:
        from ..training.trainer import TrainingDiverged
        if self.final is not None or self.run.done:         # restored after the last epoch
            return self._complete(dict(self.last))
        try:
            rec = self.run.step()
        except TrainingDiverged as exc:
            log.warning("trial %s: %s; recorded as failed", self.trial_id, exc)
            self.status = "failed"
            out = {**self._extras(), self.ctx.metric: float(self.ctx.fail_score), "trial_status": "failed",
                   "error": str(exc)[:300], "done": True}
            self._close()
            return out
        t = self._tracker()
        if t is not None:
            t.metrics({k: v for k, v in rec.items() if k != "epoch"}, step=int(rec.get("epoch", self.iteration + 1)))
        self.last = {k: v for k, v in rec.items() if isinstance(v, (int, float))}
        if self.run.done:
            return self._complete(dict(rec))
        return {**rec, **self._extras(), "trial_status": "running"}

    def _complete(self, rec: dict) -> dict:
        if self.final is None:
            self.final = self.run.finish(os.path.join(self.ctx.bundles_dir, self.trial_id))
            t = self._tracker()
            if t is not None:
                t.metrics({k: v for k, v in self.final.items() if k != "bundle"}, step=int(rec.get("epoch", 0)))
        self.status = "completed"
        out = {**rec, **self.final, **self._extras(), "trial_status": "completed", "done": True}
        self._close()
        return out

    def save_checkpoint(self, checkpoint_dir: str):
        torch.save({"run": self.run.state_dict(), "final": self.final, "last": self.last},
                   os.path.join(checkpoint_dir, STATE_FILE))
        return None

    def load_checkpoint(self, checkpoint):
        s = torch.load(os.path.join(checkpoint, STATE_FILE), map_location="cpu", weights_only=True)
        self.run.load_state_dict(s["run"])
        self.final, self.last = s.get("final"), dict(s.get("last") or {})

    def reset_config(self, new_config: dict) -> bool:
        self._close()
        self._start(new_config)
        return True

    def cleanup(self):
        self._close()


_PREPARED: dict[str, Prepared] = {}
PREPARED_KEEP = 2           # a sweep's trials switch between its searched and plain feature sets


def prepared(data_dir: str, features_spec: dict | None, max_train_seqs: int | None, cache_dir: str | None,
             tune_from: str = "valid") -> Prepared:
    """``prepare`` memoised per process (reused actors run many trials on the same roles)."""
    import json
    key = json.dumps([data_dir, features_spec, max_train_seqs, cache_dir, tune_from], sort_keys=True, default=str)
    if key not in _PREPARED:
        while len(_PREPARED) >= PREPARED_KEEP:   # the data of one sweep: its feature sets, no more
            del _PREPARED[next(iter(_PREPARED))]
        _PREPARED[key] = prepare(data_dir, features_spec, max_train_seqs=max_train_seqs, cache_dir=cache_dir,
                                 tune_from=tune_from)
    return _PREPARED[key]


def trial_deadline(config: dict, ctx, now: float | None = None) -> float | None:
    """When a trial must be done: the experiment's deadline, or sooner for the i-th of the n
    rotating first-round recipe trials of a coverage study: an equal share of the time left,
    ``(deadline - now) / ceil((n - i) / round_slots)`` (recipe_points.py, sweep.coverage_of)."""
    from .recipe_points import matches
    deadline = getattr(ctx, "deadline", None)
    rounds = getattr(ctx, "rounds", ())
    now = time.time() if now is None else now
    for i, point in enumerate(rounds):
        if deadline is not None and matches(config, point):
            return min(deadline, now + (deadline - now) / math.ceil((len(rounds) - i) / max(1, ctx.round_slots)))
    return deadline


@dataclass
class ModelTrialBuilder:
    """Picklable recipe: (sampled config, trial context) -> ``ModelTrial``.

    ``train_fixed`` holds TrainConfig options that are not searched (e.g.
    ``{"patience": 3}``); ``epochs`` is always ``max_epochs``, so the LR
    schedule spans the whole budget a trial may get.
    """

    data_dir: str
    max_epochs: int
    features_spec: dict | None = None
    max_train_seqs: int | None = None
    cache_dir: str | None = None
    tune_from: str = "valid"
    seed: int = 0
    train_fixed: dict = field(default_factory=dict)
    # {SEARCHED: features_spec, PLAIN: {}}: the config's FEATURES_KEY picks one (sweep.feature_sets)
    feature_sets: dict | None = None

    def features_for(self, config: dict, family: str) -> dict | None:
        """The feature pipeline spec a trial trains on."""
        if not self.feature_sets:
            return self.features_spec
        return self.feature_sets[feature_choice(config, family) or SEARCHED]

    def __call__(self, config: dict, ctx) -> "ModelTrial":
        return ModelTrial(self, config, trial_deadline(config, ctx))


class ModelTrial:
    """One sampled model trained epoch by epoch (the trial-run protocol of trial.py)."""

    def __init__(self, spec: ModelTrialBuilder, config: dict, deadline: float | None = None):
        self.spec = spec
        self.family, hp, train = split_config(config)
        features = spec.features_for(config, self.family)
        self.prep = prepared(spec.data_dir, features, spec.max_train_seqs, spec.cache_dir, spec.tune_from)
        train = {**train, **spec.train_fixed, "epochs": int(spec.max_epochs)}
        if deadline is not None:           # under a time budget: the LR anneals by the experiment's end
            left = max(deadline - time.time(), 1.0)
            train["time_limit_s"] = min(float(train.get("time_limit_s") or left), left)
        if "swa_epochs" in train:          # a searched SWA window longer than the budget: the whole budget
            train["swa_epochs"] = min(int(train["swa_epochs"]), int(spec.max_epochs))
        self.cfg = TrainConfig.from_dict(train)
        set_seed(spec.seed)
        self.model = create_model(self.family, **{**hp, "n_features": self.prep.pipeline.n_features_out})
        self.trainer = Trainer(self.model, self.cfg, self.prep.fit, self.prep.tune, None, seed=spec.seed)
        self.device = str(self.trainer.device)
        self.tags = {"seed": str(spec.seed), "feature_set": feature_set_name(features)}
        self.params = {"family": self.family, **({FEATURES_KEY: feature_choice(config, self.family) or SEARCHED}
                                                 if spec.feature_sets else {}),
                       **{f"model.{k}": v for k, v in asdict(self.model.config).items()},
                       **{f"train.{k}": v for k, v in self.cfg.to_dict().items()}}

    @property
    def params_count(self) -> int:
        return count_params(self.model)

    @property
    def done(self) -> bool:
        return self.trainer.done

    def step(self) -> dict:
        return self.trainer.run_epoch()

    def finish(self, bundle_dir: str) -> dict:
        """Best weights, the report split scored once, the bundle written; the flat final metrics."""
        res = self.trainer.finish()
        res.report = self.trainer.evaluate(self.prep.report)
        model = self.model.cpu().eval()
        metrics = member_metrics(res, self.prep, self.params_count)
        spec = build_spec(self.family, model, asdict(model.config), self.cfg, self.prep, self.spec.seed, res,
                          metrics, extra={"stage": "hpo", "trial_dir": bundle_dir})
        P = predict(model, self.prep.valid_X, self.cfg.eval_batch_size, "cpu")
        save_bundle(bundle_dir, model, spec, P[self.prep.valid_mask])
        final = {("final_" + k if k.startswith("tune_") else k): float(v) for k, v in metrics.items()}
        final["ms_per_step"] = member_cost_ms(bundle_dir)     # this member alone in the packaged engine
        return {**final, "bundle": bundle_dir}

    def state_dict(self) -> dict:
        return self.trainer.state_dict()

    def load_state_dict(self, s: dict) -> None:
        self.trainer.load_state_dict(s)
