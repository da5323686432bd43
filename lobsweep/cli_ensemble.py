"""CLI: multi-seed retraining and ensemble selection."""

from __future__ import annotations

from .cli import _args, command
from .submission.engine_weights import PRECISIONS


def _retrain_args(p):
    p.add_argument("--from", dest="sweep", required=True, help="sweep name, sweep folder or leaderboard.json")
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--data", default=None, help="DIR (default: the data the sweep used)")
    p.add_argument("--resources", default=None, help="per retrain, e.g. cpu=1,gpu=0.5")
    p.add_argument("--ray-address", default=None)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--name", default=None)
    p.add_argument("--folds", type=int, default=None,
                   help="K: train each config and seed as a k-fold bagged member over train + the tune role")
    p.add_argument("--fold-seed", type=int, default=0, help="seed of the fold assignment (with --folds)")
    p.add_argument("--final", action="store_true",
                   help="with --folds: put the report split in the pool too (no honest score afterwards)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of a bagged retrain")


@command("retrain", "retrain the sweep's top-K configs per family with several seeds (Ray), or as k-fold bags")
@_args(_retrain_args)
def cmd_retrain(args):
    from .errors import UserError
    if args.folds is None and (args.final or args.fold_seed):
        raise UserError("--final and --fold-seed need --folds K")
    if args.folds is not None:
        return _bagged_retrain(args)
    from .tuning.retrain import run_retrain
    s = run_retrain(args.sweep, top_k=args.top_k, seeds=args.seeds, data_dir=args.data, resources=args.resources,
                    ray_address=args.ray_address, tracking_uri=args.tracking_uri, name=args.name,
                    max_epochs=args.max_epochs)
    print(f"{len(s['bundles'])} bundles in {s['bundles_dir']}; {len(s['failed'])} failed; summary {s['path']}")
    for f in s["failed"]:
        print(f"  failed {f['name']}: {f['error'][:200]}")


def _bagged_retrain(args):
    from .tuning.bag_retrain import run_bagged_retrain
    if args.resources or args.ray_address:
        print("note: a bagged retrain runs in this process; --resources/--ray-address are not used")
    s = run_bagged_retrain(args.sweep, folds=args.folds, final=args.final, fold_seed=args.fold_seed,
                           top_k=args.top_k, seeds=args.seeds, data_dir=args.data, tracking_uri=args.tracking_uri,
                           name=args.name, max_epochs=args.max_epochs, threads=args.threads)
    print(f"{len(s['bundles'])} bagged members (K={args.folds}) in {s['bundles_dir']}; {len(s['failed'])} failed; "
          f"summary {s['path']}")
    if args.final:
        print(s["note"])
    for f in s["failed"]:
        print(f"  failed {f['name']}: {f['error'][:200]}")


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
@_args(_ensemble_args)
def cmd_ensemble(args):
    from .ensemble.stage import format_table, run_ensemble
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
@_args(lambda p: (p.add_argument("dir", help="folder of bundles (searched recursively)"),
                  p.add_argument("--data", required=True, help="DIR holding the valid file the bundles must match"),
                  p.add_argument("--tracking-uri", default=None),
                  p.add_argument("--no-mlflow", action="store_true"),
                  p.add_argument("--no-event", action="store_true")))
def cmd_import(args):
    import sys
    from .ensemble.imports import import_checkpoints
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
