"""Streaming sequence models: every family has forward(x) and step(x_t, state) with equal results.

Code outside this package knows families only by name:
``create_model("gru", hidden=64)``, ``list_models()``, ``get_config_class("ssm")``.
Importing the family modules below registers them.
"""

from . import gru, gru_attention, lstm, ssm, transformer  # noqa: F401  (registration side effect)
from .registry import count_params, create_model, describe_models, get_config_class, list_models, register_model

__all__ = ["count_params", "create_model", "describe_models", "get_config_class", "list_models", "register_model"]
