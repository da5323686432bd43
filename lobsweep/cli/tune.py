"""CLI commands of the search stage: ``lobsweep sweep``, ``recipes``, ``leaderboard``,
``feature-search`` and ``retrain``.

Every argument is checked (families, resources, budgets, data folder,
features file) before Ray starts, so a mistake costs one line, not a cluster
start-up.
"""

from __future__ import annotations

from .core import arguments, command, load_json_file


def _sweep_args(p):
    p.add_argument("--data", default=None, help="DIR holding train.parquet and valid.parquet")
    p.add_argument("--families", default=None, help="comma-separated model families, or 'all'")
    p.add_argument("--num-samples", type=int, default=8, help="trials per family (in all with --joint)")
    p.add_argument("--max-epochs", type=int, default=8, help="epochs a trial may get (ASHA max_t)")
    p.add_argument("--grace-period", type=int, default=1, help="epochs before ASHA may stop a trial")
    p.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA keeps 1/rf of trials per rung")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="seconds for the whole sweep, shared out over the families")
    p.add_argument("--resources", default=None, help="per trial, e.g. cpu=1,gpu=0.5 (default cpu=1,gpu=0)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what fits)")
    p.add_argument("--features", default=None, help="feature pipeline spec JSON (from the feature search)")
    p.add_argument("--max-train-seqs", type=int, default=None, help="subsample the fit sequences")
    p.add_argument("--joint", action="store_true", help="search the family itself as one more dimension")
    p.add_argument("--stagnation", type=float, default=0.0, metavar="F",
                   help="with --time-budget: no new trials once the best has not risen for this fraction of the "
                        "time gone, after this fraction of the budget (0 = off)")
    p.add_argument("--top-k", type=int, default=3, help="leaderboard entries per family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="sweep name (default: sweep-<date>-<time>)")
    p.add_argument("--resume", default=None, metavar="NAME", help="continue the sweep NAME after a crash or kill")
    p.add_argument("--extend", default=None, metavar="NAME",
                   help="continue the finished sweep NAME: --num-samples more trials per family, searcher "
                        "warm-started from its trials (none rerun)")
    p.add_argument("--set-space", action="append", metavar="KEY=DIM",
                   help="with --extend: narrow or change a dimension, e.g. model.layers=[3,4] or "
                        "gru.train.lr='{\"type\": \"float\", \"low\": 5e-4, \"high\": 2e-3, \"log\": true}'")
    p.add_argument("--no-recipes", action="store_true",
                   help="do not enqueue the families' named recipes as first trials (see `lobsweep recipes`)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS or local)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite in the run folder)")
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument("--run-dir", default=None, help="run folder (default: $LOBSWEEP_RUN_DIR or ./runs)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of the table")


def _features(path):
    spec = load_json_file(path, "features spec")
    if isinstance(spec, dict) and isinstance(spec.get("spec"), dict):
        spec = spec["spec"]
    if spec is not None:
        from ..features import FeaturePipeline
        FeaturePipeline.from_spec(spec)              # a bad spec fails here, in one line
    return spec


@command("sweep", "hyperparameter search: Ray Tune ASHA + Optuna TPE over model families, into a leaderboard")
@arguments(_sweep_args)
def cmd_sweep(args):
    import contextlib
    import json
    import sys
    from ..errors import UserError
    from ..tuning.ray_setup import parse_resources
    from ..tuning.sweep import run_sweep
    resources = parse_resources(args.resources)
    verbose = 1 if sys.stderr.isatty() else 0
    if args.set_space and not args.extend:
        raise UserError("--set-space only applies with --extend NAME (a new sweep takes its spaces from the families)")
    if args.extend:
        if args.resume:
            raise UserError("give --resume NAME or --extend NAME, not both")
        kwargs = dict(extend=args.extend, num_samples=args.num_samples, set_space=args.set_space,
                      time_budget_s=args.time_budget, resources=resources if args.resources else None)
        data, families = None, None
    elif args.resume:
        kwargs = dict(name=args.resume, resume=True, resources=resources if args.resources else None)
        data, families = None, None
    else:
        if not args.data:
            raise UserError("--data DIR is required (or --resume NAME)")
        if not args.families:
            raise UserError("--families is required: a comma-separated list such as gru,lstm, or all")
        data, families = args.data, args.families          # run_sweep checks both before Ray starts
        if args.stagnation and args.time_budget is None:
            raise UserError("--stagnation needs --time-budget: it ends a budgeted search early")
        kwargs = dict(name=args.name, num_samples=args.num_samples, max_epochs=args.max_epochs,
                      grace_period=args.grace_period, reduction_factor=args.reduction_factor,
                      time_budget_s=args.time_budget, resources=resources, max_concurrent=args.max_concurrent,
                      features_spec=_features(args.features), max_train_seqs=args.max_train_seqs,
                      tracking_uri=args.tracking_uri, seed=args.seed, top_k=args.top_k, joint=args.joint,
                      track=not args.no_mlflow, recipes=not args.no_recipes, stagnation=args.stagnation)
    with contextlib.redirect_stdout(sys.stderr):          # Ray's progress output; stdout is the result
        out = run_sweep(data, families, run_dir=args.run_dir, ray_address=args.ray_address, verbose=verbose,
                        **kwargs)
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k not in ("records", "table")}, default=str))
        return
    print(out["table"])
    note = " (time budget reached)" if out["budget_exhausted"] else ""
    print(f"{out['n_trials']} trials in {out['seconds']:.0f} s{note}; leaderboard: {out['leaderboard']}")


