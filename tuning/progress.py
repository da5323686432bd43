"""A Ray Tune callback that draws a stage's progress line (``lobsweep.progress.Stage``).

Trials started, running, completed, pruned by ASHA, cut after their share so
that every family gets a trial (``cut_dir``, recipe_points.py) and failed, and
the best tune score reported so far. It runs in the driver, so it costs the trials
nothing.
"""

from __future__ import annotations

import os

from ray.tune import Callback

from ..progress import Stage
from .recipe_points import cut_marker


class TuneProgress(Callback):
    def __init__(self, stage: Stage, metric: str = "tune_mean", cut_dir: str | None = None):
        self.stage, self.metric, self.cut_dir = stage, metric, cut_dir
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
        if key == "pruned" and self.cut_dir and os.path.exists(cut_marker(self.cut_dir, trial.trial_id)):
            key = "cut"                                 # after its share, for coverage: it kept its bundle
        self.stage.add("running", -1)
        self.stage.add(key)
        self.stage.event(f"{trial.trial_id} {key} after {last.get('epoch', last.get('training_iteration', 0))} epoch(s)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.stage.add("running", -1)
        self.stage.add("failed")
        self.stage.event(f"{trial.trial_id} failed")
