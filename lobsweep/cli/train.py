"""CLI commands of the training stage: ``lobsweep models``, ``lobsweep train`` and ``lobsweep predict``."""

from __future__ import annotations

from .core import arguments, command, load_json_file, parse_kv


@command("models", "list the registered model families and their default parameter counts")
@arguments(lambda p: None)
def cmd_models(args):
    from ..models import describe_models
    print(f"{'family':<16}{'params (default config)':>24}")
    for name, n in describe_models():
        print(f"{name:<16}{n:>24,}")


def _train_args(p):
    p.add_argument("--family", default=None, help="model family (required unless --recipe gives it)")
    p.add_argument("--recipe", default=None, help="start from a named recipe (`lobsweep recipes`); "
                                                  "--set/--train-set/--epochs/--features still override")
    p.add_argument("--data", required=True, help="DIR holding train.parquet and valid.parquet")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="model hyperparameter (a Config field), repeatable")
    p.add_argument("--train-set", action="append", metavar="KEY=VALUE",
                   help="training option (lr, batch_size, loss, crop_len, ...), repeatable")
    p.add_argument("--features", default=None, help="feature pipeline spec JSON file (default: raw z-norm)")
    p.add_argument("--max-train-seqs", type=int, default=None)
    p.add_argument("--tune-from", choices=("valid", "train"), default="valid")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--no-mlflow", action="store_true")


@command("train", "train one model and write its checkpoint bundle")
@arguments(_train_args)
def cmd_train(args):
    import sys
    from ..training.member import train_member
    from ..models import get_config_class
    from ..errors import UserError
    recipe = {"model": {}, "train": {}, "features": None}
    if args.recipe:
        from ..search_spaces.recipes import get_recipe
        recipe = get_recipe(args.recipe)   # unknown name -> one line naming the known ones
        if args.family and args.family != recipe["family"]:
            raise UserError(f"recipe {args.recipe} is a {recipe['family']} recipe, not {args.family}")
        args.family = recipe["family"]
    if not args.family:
        raise UserError("--family is required (or --recipe NAME)")
    hp = {**recipe["model"], **parse_kv(args.set)}
    get_config_class(args.family)          # unknown family -> one clear line before any work
    tcfg = {**recipe["train"], **parse_kv(args.train_set, "--train-set")}
    if args.epochs is not None:
        tcfg["epochs"] = args.epochs
    from ..submission.cost import cost_metrics
    from ..training.trainer import TrainConfig
    TrainConfig.from_dict(tcfg)            # bad options fail before loading data
    features = load_json_file(args.features, "features spec") if args.features else recipe["features"]
    if features is not None and "spec" in features and isinstance(features["spec"], dict):
        features = features["spec"]
    tracking = None if args.no_mlflow else {"experiment": "train", "uri": args.tracking_uri, "stage": "train"}
    b = train_member(args.data, args.family, args.out, hparams=hp, train_cfg=tcfg, features_spec=features,
                     seed=args.seed, progress=sys.stderr.isatty(), tracking=tracking,
                     extra_spec={"recipe": args.recipe} if args.recipe else None,
                     measure=cost_metrics,
                     prepare_kwargs={"max_train_seqs": args.max_train_seqs, "tune_from": args.tune_from,
                                     "cache_dir": _cache_dir()})
    m = b.spec["metrics"]
    line = (f"wrote {b.path}: tune mean {m['tune_mean']:.4f}, report mean {m.get('report_mean', float('nan')):.4f}"
            f" (t0 {m.get('report_t0', float('nan')):.4f}, t1 {m.get('report_t1', float('nan')):.4f})")
    if "fraction_of_oracle" in m:
        line += f", {100 * m['fraction_of_oracle']:.1f}% of oracle"
    print(line + f", best epoch {b.spec['best_epoch']}")


def _cache_dir():
    import os
    from ..tracking import run_dir
    d = os.path.join(run_dir(), "cache")
    os.makedirs(d, exist_ok=True)
    return d


@command("predict", "reproduce a bundle's predictions on a data file from the bundle alone")
@arguments(lambda p: (p.add_argument("bundle"), p.add_argument("--data", required=True),
                  p.add_argument("--out", default=None, help="write predictions [rows, 2] to this .npy")))
def cmd_predict(args):
    import os
    import numpy as np
    from ..training.member import predict_bundle
    data = os.path.join(args.data, "valid.parquet") if os.path.isdir(args.data) else args.data
    pred = predict_bundle(args.bundle, data)
    if args.out:
        tmp = args.out + ".tmp.npy"
        np.save(tmp, pred)
        os.replace(tmp, args.out)
    ref = os.path.join(args.bundle, "valid_pred.npy")
    same = ""
    if os.path.exists(ref):
        stored = np.load(ref)
        if stored.shape == pred.shape:
            same = f", max |diff| vs valid_pred.npy = {float(np.abs(stored - pred).max()):.3g}"
    print(f"{pred.shape[0]} rows predicted{same}")
