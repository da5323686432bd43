"""Turn plain-data search spaces into Optuna distributions or Ray Tune domains.

Optuna's categorical choices accept only None/bool/int/float/str, so list or
dict choice values (``target_weights``) travel as ``"json:<json>"`` strings and
``decode_value`` restores them; Ray Tune carries them as they are.

The sweep driver hands ``to_optuna(space)`` to ``OptunaSearch(space=...)`` (a
dict of Optuna distributions, verified against ray 2.60), or, to search the
family itself, the define-by-run function from ``joint_define_by_run``: the
family is a categorical, and each family's own dimensions are suggested under
``"<family>.model.<field>"`` names so that Optuna never sees one name with two
different distributions. The shared ``train.*`` dimensions keep one name, so
TPE learns them across families.
"""

from __future__ import annotations

import json

from .dims import check_dim

ENCODED = "json:"
_PRIMITIVE = (type(None), bool, int, float, str)


def encode_value(v):
    return v if isinstance(v, _PRIMITIVE) else ENCODED + json.dumps(v)


def decode_value(v):
    """Inverse of ``encode_value``; anything not encoded passes through."""
    if isinstance(v, str) and v.startswith(ENCODED):
        return json.loads(v[len(ENCODED):])
    return v


def optuna_distribution(name: str, dim: dict):
    import optuna.distributions as od
    check_dim(name, dim)
    if dim["type"] == "choice":
        return od.CategoricalDistribution([encode_value(v) for v in dim["values"]])
    if dim["type"] == "int":
        return od.IntDistribution(int(dim["low"]), int(dim["high"]), log=bool(dim.get("log")))
    return od.FloatDistribution(float(dim["low"]), float(dim["high"]), log=bool(dim.get("log")))


def to_optuna(space: dict) -> dict:
    """``{name: dim}`` -> ``{name: optuna distribution}`` (the form OptunaSearch(space=...) takes)."""
    return {name: optuna_distribution(name, dim) for name, dim in space.items()}


def tune_domain(name: str, dim: dict):
    from ray import tune
    check_dim(name, dim)
    if dim["type"] == "choice":
        return tune.choice(list(dim["values"]))
    lo, hi, log = dim["low"], dim["high"], bool(dim.get("log"))
    if dim["type"] == "int":
        # Ray's randint excludes its upper bound; space bounds are inclusive
        return tune.lograndint(int(lo), int(hi) + 1) if log else tune.randint(int(lo), int(hi) + 1)
    return tune.loguniform(lo, hi) if log else tune.uniform(lo, hi)


def to_tune(space: dict) -> dict:
    """``{name: dim}`` -> ``{name: ray.tune domain}`` (for a Tuner's param_space)."""
    return {name: tune_domain(name, dim) for name, dim in space.items()}


def suggest(trial, name: str, dim: dict):
    """Ask an ``optuna.Trial`` for one dimension (define-by-run)."""
    if dim["type"] == "choice":
        return trial.suggest_categorical(name, [encode_value(v) for v in dim["values"]])
    if dim["type"] == "int":
        return trial.suggest_int(name, int(dim["low"]), int(dim["high"]), log=bool(dim.get("log")))
    return trial.suggest_float(name, float(dim["low"]), float(dim["high"]), log=bool(dim.get("log")))


class JointSpace:
    """Define-by-run space searching the family itself (a class, so searcher state pickles).

    ``spaces`` maps family -> its flat sweep space (``sweep_space``). Keys
    starting with ``train.`` are shared; the rest are asked as ``"<family>.<key>"``.
    Calling it with an ``optuna.Trial`` returns ``{key: family}``.
    """

    def __init__(self, spaces: dict[str, dict], key: str = "family"):
        for fam, space in spaces.items():
            for name, dim in space.items():
                check_dim(f"{fam}.{name}", dim)
        self.spaces, self.key, self.families = spaces, key, sorted(spaces)

    def __call__(self, trial) -> dict:
        fam = trial.suggest_categorical(self.key, self.families)
        for name, dim in self.spaces[fam].items():
            suggest(trial, name if name.startswith("train.") else f"{fam}.{name}", dim)
        return {self.key: fam}


def joint_define_by_run(spaces: dict[str, dict], key: str = "family") -> JointSpace:
    """``OptunaSearch(space=joint_define_by_run(spaces))`` searches the family as a categorical."""
    return JointSpace(spaces, key)
