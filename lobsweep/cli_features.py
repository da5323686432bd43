"""CLI command of the feature-search stage (tuning/feature_search.py)."""

from __future__ import annotations

from .cli import _args, command


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
@_args(_feature_search_args)
def cmd_feature_search(args):
    from .tuning.feature_search import parse_budget, run_feature_search
    from .tuning.ray_setup import parse_resources
    budget = parse_budget(args.budget)
    parse_resources(args.resources)          # a bad value fails before any work
    res = run_feature_search(args.data, name=args.name, resources=args.resources, ray_address=args.ray_address,
                             tracking_uri=args.tracking_uri, run_dir=args.run_dir, seed=args.seed, **budget)
    gain = res["proxy_tune_mean"] - res["raw_proxy_tune_mean"]
    print(f"winner {res['groups']} ({res['n_features']} features): proxy tune {res['proxy_tune_mean']:.4f} "
          f"vs raw features {res['raw_proxy_tune_mean']:.4f} ({gain:+.4f}); "
          f"{res['n_completed']}/{res['n_candidates']} candidates completed")
    print(f"spec: {res['best_features']}")