@command("recipes", "list the named recipes (complete model + training + feature configs) a sweep tries first")
@arguments(lambda p: (p.add_argument("--family", default=None, help="only this family's recipes"),
                  p.add_argument("--json", action="store_true", help="every recipe in full, as JSON")))
def cmd_recipes(args):
    import json
    from ..models import get_config_class
    from ..search_spaces.recipes import get_recipe, list_recipes
    if args.family:
        get_config_class(args.family)                    # unknown family -> one line
    names = list_recipes(args.family)
    if args.json:
        print(json.dumps({n: get_recipe(n) for n in names}, indent=1))
        return
    print(f"{'recipe':<22}{'family':<15}about")
    for n in names:
        r = get_recipe(n)
        print(f"{n:<22}{r['family']:<15}{r['about']}")
    print("train one: lobsweep train --recipe NAME --data DIR --out DIR (flags still override)")


@command("leaderboard", "print a stage's leaderboard from MLflow (best tune score first, report beside it), or a sweep's top-K")
@arguments(lambda p: (p.add_argument("sweep", nargs="?", default=None,
                                 help="a sweep name, folder or leaderboard.json (omit to read MLflow by --stage)"),
                  p.add_argument("--stage", default="hpo", choices=("feature-search", "hpo", "retrain", "ensemble",
                                                                     "submission")),
                  p.add_argument("--top", type=int, default=20),
                  p.add_argument("--tracking-uri", default=None),
                  p.add_argument("--run-dir", default=None),
                  p.add_argument("--json", action="store_true")))
def cmd_leaderboard(args):
    import json
    from ..errors import UserError
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    if args.sweep:
        from ..tuning.leaderboard import format_leaderboard
        from ..tuning.leaderboard import load_leaderboard
        board = load_leaderboard(args.sweep, args.run_dir)
        print(json.dumps(board, indent=1, default=str) if args.json else format_leaderboard(board))
        return
    from ..tracking import format_rows, stage_leaderboard
    rows = stage_leaderboard(args.stage, args.top, args.tracking_uri, args.run_dir)
    print(json.dumps(rows, indent=1, default=str) if args.json else
          f"{args.stage} leaderboard, best tune score first (report shown, never used to rank)\n" + format_rows(rows))


def _feature_search_args(p):
    p.add_argument("--data", required=True, help="DIR holding train.parquet and valid.parquet")
    p.add_argument("--budget", default=None, metavar="KEY=VALUE,...",
                   help="samples=8,epochs=3,seqs=64,crop=256,time=10m (any subset; a bare number = samples)")
    p.add_argument("--name", default=None, help="search name (default: fs-<timestamp>)")
    p.add_argument("--run-dir", default=None, help="run folder (default: $LOBSWEEP_RUN_DIR or ./runs)")
    p.add_argument("--resources", default=None, help="per candidate, e.g. cpu=1 or cpu=1,gpu=0.25")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS or local)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--seed", type=int, default=0)


@command("feature-search", "search feature pipelines with a small-GRU proxy and write the winning spec")
@arguments(_feature_search_args)
def cmd_feature_search(args):
    from ..tuning.feature_search import parse_budget, run_feature_search
    from ..tuning.ray_setup import parse_resources
    budget = parse_budget(args.budget)
    parse_resources(args.resources)          # a bad value fails before any work
    res = run_feature_search(args.data, name=args.name, resources=args.resources, ray_address=args.ray_address,
                             tracking_uri=args.tracking_uri, run_dir=args.run_dir, seed=args.seed, **budget)
    gain = res["proxy_tune_mean"] - res["raw_proxy_tune_mean"]
    print(f"winner {res['groups']} ({res['n_features']} features): proxy tune {res['proxy_tune_mean']:.4f} "
          f"vs raw features {res['raw_proxy_tune_mean']:.4f} ({gain:+.4f}); "
          f"{res['n_completed']}/{res['n_candidates']} candidates completed")
    print(f"spec: {res['best_features']}")


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
@arguments(_retrain_args)
def cmd_retrain(args):
    from ..errors import UserError
    if args.folds is None and (args.final or args.fold_seed):
        raise UserError("--final and --fold-seed need --folds K")
    if args.folds is not None:
        return _bagged_retrain(args)
    from ..tuning.retrain import run_retrain
    s = run_retrain(args.sweep, top_k=args.top_k, seeds=args.seeds, data_dir=args.data, resources=args.resources,
                    ray_address=args.ray_address, tracking_uri=args.tracking_uri, name=args.name,
                    max_epochs=args.max_epochs)
    print(f"{len(s['bundles'])} bundles in {s['bundles_dir']}; {len(s['failed'])} failed; summary {s['path']}")
    for f in s["failed"]:
        print(f"  failed {f['name']}: {f['error'][:200]}")


def _bagged_retrain(args):
    from ..tuning.bag_retrain import run_bagged_retrain
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
