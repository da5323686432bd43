"""A Ray Tune callback that draws a stage's progress line (``lobsweep.progress.Stage``).

Trials started, running, completed, pruned by ASHA and failed, and the best
tune score reported so far. It runs in the driver, so it costs the trials
nothing.
"""

from __future__ import annotations

from ray.tune import Callback

from ..progress import Stage


class TuneProgress(Callback):
    def __init__(self, stage: Stage, metric: str = "tune_mean"):
        self.stage, self.metric = stage, metric
        for key in ("running", "done", "pruned", "failed"):
            stage.counts.setdefault(key, 0)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.stage.add("running")
        self.stage.event(f"{trial.trial_id} started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.stage.score(result.get(self.metric))
        self.stage.tick()

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        key = "done" if last.get("trial_status") == "completed" else \
            "failed" if last.get("trial_status") == "failed" else "pruned"
        self.stage.add("running", -1)
        self.stage.add(key)
        self.stage.event(f"{trial.trial_id} {key} after {last.get('epoch', last.get('training_iteration', 0))} epoch(s)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.stage.add("running", -1)
        self.stage.add("failed")
        self.stage.event(f"{trial.trial_id} failed")
