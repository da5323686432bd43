"""ASHA that never stops the sweep's recipe trials (its known-good first points).

A recipe trial still runs under ASHA like any trial: its result at every rung
is recorded and raises the bar that other trials must clear. It is only never
*stopped* early, because a recipe that ASHA stops leaves no bundle, and then
the sweep can end below the score the recipe reaches alone. With its trials
kept, the leaderboard holds every recipe trained to max_t, so the sweep's best
on the tune split is at least its best recipe's (a floor issue 13's budgeted
search builds on). bench/results/recipes.md shows the case that motivated it.

A trial is a kept one when its config (decoded) equals a kept point on every
key of that point.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ..search_spaces.adapter import decode_value


def matches(config: dict, point: dict) -> bool:
    """Does a trial's (possibly adapter-encoded) config hold every value of ``point``?"""
    return all(k in config and decode_value(config[k]) == decode_value(v) for k, v in point.items())


class KeepPointsASHA(ASHAScheduler):
    """``ASHAScheduler`` whose STOP decisions before ``max_t`` are overruled for ``keep`` points."""

    def __init__(self, keep: list[dict], **kwargs):
        super().__init__(**kwargs)
        self._keep = [dict(p) for p in keep]
        self._kept_ids: set[str] = set()

    def _kept(self, trial) -> bool:
        if trial.trial_id not in self._kept_ids and any(matches(trial.config, p) for p in self._keep):
            self._kept_ids.add(trial.trial_id)
        return trial.trial_id in self._kept_ids

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if (action == TrialScheduler.STOP and result.get(self._time_attr, self._max_t) < self._max_t
                and self._kept(trial)):
            self._num_stopped -= 1                 # recorded in its rung, but not stopped
            return TrialScheduler.CONTINUE
        return action
