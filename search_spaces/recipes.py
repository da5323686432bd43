"""Named recipes: complete, known-good configs that a sweep tries first and ``lobsweep train`` can run.

A recipe is plain data, like the spaces: a family, ``model`` (its ``Config``
fields), ``train`` (``TrainConfig`` fields) and ``features`` (a
``FeaturePipeline`` spec), plus one line on where it comes from. Fields a
recipe leaves out take the dataclass defaults, so ``complete()`` writes every
field out and a recipe means the same thing when a default moves.

The public record of the competition (leaderboard unless marked valid):

- ``organiser-baseline``: the organisers' GRU, 3 layers over the 32 raw inputs
  with a linear head; no input projection, MLP head or normalisation (0.2595
  valid). The width is not given in that record; 64 here is an assumption.
  The training loop (MSE, Adam 1e-3, constant LR, batch 64) is likewise the
  plainest reading, not a copy.
- ``vanilla-gru-3x64``: the same shape with the recipe that scored 0.2764 to
  0.2814 as a single model: MSE, AdamW lr 1e-3 without weight decay,
  ReduceLROnPlateau, batch 192, patience 12, whole sequences.
- ``pearson-gru-4x128``: 4 layers of 128 trained on the negative |y|-weighted
  Pearson loss (0.2830 single model, against 0.2732 with weighted MSE).
- ``plain-gru``: the GRU exactly as ``lobsweep train --family gru`` trains it
  (every ``GRUConfig`` and ``TrainConfig`` default, z-normalised raw inputs):
  the plain model a budgeted search must beat, so it is that search's first,
  never-pruned trial (its floor, see tuning/retrain.py).
- ``default-<family>``: lob-sweep's starting point for each family: mid-sized,
  whole sequences, the combo loss (weighted MSE plus the Pearson term), a
  cosine schedule that fits any epoch budget, z-normalised raw inputs.

In a sweep a recipe's model and training options are enqueued as a first
trial (``fit_recipes``); the sweep's epoch budget and fixed training options
still apply to it, like to every trial. So does the sweep's feature pipeline,
except where a feature search ran and the features are a dimension
(tuning/sweep.feature_sets): there ``plain-gru`` trains on the plain inputs, as
``lobsweep train`` does, and the other recipes on the searched ones. ASHA records
its scores but never stops it (tuning/recipe_points.py), so a sweep's leaderboard
always holds its recipes and cannot end below the best of them on tune.
"""

from __future__ import annotations

import copy
import dataclasses

from ..errors import UserError

RAW = {"normalize": {"method": "none"}}     # the 32 inputs as they are (NaN/inf still handled)
ZNORM: dict = {}                            # the 32 inputs z-normalised on the fit split

RECIPES = {
    "plain-gru": {
        "family": "gru",
        "about": "the plain default: lobsweep train --family gru with every default (2x128, MLP head, wmse)",
        "model": {},
        "train": {},
        "features": ZNORM,
    },
    "organiser-baseline": {
        "family": "gru",
        "about": "organisers' baseline: 3-layer GRU on raw inputs, linear head, no projection (0.2595 valid)",
        "model": {"hidden": 64, "layers": 3, "input_proj": False, "norm": "none", "head": "linear",
                  "dropout": 0.0},
        "train": {"loss": "mse", "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant", "batch_size": 64,
                  "epochs": 20, "patience": 5, "crop_len": 0, "grad_clip": 1.0},
        "features": RAW,
    },
    "vanilla-gru-3x64": {
        "family": "gru",
        "about": "vanilla 3x64 GRU: raw inputs, MSE, AdamW 1e-3 wd 0, plateau LR, batch 192, patience 12 "
                 "(0.2764-0.2814 LB)",
        "model": {"hidden": 64, "layers": 3, "input_proj": False, "norm": "none", "head": "linear",
                  "dropout": 0.0},
        "train": {"loss": "mse", "lr": 1e-3, "weight_decay": 0.0, "schedule": "plateau", "batch_size": 192,
                  "epochs": 30, "patience": 12, "crop_len": 0, "grad_clip": 1.0},
        "features": RAW,
    },
    "pearson-gru-4x128": {
        "family": "gru",
        "about": "4x128 GRU on the negative |y|-weighted Pearson loss (0.2830 LB; 0.2732 with weighted MSE)",
        "model": {"hidden": 128, "layers": 4, "input_proj": False, "norm": "none", "head": "linear",
                  "dropout": 0.0},
        "train": {"loss": "pearson", "lr": 1e-3, "weight_decay": 0.0, "schedule": "plateau", "batch_size": 192,
                  "epochs": 30, "patience": 12, "crop_len": 0, "grad_clip": 1.0},
        "features": RAW,
    },
}


