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

from .errors import UserError

COMMANDS: dict[str, tuple[str, callable, callable]] = {}


def command(name: str, help: str):
    """Register ``fn(args)``; the decorated function's ``.args`` adds its arguments."""
    def wrap(fn):
        COMMANDS[name] = (help, fn, getattr(fn, "configure", lambda p: None))
        return fn
    return wrap


def _args(configure):
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


# ---------------------------------------------------------------- data
@command("validate", "check a contract parquet file; one-line summary or one-line error")
@_args(lambda p: (p.add_argument("path"),
                  p.add_argument("--no-targets-ok", action="store_true",
                                 help="accept a test-style file without t0/t1"),
                  p.add_argument("--repair-features", action="store_true",
                                 help="forward-fill NaN/inf features instead of failing")))
def cmd_validate(args):
    from .data.loader import load
    data = load(args.path, require_targets=not args.no_targets_ok, repair_features=args.repair_features)
    extra = f", {data.repaired} non-finite feature values repaired" if data.repaired else ""
    print(f"ok: {data.summary()}{extra}")


@command("synth", "write a synthetic dataset (train/valid/oracle parquet) with a known oracle")
@_args(lambda p: (p.add_argument("--out", required=True),
                  p.add_argument("--n-train", type=int, default=512),
                  p.add_argument("--n-valid", type=int, default=128),
                  p.add_argument("--seq-len", type=int, default=1000),
                  p.add_argument("--seed", type=int, default=0),
                  p.add_argument("--variant", default="default",
                                 help="planted signal: default, or shifted (other time scales and interactions)"),
                  p.add_argument("--valid-shift", type=float, default=0.0,
                                 help="share (0..1) of valid sequences from a regime train never has")))
def cmd_synth(args):
    from .data.synth import write_dataset
    for name in ("n_train", "n_valid"):
        if getattr(args, name) < 2:
            raise UserError(f"--{name.replace('_', '-')} must be at least 2")
    info = write_dataset(args.out, n_train=args.n_train, n_valid=args.n_valid,
                         seq_len=args.seq_len, seed=args.seed, variant=args.variant,
                         valid_shift=args.valid_shift)
    print(json.dumps({k: v for k, v in info.items() if not isinstance(v, (bytes,))}, default=str))


# ---------------------------------------------------------------- scoring
@command("score", "score a submission zip step by step, exactly as the competition does")
@_args(lambda p: (p.add_argument("zip"), p.add_argument("--data", required=True,
                  help="a valid-style parquet file, or a DIR holding valid.parquet"),
                  p.add_argument("--json", action="store_true"),
                  p.add_argument("--max-rows", type=int, default=None)))
def cmd_score(args):
    from .submission.scorer import score_zip
    data = args.data
    if os.path.isdir(data):
        data = os.path.join(data, "valid.parquet")
    res = score_zip(args.zip, data, progress=not args.json and sys.stderr.isatty(), max_rows=args.max_rows)
    pred = res.pop("predictions", None)
    from .submission.package import zip_reference_predictions
    reference = zip_reference_predictions(args.zip)      # None for zips whose bundles are not here
    if reference is not None and pred is not None and reference.shape[0] >= pred.shape[0]:
        res["parity_max_abs_diff"] = float(abs(pred - reference[:pred.shape[0]]).max())
    if args.json:
        print(json.dumps(res, default=float))
        return
    line = (f"weighted_pearson={res['weighted_pearson']:.4f} (t0={res['t0']:.4f}, t1={res['t1']:.4f}) "
            f"rows={res['rows']} {res['ms_per_row']:.3f} ms/row, "
            f"projected {res['projected_minutes_1500_seq']:.1f} min for 1500 sequences")
    if "oracle_fraction" in res:
        line += f", {100 * res['oracle_fraction']:.1f}% of oracle"
    if "parity_max_abs_diff" in res:
        line += f", streamed vs offline max |diff| {res['parity_max_abs_diff']:.1e}"
    print(line)


@command("baseline", "fit the trivial EMA-imbalance baseline and write its submission zip")
@_args(lambda p: (p.add_argument("--data", required=True, help="DIR holding train.parquet"),
                  p.add_argument("--out", required=True, help="zip path to write")))
def cmd_baseline(args):
    from .submission.baseline import fit_baseline, write_baseline_zip
    from .data.loader import data_paths
    params = fit_baseline(data_paths(args.data)["train"])
    write_baseline_zip(params, args.out)
    print(f"wrote {args.out}")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (no usage dump) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    _load_stage_commands()
    parser = _Parser(prog="lobsweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, (help_, fn, configure) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        configure(p)
        p.set_defaults(_fn=fn)
    return parser


STAGE_COMMAND_MODULES = ("cli_stages", "cli_features", "cli_package", "cli_tuning", "cli_ensemble", "cli_flows")


def _load_stage_commands() -> None:
    """Commands of later stages live in their own modules; importing registers them."""
    import importlib
    for mod in STAGE_COMMAND_MODULES:
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{mod}":
                raise


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        from .envlink import reexec_if_needed
        reexec_if_needed(sys.argv[1:])          # Ray cannot start workers from a path with spaces
    parser = build_parser()
    args = parser.parse_args(argv)
    from .features import FeatureSpecError      # features/ is numpy-only, so it cannot subclass UserError
    try:
        args._fn(args)
    except (UserError, FeatureSpecError) as exc:
        print(f"lobsweep {args.cmd}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"lobsweep {args.cmd}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
