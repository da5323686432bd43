"""A budgeted search that has stopped finding better configs hands its time on.

Under a time budget the HPO stage is one share of a plan (flows/budget.py):
what it does not use passes to retraining, where seeds of the best configs
become ensemble members. On small data the search often finds nothing better
than its first trials (the recipes) after they finish; spending the rest of
its share on more pruned explorations buys nothing that seeds would not buy
better (bench/results/automl_lift.md, shifted data: 14 of 20 minutes of HPO,
40 of 45 trials pruned, and the best tune score, 0.3173, was the same recipe
trial's as in the 5-minute run).

``StagnationStop`` is the searcher wrapper (a ``ConcurrencyLimiter``, so Tune
does not wrap it again) that ends a search early:

- never before every point to evaluate (the recipes) has been suggested;
- never before ``after`` x the experiment's budget has gone by;
- then, once the best result of any trial (any epoch) has improved by less than
  ``min_delta`` over the last ``after`` x the elapsed time, it suggests no new
  trial. The trials already running go on under ASHA and keep their bundles as
  usual, so the kept recipe (the floor) still finishes.

It counts as stopped only through ``Searcher.FINISHED``: Tune then ends the
experiment when the running trials end. The stop is written to ``events_path``
(``stagnated_at_s``, the best score and when it was reached) for the sweep's
summary: a file, because Tune may run a copy of the searcher (a restored
experiment, or the whole Tuner as a remote actor under a ``ray://`` address).
A restored search restarts its clock where it stopped (``get_state``).
"""

from __future__ import annotations

import json
import logging
import os
import time

from ray.tune.search import ConcurrencyLimiter, Searcher

from ..progress import clock, say

log = logging.getLogger("lobsweep.tuning")


def stagnated(history: list[tuple[float, float]], now: float, budget_s: float, after: float,
              min_delta: float) -> bool:
    """``history``: (seconds since start, best so far) each time the best rose. True when at least
    ``after * budget_s`` has gone by and the best rose by less than ``min_delta`` over the last
    ``after`` fraction of that time."""
    if not history or now < after * budget_s:
        return False
    since = now * (1.0 - after)
    before = [b for t, b in history if t <= since]
    if not before:                 # the first result came within the window: still learning
        return False
    return history[-1][1] - before[-1] < min_delta


class StagnationStop(ConcurrencyLimiter):
    """``ConcurrencyLimiter`` that returns ``Searcher.FINISHED`` once the search has stagnated."""

    def __init__(self, searcher: Searcher, max_concurrent: int, *, budget_s: float, after: float,
                 n_points: int = 0, min_delta: float = 1e-3, events_path: str | None = None, label: str = "hpo"):
        super().__init__(searcher, max_concurrent=max_concurrent)
        if not 0 < after < 1:
            raise ValueError(f"stagnation must be in (0, 1), got {after}")
        self.budget_s, self.after, self.min_delta = float(budget_s), float(after), float(min_delta)
        self.n_points, self.suggested, self.label = int(n_points), 0, label
        self.events_path = events_path
        self.started = time.time()
        self.history: list[tuple[float, float]] = []
        self.finished = False

    def _sign(self) -> float:
        return -1.0 if self.mode == "min" else 1.0

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._observe(result)
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result and not error:
            self._observe(result)
        return super().on_trial_complete(trial_id, result=result, error=error)

    def _observe(self, result: dict) -> None:
        value = result.get(self.metric)
        if value is None or value != value:          # missing or NaN
            return
        value = self._sign() * float(value)
        if not self.history or value > self.history[-1][1]:
            self.history.append((time.time() - self.started, value))

    def suggest(self, trial_id: str):
        if self.finished:
            return Searcher.FINISHED
        now = time.time() - self.started
        if self.suggested >= self.n_points and stagnated(self.history, now, self.budget_s, self.after,
                                                         self.min_delta):
            self.finished = True
            best_at, best = self.history[-1][0], self._sign() * self.history[-1][1]
            write_events(self.events_path, {"stagnated_at_s": now, "best": best, "best_at_s": best_at})
            say(f"[{self.label}] the search stagnated at {clock(now)} of {clock(self.budget_s)} (best "
                f"{best:.4f} since {clock(best_at)}): no new trials; the running "
                f"ones finish and the time left passes on")
            return Searcher.FINISHED
        out = super().suggest(trial_id)
        if out not in (None, Searcher.FINISHED):
            self.suggested += 1
        return out

    # Tune stores the search twice: pickled with the Tuner (``__getstate__``) and through
    # ``get_state`` in its experiment checkpoint (applied last on restore). Both keep the clock
    # as the time elapsed, so a search resumed after a pause does not count the pause.
    def get_state(self) -> dict:
        return {**super().get_state(), "started": time.time() - self.started}

    def set_state(self, state: dict) -> None:
        super().set_state(state)               # ConcurrencyLimiter's: the state into __dict__
        self.started = time.time() - float(state["started"])

    def __getstate__(self):
        return {**self.__dict__, "started": time.time() - self.started}

    __setstate__ = set_state


def write_events(path: str | None, events: dict) -> None:
    if path:
        with open(path + ".tmp", "w") as fh:
            json.dump(events, fh)
        os.replace(path + ".tmp", path)


def read_events(path: str) -> dict | None:
    return json.load(open(path)) if os.path.exists(path) else None