# What every ``default-<family>`` recipe trains with; a family's DEFAULT["train"] overrides it.
DEFAULT_TRAIN = {"loss": "combo", "pearson_coef": 0.5, "lr": 2e-3, "weight_decay": 1e-2, "schedule": "cosine",
                 "batch_size": 32, "epochs": 12, "patience": 4, "crop_len": 0}


def _family_defaults() -> dict:
    """``default-<family>`` for every family whose space module holds a DEFAULT."""
    from . import space_modules
    return {f"default-{fam}": {"family": fam, "about": mod.DEFAULT["about"], "model": dict(mod.DEFAULT["model"]),
                               "train": {**DEFAULT_TRAIN, **mod.DEFAULT.get("train", {})}, "features": ZNORM}
            for fam, mod in space_modules().items() if hasattr(mod, "DEFAULT")}


RECIPES.update(_family_defaults())


def list_recipes(family: str | None = None) -> list[str]:
    """Recipe names, in definition order (only ``family``'s when given)."""
    return [n for n, r in RECIPES.items() if family is None or r["family"] == family]


def get_recipe(name: str) -> dict:
    """A complete copy of recipe ``name``: every model and training field written out."""
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)} (see `lobsweep recipes`)")
    return complete(RECIPES[name])


def complete(recipe: dict) -> dict:
    """``recipe`` with the dataclass defaults filled in (n_features and device are the run's, not the recipe's)."""
    from ..models import get_config_class
    from ..training.trainer import TrainConfig
    r = copy.deepcopy(recipe)
    model_fields = {f.name: f.default for f in dataclasses.fields(get_config_class(r["family"]))}
    train_fields = TrainConfig().to_dict()
    r["model"] = {k: r["model"].get(k, v) for k, v in model_fields.items() if k != "n_features"}
    r["train"] = {k: r["train"].get(k, v) for k, v in train_fields.items()
                  if k not in ("device", "amp", "eval_batch_size")}
    return r


SWEEP_OWNED = ("train.epochs",)     # a sweep trial's epochs are the sweep's budget (ASHA's max_t)


def _flat(recipe: dict) -> dict:
    from . import MODEL_PREFIX, TRAIN_PREFIX
    flat = {**{MODEL_PREFIX + k: v for k, v in recipe["model"].items()},
            **{TRAIN_PREFIX + k: v for k, v in recipe["train"].items()}}
    return {k: v for k, v in flat.items() if k not in SWEEP_OWNED}


def _widen(space: dict, key: str, value, default) -> bool:
    """Make ``space[key]`` hold ``value`` (in place); False when a range cannot (a log scale and value <= 0)."""
    dim = space.get(key)
    if dim is None:
        if value != default:               # unsearched: the trial would get the default otherwise
            space[key] = {"type": "choice", "values": [default, value]}
    elif dim["type"] == "choice":
        if value not in dim["values"]:
            dim["values"] = list(dim["values"]) + [value]
    elif not dim["low"] <= value <= dim["high"]:
        if dim.get("log") and value <= 0:
            return False
        dim["low"], dim["high"] = min(dim["low"], value), max(dim["high"], value)
    return True


def fit_recipes(family: str, space: dict, joint: bool = False) -> tuple[dict, list[dict], list[str]]:
    """``family``'s recipes as first points of its flat sweep ``space`` (keys ``model.*`` / ``train.*``).

    Returns (space, points, notes). The space is a copy widened to hold every
    recipe value (a choice gains it, a range stretches to it, an unsearched
    field that a recipe sets off its default becomes a choice of the two), so
    the enqueued trial runs exactly the recipe and the searcher learns from
    it. A recipe the space cannot hold (a log range and a value <= 0) is left
    out. Each change and omission is one line of ``notes``. With ``joint`` the
    points use the joint space's names (``family``, ``<family>.model.*``;
    ``train.*`` are shared).
    """
    from . import TRAIN_PREFIX
    space = copy.deepcopy(space)
    defaults = _flat(complete({"family": family, "model": {}, "train": {}}))
    points, notes = [], []
    for name in list_recipes(family):
        flat = _flat(get_recipe(name))
        trial = copy.deepcopy(space)
        bad = [k for k, v in flat.items() if not _widen(trial, k, v, defaults[k])]
        if bad:
            notes.append(f"recipe {name} left out: the space's log range of {bad[0]} cannot hold {flat[bad[0]]!r}")
            continue
        notes += [f"{k}: widened for recipe {name}" for k in trial if trial[k] != space.get(k)]
        space = trial
        points.append((name, flat))
    out = []
    for name, flat in points:
        point = {"recipe": name, **{k: flat[k] for k in space if k in flat}}
        if joint:
            point = {"recipe": name, "family": family,
                     **{(k if k.startswith(TRAIN_PREFIX) else f"{family}.{k}"): v
                        for k, v in point.items() if k != "recipe"}}
        out.append(point)
    return space, out, notes
