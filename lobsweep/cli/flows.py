"""``lobsweep full-search``: the orchestrated loop, run in-process (no Prefect server needed).

The arguments are checked (``flows.profiles.resolve``) before Prefect is even
imported, so a mistake costs one line and exit code 2, not a server start-up.
Without ``PREFECT_API_URL`` Prefect starts a temporary local server; its
start-up timeout and analytics are set here before the import, as they must
be on this machine (see shared/TOOLING-FACTS.md).
"""

from __future__ import annotations

import os

from .core import arguments, command


OPTIONS = {   # CLI flag -> (flows parameter, type, help)
    "--time-budget": ("time_budget", str, "one wall-clock budget for the whole run (300, 90s, 5m, 2h), shared out "
                                          "over the stages by a printed plan; counts stay as caps"),
    "--families": ("families", str, "comma-separated families, or all (default)"),
    "--num-samples": ("num_samples", int, "HPO trials per family"),
    "--max-epochs": ("max_epochs", int, "epochs an HPO trial may get"),
    "--hpo-budget": ("hpo_budget_s", float, "seconds for the whole HPO sweep, shared out over the families"),
    "--max-train-seqs": ("max_train_seqs", int, "subsample the fit sequences during HPO"),
    "--stagnation": ("stagnation", float, "with a time budget, end the HPO once its best has not risen for this "
                                          "fraction of the time gone (0 = off; the demo preset's is 0.5); its time "
                                          "passes to seeds"),
    "--feature-samples": ("feature_samples", int, "candidate feature pipelines to try"),
    "--feature-budget": ("feature_budget_s", float, "seconds for the feature search"),
    "--top-k": ("top_k", int, "configs per family to retrain"),
    "--seeds": ("seeds", int, "seeds per retrained config"),
    "--retrain-epochs": ("retrain_epochs", int, "epochs of each retrain (default: the trial's)"),
    "--folds": ("folds", int, "retrain each config and seed as a k-fold bagged member of K models"),
    "--budget-minutes": ("budget_minutes", float, "scoring-time budget of the ensemble (competition: 60)"),
    "--safety": ("safety", float, "safety factor on the measured cost of the ensemble"),
    "--precision": ("precision", str, "weights in the zip: float32 (default), float16, int8 or int8-ort, behind "
                                      "a score gate (lobsweep package --precision); costs measured per mode"),
    "--resources": ("resources", str, "per trial / retrain, e.g. cpu=1,gpu=0.5"),
    "--ray-address": ("ray_address", str, "join this Ray cluster (default: $RAY_ADDRESS or a local one)"),
    "--tracking-uri": ("tracking_uri", str, "MLflow tracking URI (default: sqlite in the run folder)"),
}


def _full_search_args(p):
    p.add_argument("--data", default=None, help="DIR with train.parquet and valid.parquet (default: synthetic)")
    p.add_argument("--profile", default="demo", help="demo (minutes on 2 CPU cores) or full (GPU cluster, real data)")
    p.add_argument("--run-dir", default=None, help="run folder (default: $LOBSWEEP_RUN_DIR or ./runs)")
    for flag, (dest, typ, help_) in OPTIONS.items():
        p.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
    p.add_argument("--no-feature-search", action="store_true", help="use the default feature pipeline")
    p.add_argument("--no-score", action="store_true", help="skip scoring the zip step by step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show Ray's, Optuna's and Prefect's own output live (by default it goes to the run "
                        "folder's logs/ and the terminal shows one progress line per stage)")


def flow_kwargs(args) -> dict:
    """The full-search flow's parameters from parsed arguments."""
    kw = {dest: getattr(args, dest) for dest, _, _ in OPTIONS.values()}
    return {"data_dir": args.data, "profile": args.profile, "run_dir": args.run_dir,
            "feature_search": not args.no_feature_search, "score": not args.no_score, "seed": args.seed, **kw}


def prefect_environment(run_dir: str, verbose: bool) -> None:
    """Settings Prefect reads at import: in-process server, results in the run folder, quiet logs."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", os.path.join(run_dir, "prefect-results"))
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["LOBSWEEP_RUN_DIR"] = run_dir


@command("full-search", "the whole loop as a Prefect flow: features, HPO, retrain, ensemble, zip, score")
@arguments(_full_search_args)
def cmd_full_search(args):
    import time
    t0 = time.perf_counter()
    from ..flows.profiles import resolve
    kw = flow_kwargs(args)
    settings = resolve(**kw)                      # every check, before Prefect or any work
    prefect_environment(settings.run_dir, args.verbose)
    from ..progress import quiet_libraries, say
    log_path = os.path.join(settings.run_dir, "logs", time.strftime("full-search-%Y%m%d-%H%M%S.log"))
    if not args.verbose:
        say(f"full-search: Ray's, Optuna's and Prefect's own output goes to {log_path} (-v shows it live)")
    try:
        with quiet_libraries(log_path, args.verbose):
            from ..flows.full_search import full_search
            out = full_search(**kw)
    except BaseException:
        if not args.verbose:
            say(f"full-search failed; the libraries' own output is in {log_path}")
        raise
    wall = time.perf_counter() - t0
    stage_s = sum(st["stage_s"] for st in out["steps"])
    say(f"wall time {wall:.0f} s, of which stage work {stage_s:.0f} s and orchestration {wall - stage_s:.0f} s "
        f"(start-up, imports, Prefect bookkeeping and caching)")
