"""The recipes in a sweep: their points go first, and ASHA never stops the kept ones.

``with_recipes`` widens each family's space to hold its recipes
(search_spaces/recipes.py) and lists their points; ``first_points`` puts them
ahead of the caller's; ``recipe_values`` are the ones ``KeepPointsASHA`` never
stops; ``mark_recipes`` tags the trial that ran each recipe.

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

import logging

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ..search_spaces.adapter import decode_value

log = logging.getLogger("lobsweep.tuning")


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


def points_for(points: list | None, family: str | None) -> list | None:
    """Points to evaluate that belong to ``family`` (those without a family go everywhere)."""
    if not points or family is None:
        return points
    out = [{k: v for k, v in p.items() if k != "family"} for p in points if p.get("family", family) == family]
    return out or None


def with_recipes(meta: dict, spaces: dict) -> dict:
    """Widen each family's space to hold its recipes; their points (first trials) go into meta."""
    from ..search_spaces.recipes import fit_recipes
    points, notes = [], []
    for fam in meta["families"]:
        spaces[fam], pts, lines = fit_recipes(fam, spaces[fam], joint=bool(meta["joint"]))
        points += [{"family": fam, **p} if "family" not in p else p for p in pts]
        notes += lines
    if meta["joint"]:          # one study: the plain default, every family's own default, the literature's
        points.sort(key=lambda p: (not str(p["recipe"]).startswith("plain-"),
                                   not str(p["recipe"]).startswith("default-")))
    meta["recipe_points"] = points
    meta["recipe_notes"] = notes
    for line in notes:
        log.info("sweep %s: %s", meta["name"], line)
    return spaces


def first_points(meta: dict, fam: str | None) -> list | None:
    """Recipes first, then the caller's points; per family (without the family key) unless joint."""
    recipe = [{k: v for k, v in p.items() if k != "recipe"} for p in meta.get("recipe_points") or []]
    if fam is not None:
        recipe = points_for(recipe, fam) or []
    return (recipe + (points_for(meta["points_to_evaluate"], fam) or [])) or None


def recipe_values(meta: dict, fam: str | None) -> list[dict]:
    """The recipe points ASHA never stops, as values a trial config holds.

    Per family: all of them. A joint study is where the budget must flow to what works, so
    there only the first (``plain-gru`` when the GRU is searched: the plain model the sweep
    must beat) is kept; the other recipes are first trials that ASHA may stop like any other.
    """
    pts = [{k: v for k, v in p.items() if k != "recipe"} for p in meta.get("recipe_points") or []]
    return pts[:1] if fam is None else [{k: v for k, v in p.items() if k != "family"}
                                        for p in pts if p["family"] == fam]


def mark_recipes(recs: list[dict], meta: dict) -> None:
    """Tag the trial that ran each recipe (its config holds every key of the recipe's point)."""
    for p in meta.get("recipe_points") or []:
        want = {k: v for k, v in p.items() if k not in ("recipe", "family")}
        for r in recs:
            if r["family"] == p["family"] and matches(r["config"], want):
                r["recipe"] = p["recipe"]
                break
