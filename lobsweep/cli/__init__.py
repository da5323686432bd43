"""The `lobsweep` command line: one module per stage, registered here explicitly.

``core`` holds the parser and ``main``; each stage module registers its
commands with ``@command`` when imported. The imports below are the
registration (a renamed or missing module fails here, loudly), and their order
is the order of ``lobsweep --help``.
"""

from . import data, train, tune, ensemble, package, flows  # noqa: F401  (registers the commands)
from .core import build_parser, main, parse_kv

__all__ = ["build_parser", "main", "parse_kv"]
