"""CLI commands of the ensemble stage: ``lobsweep ensemble`` and ``lobsweep import-checkpoints``."""

from __future__ import annotations

from ..submission.engine_weights import PRECISIONS
from .core import arguments, command


def _ensemble_args(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoints", default=None, help="folder of checkpoint bundles (searched recursively)")
    src.add_argument("--from-mlflow", default=None, metavar="EXPERIMENT", help="use the bundle artifacts of its runs")
    p.add_argument("--data", default=None, help="DIR holding the valid file (default: from the bundles)")
    p.add_argument("--budget-minutes", type=float, default=60.0, help="time limit for 1500 test sequences")
    p.add_argument("--safety", type=float, default=2.0, help="the budget is divided by this margin")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="weight storage of the zip to be packaged: members cost what the engine measures in it")
    p.add_argument("--methods", default="uniform,greedy,weighted")
    p.add_argument("--out", default=None, help="ensemble spec JSON to write")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--no-mlflow", action="store_true")


@command("ensemble", "choose ensemble members and weights on tune, report on report, write the spec")
@arguments(_ensemble_args)
def cmd_ensemble(args):
    from ..ensemble.stage import format_table, run_ensemble
    s = run_ensemble(checkpoints=args.checkpoints, from_mlflow=args.from_mlflow, data_dir=args.data,
                     budget_minutes=args.budget_minutes, safety=args.safety, out=args.out,
                     methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
                     tracking_uri=args.tracking_uri, use_mlflow=not args.no_mlflow, precision=args.precision)
    for r in s["rejected"]:
        print(f"rejected {r['bundle']}: {r['reason']}")
    print(format_table(s["spec"]))
    print(f"spec: {s['spec_path']}")
    if "champion" in s:
        print("registered as champion" if s["champion"] else
              f"registered version {s['registry_version']}; champion unchanged")


@command("import-checkpoints", "validate bundles trained elsewhere, add them to the member pool, trigger the ensemble")
@arguments(lambda p: (p.add_argument("dir", help="folder of bundles (searched recursively)"),
                  p.add_argument("--data", required=True, help="DIR holding the valid file the bundles must match"),
                  p.add_argument("--tracking-uri", default=None),
                  p.add_argument("--no-mlflow", action="store_true"),
                  p.add_argument("--no-event", action="store_true")))
def cmd_import(args):
    import sys
    from ..ensemble.imports import import_checkpoints
    s = import_checkpoints(args.dir, args.data, tracking_uri=args.tracking_uri, use_mlflow=not args.no_mlflow,
                           emit=not args.no_event)
    for a in s["accepted"]:
        print(f"imported {a['source']} -> {a['bundle']}")
    for r in s["rejected"]:
        print(f"rejected {r['bundle']}: {r['reason']}")
    if s["event"]:
        print(f"event lobsweep.checkpoints.imported sent ({s['event']}); the ensemble deployment will rerun")
    elif s["accepted"] and not args.no_event:
        print("PREFECT_API_URL is not set: no event sent; run `lobsweep ensemble --checkpoints "
              f"{s['pool']}` or `prefect deployment run ensemble/default`")
    if not s["accepted"]:
        sys.exit(2)
    if s["rejected"]:
        sys.exit(1)
