"""Train one member end to end and write its checkpoint bundle.

This is the unit that `lobsweep train`, every sweep trial's final model and
every retrain share: prepare the roles -> create the model -> fit -> predict
the whole valid file -> bundle (+ an MLflow run when asked).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import numpy as np

from ..data.metric import score_masked
from ..models import count_params, create_model
from .bundle import Bundle, load_bundle, save_bundle
from .prepare import Prepared, oracle_scores, prepare
from .trainer import TrainConfig, TrainResult, fit, predict, set_seed

log = logging.getLogger("lobsweep.training")

# The floor a budgeted retrain writes into its pool (the best recipe's members): the ensemble reads it.
FLOOR_FILE = "floor.json"


def feature_set_name(features: dict | None) -> str:
    """A short, stable name of a feature pipeline spec: its groups plus a hash, e.g. ``book+temporal-3fa2c1``."""
    import hashlib
    features = features or {}
    spec = features.get("spec", features) if "format" in features else features
    groups = [g for g in ("book", "trade", "temporal", "interactions") if spec.get(g)]
    digest = hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=3).hexdigest()
    return ("+".join(groups) if groups else "raw") + f"-{digest}"


def fraction_of_oracle(report: dict | None, oracle: dict | None) -> float | None:
    if not report or not oracle or "report" not in oracle or oracle["report"]["mean"] <= 0:
        return None
    return float(report["mean"] / oracle["report"]["mean"])


def member_metrics(res: TrainResult, prep: Prepared, n_params: int) -> dict:
    """The flat metric dict every stage logs for a member."""
    m = {f"tune_{k}": float(v) for k, v in res.tune.items()}
    if res.report:
        m.update({f"report_{k}": float(v) for k, v in res.report.items()})
    frac = fraction_of_oracle(res.report, oracle_scores(prep))
    if frac is not None:
        m["fraction_of_oracle"] = frac
    m.update(params_count=float(n_params), train_seconds=float(res.seconds), best_epoch=float(res.best_epoch))
    return m


def build_spec(family: str, model, hparams_full: dict, cfg: TrainConfig, prep: Prepared, seed: int,
               res: TrainResult, metrics: dict, extra: dict | None = None) -> dict:
    return {
        "family": family, "config": hparams_full, "train_config": cfg.to_dict(),
        "features": json.loads(prep.pipeline.to_json()),
        "seed": int(seed), "data": dict(prep.info), "history": res.history, "best_epoch": res.best_epoch,
        "swa_used": res.swa_used, "metrics": metrics, "n_params": int(count_params(model)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {}),
    }


def model_config_dict(model) -> dict:
    from dataclasses import asdict
    return asdict(model.config)


def train_member(data_dir: str, family: str, out_dir: str, *, hparams: dict | None = None,
                 train_cfg: dict | TrainConfig | None = None, features_spec: dict | None = None, seed: int = 0,
                 prep: Prepared | None = None, progress: bool = False, tracking: dict | None = None,
                 prepare_kwargs: dict | None = None, extra_spec: dict | None = None,
                 measure: Callable[[str], dict] | None = None) -> Bundle:
    """Train ``family`` on ``data_dir`` and write a bundle to ``out_dir``.

    ``tracking`` (``{"experiment": name, "uri": ..., "tags": {...}, "parent_run_id": ...}``)
    turns on MLflow logging of params, per-epoch metrics, the curve plot and the bundle.
    ``measure(bundle_path)`` gives more metrics for that run, measured on the written bundle
    (the layers above pass the packaged engine's cost, ``submission.cost.cost_metrics``).
    """
    cfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig.from_dict(train_cfg)
    if prep is None:
        prep = prepare(data_dir, features_spec, **(prepare_kwargs or {}))
    set_seed(seed)
    model = create_model(family, **{**(hparams or {}), "n_features": prep.pipeline.n_features_out})
    res = fit(model, cfg, prep.fit, prep.tune, prep.report, seed=seed, progress=progress)
    model = model.cpu().eval()
    P = predict(model, prep.valid_X, cfg.eval_batch_size, "cpu")
    valid_pred = P[prep.valid_mask]
    arrays = {}
    if prep.info["split"]["tune_from"] == "train":      # the tune rows live in train: keep their predictions
        arrays["tune_pred"] = predict(model, prep.tune.X, cfg.eval_batch_size, "cpu")[prep.tune.mask]
    metrics = member_metrics(res, prep, count_params(model))
    spec = build_spec(family, model, model_config_dict(model), cfg, prep, seed, res, metrics, extra_spec)
    save_bundle(out_dir, model, spec, valid_pred, arrays)
    bundle = load_bundle(out_dir)
    if tracking:
        log_member(bundle, tracking, measure(bundle.path) if measure else None)
    return bundle


def log_member(bundle: Bundle, tracking: dict, metrics: dict | None = None) -> str:
    """One MLflow run for a trained member: params, curves, metrics (and ``metrics``), plot, the bundle."""
    import mlflow
    from .. import tracking as trk
    exp_id = trk.ensure_experiment(tracking["experiment"], tracking.get("uri"))
    spec = bundle.spec
    tags = {"family": spec["family"], "stage": tracking.get("stage", tracking["experiment"]),
            "seed": str(spec["seed"]), "feature_set": feature_set_name(spec["features"]),
            **(tracking.get("tags") or {})}
    parent = tracking.get("parent_run_id")
    with mlflow.start_run(experiment_id=exp_id, run_name=tracking.get("run_name") or bundle.name,
                          tags={**tags, **({"mlflow.parentRunId": parent} if parent else {})}) as run:
        mlflow.log_params(trk.flat_params({"config": spec["config"], "train": spec["train_config"]}))
        trk.log_history(spec["history"])
        mlflow.log_metrics({k: float(v) for k, v in spec["metrics"].items()})
        mlflow.log_metrics({k: float(v) for k, v in (metrics or {}).items()})
        trk.log_figure(trk.curve_figure(spec["history"], f"{spec['family']} seed {spec['seed']}"), "training_curve.png")
        mlflow.log_artifacts(bundle.path, artifact_path="bundle")
        return run.info.run_id


def predict_bundle(bundle_dir: str, data_path: str) -> np.ndarray:
    """Predictions [rows, 2] for the need-prediction rows of ``data_path``, from the bundle alone."""
    from ..data.loader import load
    b = load_bundle(bundle_dir)
    data = load(data_path, require_targets=False)
    pipe = b.pipeline()
    batch = int(b.spec.get("train_config", {}).get("eval_batch_size", 64))
    X = pipe.transform(data.X)
    models = b.build_models()                                # K fold models of a bagged member: averaged
    P = sum(predict(m, X, batch, "cpu") for m in models) / len(models)
    return P[data.mask]


def score_bundle_on(bundle_dir: str, data_path: str) -> dict:
    from ..data.loader import load
    data = load(data_path)
    pred = predict_bundle(bundle_dir, data_path)
    return score_masked(data.Y, _unmask(pred, data.mask), data.mask)


def _unmask(pred_rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape + (2,), dtype=np.float32)
    out[mask] = pred_rows
    return out
