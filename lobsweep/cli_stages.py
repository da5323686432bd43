"""CLI commands of the modelling stages (models, training, search, ensemble, packaging)."""

from __future__ import annotations

from .cli import _args, command


@command("models", "list the registered model families and their default parameter counts")
@_args(lambda p: None)
def cmd_models(args):
    from .models import describe_models
    print(f"{'family':<16}{'params (default config)':>24}")
    for name, n in describe_models():
        print(f"{name:<16}{n:>24,}")
