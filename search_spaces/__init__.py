"""Search spaces: plain data keyed by the real ``Config`` / ``TrainConfig`` fields.

One module per family (``gru.py``, ``lstm.py``, ...) holds ``SPACE``, a dict
``{field: dimension}``; ``common.py`` holds the optimiser, loss and
training-window dimensions every family shares. ``adapter.py`` turns a space
into Optuna or Ray Tune objects; nothing here imports either.

A *sweep space* is the flat union the driver searches:
    {"model.<Config field>": dim, ..., "train.<TrainConfig field>": dim, ...}
and ``split_config`` turns a sampled config back into (model hparams, train options).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from . import common
from .dims import SpaceError, check_dim

MODEL_PREFIX, TRAIN_PREFIX = "model.", "train."


def list_spaces() -> list[str]:
    """Families that have a search space: every registered model family."""
    from ..models import list_models
    return list_models()


def family_space(family: str) -> dict:
    """A copy of ``family``'s model space (UserError for a family without one)."""
    from ..models import get_config_class
    get_config_class(family)                      # unknown family -> the registry's one-line error
    try:
        mod = importlib.import_module(f"{__name__}.{family}")
    except ModuleNotFoundError:
        raise SpaceError(f"model family {family!r} has no search space (add search_spaces/{family}.py)") from None
    return copy.deepcopy(mod.SPACE)


def space_modules() -> dict:
    """{family: module} for every ``search_spaces/<family>.py``: plain data, ``SPACE`` (the sweep's
    model space), ``DEFAULT`` (recipe ``default-<family>``) and ``SMOKE`` (the smoke profile's space)."""
    import pkgutil
    shared = {"adapter", "common", "dims", "recipes"}
    return {m.name: importlib.import_module(f"{__name__}.{m.name}")
            for m in pkgutil.iter_modules(__path__) if m.name not in shared}


def common_space() -> dict:
    """A copy of the shared optimiser / loss / training-window space."""
    return copy.deepcopy(common.SPACE)


def check_space(space: dict, config_cls: type, what: str) -> None:
    """Every key of ``space`` must be a field of the dataclass ``config_cls``."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for key, dim in space.items():
        if key not in fields:
            raise SpaceError(f"{what}: {key!r} is not a field of {config_cls.__name__} "
                             f"(fields: {', '.join(sorted(fields))})")
        check_dim(f"{what}.{key}", dim)


def sweep_space(family: str, model: dict | None = None, train: dict | None = None) -> dict:
    """The flat, validated space of one family's sweep.

    ``model`` / ``train`` replace the default family and common spaces (keys
    absent from a replacement keep the Config defaults).
    """
    from ..models import get_config_class
    from ..training.trainer import TrainConfig
    model = family_space(family) if model is None else copy.deepcopy(model)
    train = common_space() if train is None else copy.deepcopy(train)
    check_space(model, get_config_class(family), f"{family} space")
    check_space(train, TrainConfig, "training space")
    return {**{MODEL_PREFIX + k: v for k, v in model.items()}, **{TRAIN_PREFIX + k: v for k, v in train.items()}}


def split_config(config: dict, family: str | None = None) -> tuple[str, dict, dict]:
    """A sampled flat config -> (family, model hparams, train options).

    Keys may carry a ``"<family>."`` prefix (joint sweeps over families, see
    ``adapter.joint_define_by_run``); other families' keys are ignored.
    Values encoded by the adapter (``"json:[1.0, 0.5]"``) are decoded.
    """
    from .adapter import decode_value
    family = family or config.get("family")
    if not family:
        raise SpaceError("a sweep config needs a 'family'")
    model, train = {}, {}
    for key, value in config.items():
        if key.startswith(family + "."):
            key = key[len(family) + 1:]
        if key.startswith(MODEL_PREFIX):
            model[key[len(MODEL_PREFIX):]] = decode_value(value)
        elif key.startswith(TRAIN_PREFIX):
            train[key[len(TRAIN_PREFIX):]] = decode_value(value)
    return family, model, train


FEATURES_KEY = "features"     # a sweep dimension when a sweep has searched features (tuning/sweep.feature_sets)
SEARCHED, PLAIN = "searched", "plain"


def feature_choice(config: dict, family: str) -> str | None:
    """The feature set a trial config names (``<family>.features`` in a joint study), if any."""
    from .adapter import decode_value
    value = config.get(f"{family}.{FEATURES_KEY}", config.get(FEATURES_KEY))
    return None if value is None else str(decode_value(value))


__all__ = ["FEATURES_KEY", "PLAIN", "SEARCHED", "feature_choice", "SpaceError", "check_dim", "check_space", "common_space", "family_space", "list_spaces", "space_modules",
           "split_config", "sweep_space"]
