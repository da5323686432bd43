"""Model registry: the one way code outside ``models/`` builds a model.

Families register themselves with ``@register_model("name")`` in their own file.
A family class carries a ``Config`` dataclass (every hyperparameter a sweep may
search is a field of it) and is built as ``cls(config)``. Hyperparameters come
from sweeps (numpy scalars, floats such as ``64.0``) and from ``spec.json``
files, so ``create_model`` coerces each value to its field's declared type and
turns every bad name or value into a one-line ``UserError``.

Config classes validate themselves in ``__post_init__`` with the ``require_*``
helpers below, so a Config built directly is checked the same way.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing

from torch import nn

from lobsweep.errors import UserError

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_model(name: str):
    """Class decorator: register a model family under ``name`` and set ``cls.family``."""

    def decorate(cls):
        if name in _REGISTRY:
            raise ValueError(f"model family {name!r} is registered twice")
        config_cls = getattr(cls, "Config", None)
        if config_cls is None or not dataclasses.is_dataclass(config_cls):
            raise TypeError(f"model family {name!r} needs a nested Config dataclass")
        if not isinstance(getattr(cls, "TINY", None), dict):
            raise TypeError(f"model family {name!r} needs TINY, a dict of small hyperparameters for tests")
        cls.family = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def tiny_hparams(name: str) -> dict:
    """Small hyperparameters of family ``name`` that still exercise every code path (tests, smoke runs)."""
    return dict(_family(name).TINY)


def list_models() -> list[str]:
    """Sorted names of every registered family."""
    return sorted(_REGISTRY)


def _family(name: str) -> type[nn.Module]:
    if name not in _REGISTRY:
        raise UserError(f"unknown model family {name!r}; known families: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_config_class(name: str) -> type:
    """The ``Config`` dataclass of family ``name``."""
    return _family(name).Config


def create_model(name: str, **hparams) -> nn.Module:
    """Build family ``name`` from keyword hyperparameters (defaults for the rest)."""
    cls = _family(name)
    return cls(build_config(name, cls.Config, hparams))


def build_config(name: str, config_cls: type, hparams: dict):
    """Coerce and validate ``hparams`` into ``config_cls``; errors name the model and the field."""
    fields = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(hparams) - set(fields))
    if unknown:
        raise UserError(f"model {name!r}: unknown hyperparameter {unknown[0]!r}; valid fields: {', '.join(fields)}")
    types = typing.get_type_hints(config_cls)
    try:
        values = {k: _coerce(k, v, types[k]) for k, v in hparams.items()}
        return config_cls(**values)
    except UserError as err:
        raise UserError(f"model {name!r}: {err}") from None


def _coerce(field: str, value, kind):
    """Convert sweep/JSON values to the field type: 64.0 -> 64, np.float32 -> float; reject the rest."""
    if kind is bool:
        if isinstance(value, (bool, numbers.Integral)) and value in (0, 1):
            return bool(value)
    elif kind is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise UserError(f"{field} must be {kind.__name__}, got {value!r}")


def require_positive(config, *names: str) -> None:
    """Each named field must be > 0."""
    for n in names:
        if getattr(config, n) <= 0:
            raise UserError(f"{n} must be > 0, got {getattr(config, n)!r}")


def require_choice(config, name: str, choices) -> None:
    """Field ``name`` must be one of ``choices``."""
    if getattr(config, name) not in choices:
        raise UserError(f"{name} must be one of {', '.join(map(str, choices))}; got {getattr(config, name)!r}")


def require_range(config, name: str, low: float, high: float) -> None:
    """Field ``name`` must lie in [low, high)."""
    v = getattr(config, name)
    if not low <= v < high:
        raise UserError(f"{name} must be in [{low}, {high}), got {v!r}")


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe_models() -> list[tuple[str, int]]:
    """(family, parameter count of its default config) for every family, sorted by name."""
    return [(name, count_params(create_model(name))) for name in list_models()]
