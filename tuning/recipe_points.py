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

**Every family gets its recipe trial** (issue 13), also when the budget is too
small for every recipe to train in full. In a joint study under a budget
(``sweep.coverage_of``):

- one recipe per family goes first (the *first round*);
- with two slots or more, the first of them (the plain default: the kept floor,
  the model the sweep must beat at equal compute) keeps a slot and trains as it
  needs; the other first-round trials rotate through the remaining slots, each
  annealing its LR by an equal share of the time left when it starts
  (``trial.trial_deadline``), not by the study's deadline, and ending there.
  ASHA may still prune them on merit at a rung. With one slot all of them rotate;
- as a guarantee, the scheduler *cuts* any rotating trial that has trained
  ``share_s`` (the study's budget x rotating slots / rotating families) while
  some family still has no trial. A cut trial is not beaten: it writes its best
  weights so far as its bundle, as a trial cut by the time budget does
  (``stopped_at_epoch_k``; trial.py reads the marker the scheduler leaves in
  ``cut_dir``).

At large budgets the shares are longer than a recipe needs and change nothing.
"""

from __future__ import annotations

import logging
import os

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ..search_spaces.adapter import decode_value

log = logging.getLogger("lobsweep.tuning")


def matches(config: dict, point: dict) -> bool:
    """Does a trial's (possibly adapter-encoded) config hold every value of ``point``?"""
    return all(k in config and decode_value(config[k]) == decode_value(v) for k, v in point.items())


def cut_marker(cut_dir: str, trial_id: str) -> str:
    """The file that tells a stopped trial it was cut for coverage (keep its bundle), not pruned."""
    return os.path.join(cut_dir, trial_id)


class KeepPointsASHA(ASHAScheduler):
    """``ASHAScheduler`` whose STOP decisions before ``max_t`` are overruled for ``keep`` points.

    ``coverage = {"families": [...], "share_s": seconds, "cut_dir": path}`` (a joint
    study under a time budget): while some family has no trial, a trial that has trained
    ``share_s`` seconds is cut (see the module docstring).
    """

    _coverage: dict | None = None                  # class defaults: a scheduler pickled before coverage

    def __init__(self, keep: list[dict], coverage: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self._keep = [dict(p) for p in keep]
        self._kept_ids: set[str] = set()
        self._coverage = dict(coverage) if coverage else None
        self._started: set[str] = set()

    def _kept(self, trial) -> bool:
        if trial.trial_id not in self._kept_ids and any(matches(trial.config, p) for p in self._keep):
            self._kept_ids.add(trial.trial_id)
        return trial.trial_id in self._kept_ids

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if self._coverage:
            self._started.add(str(trial.config.get("family")))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if (action == TrialScheduler.STOP and result.get(self._time_attr, self._max_t) < self._max_t
                and self._kept(trial)):
            self._num_stopped -= 1                 # recorded in its rung, but not stopped
            action = TrialScheduler.CONTINUE
        if action == TrialScheduler.CONTINUE and not result.get("done") and self._cut_for_coverage(trial, result):
            self._num_stopped += 1
            return TrialScheduler.STOP
        return action

    def waiting_families(self) -> list[str]:
        """Families of the study that have no trial yet (empty without coverage)."""
        if not self._coverage:
            return []
        return [f for f in self._coverage["families"] if f not in self._started]

    def _cut_for_coverage(self, trial, result: dict) -> bool:
        """Cut ``trial`` when it has had its fair share while some family waits; leaves the marker."""
        waiting = self.waiting_families()
        if not waiting or float(result.get("time_total_s", 0.0)) < float(self._coverage["share_s"]):
            return False
        if self._coverage.get("exempt") and matches(trial.config, self._coverage["exempt"]):
            return False                           # the floor keeps its slot
        os.makedirs(self._coverage["cut_dir"], exist_ok=True)
        with open(cut_marker(self._coverage["cut_dir"], trial.trial_id), "w") as fh:
            fh.write(f"cut after {float(result['time_total_s']):.0f} s so that {', '.join(waiting)} get a trial\n")
        log.info("trial %s cut after %.0f s (its share of the budget): %s have no trial yet", trial.trial_id,
                 float(result["time_total_s"]), ", ".join(waiting))
        return True


def points_for(points: list | None, family: str | None) -> list | None:
    """Points to evaluate that belong to ``family`` (those without a family go everywhere)."""
    if not points or family is None:
        return points
    out = [{k: v for k, v in p.items() if k != "family"} for p in points if p.get("family", family) == family]
    return out or None


def first_per_family(points: list[dict]) -> list[dict]:
    """The first point of each family, in order (a joint study's first round, see with_recipes)."""
    first: dict = {}
    for p in points:
        first.setdefault(p["family"], p)
    return list(first.values())


def with_recipes(meta: dict, spaces: dict) -> dict:
    """Widen each family's space to hold its recipes; their points (first trials) go into meta.

    Where the features are a dimension (``sweep.feature_sets``), the plain default recipe trains
    on the plain inputs, as ``lobsweep train`` does, and every other recipe on the searched ones."""
    from ..search_spaces.recipes import fit_recipes
    from ..search_spaces import FEATURES_KEY, PLAIN, SEARCHED
    points, notes = [], []
    for fam in meta["families"]:
        spaces[fam], pts, lines = fit_recipes(fam, spaces[fam], joint=bool(meta["joint"]))
        points += [{"family": fam, **p} if "family" not in p else p for p in pts]
        notes += lines
    for p in points:           # with the features a dimension: the plain default on plain inputs
        if FEATURES_KEY in spaces[p["family"]]:
            p[f"{p['family']}.{FEATURES_KEY}" if meta["joint"] else FEATURES_KEY] = \
                PLAIN if str(p["recipe"]).startswith("plain-") else SEARCHED
    if meta["joint"]:          # one study: the plain default, every family's own default, the literature's
        points.sort(key=lambda p: (not str(p["recipe"]).startswith("plain-"),
                                   not str(p["recipe"]).startswith("default-")))
        first = first_per_family(points)  # then one recipe per family ahead of the rest: all start early
        points = first + [p for p in points if not any(p is f for f in first)]
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
