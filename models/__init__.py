"""Streaming sequence models: every family has forward(x) and step(x_t, state) with equal results.

Code outside this package knows families only by name:
``create_model("gru", hidden=64)``, ``list_models()``, ``get_config_class("ssm")``,
``tiny_hparams("lstm")``. Every module of this package except the shared ones
(``SHARED``) is one family's file, and importing it registers the family
(``@register_model``), so a new family is one new file here.
"""

import importlib
import pkgutil

from .registry import (count_params, create_model, describe_models, get_config_class, list_models, register_model,
                       tiny_hparams)

SHARED = ("layers", "registry")

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in SHARED:
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["count_params", "create_model", "describe_models", "get_config_class", "list_models", "register_model",
           "tiny_hparams"]
