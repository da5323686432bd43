"""The `lobsweep` command line.

Each subcommand is a small function that parses its arguments, calls one
library stage and prints a short result. Heavy imports (torch, ray, mlflow,
prefect) happen inside the subcommand so `lobsweep validate` stays fast.

A ``UserError`` anywhere ends the command with one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import UserError

COMMANDS: dict[str, tuple[str, callable, callable]] = {}


def command(name: str, help: str):
    """Register ``fn(args)`` as command ``name``; ``@arguments(configure)`` beneath it adds its arguments."""
    def wrap(fn):
        COMMANDS[name] = (help, fn, getattr(fn, "configure", lambda p: None))
        return fn
    return wrap


def arguments(configure):
    """Attach ``configure(parser)``: it adds the decorated command's arguments."""
    def wrap(fn):
        fn.configure = configure
        return fn
    return wrap


def parse_kv(items: list[str] | None, what: str = "--set") -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; values parsed as JSON when they can be."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"{what} expects key=value, got '{item}'")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def load_json_file(path: str | None, what: str):
    from ..errors import UserError, read_json
    if not path:
        return None
    if not os.path.exists(path):
        raise UserError(f"{what} file not found: {path}")
    return read_json(path)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (no usage dump) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lobsweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, (help_, fn, configure) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        configure(p)
        p.set_defaults(_fn=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        from ..envlink import reexec_if_needed
        reexec_if_needed(sys.argv[1:])          # Ray cannot start workers from a path with spaces
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..features import FeatureSpecError      # features/ is numpy-only, so it cannot subclass UserError
    try:
        args._fn(args)
    except (UserError, FeatureSpecError) as exc:
        print(f"lobsweep {args.cmd}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"lobsweep {args.cmd}: interrupted", file=sys.stderr)
        return 130
    return 0

