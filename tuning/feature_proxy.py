"""The proxy score of a feature spec: a small GRU, a few epochs, a train subsample, the tune split.

Shapes: N sequences, T steps, F features of the spec's pipeline.

``ProxyRun`` follows the trial-run protocol of trial.py, so the same code
scores a candidate inside a Ray trial (via ``FeatureTrialBuilder``) and the
raw-features baseline in the driver. Data comes from ``training.prepare``:
the pipeline is fitted on the *fit* subsample only, every epoch reports the
official metric on *tune* (``tune_mean``, what ASHA and Optuna see), and the
*report* split is never passed to the Trainer or scored, so no proxy number
can depend on it.

Every candidate gets the same model, optimiser, crops, epochs, subsample and
seed, so scores differ only through the features. ``proxy_tune_mean`` is the
best tune score over the epochs run so far (the Trainer keeps those weights).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import UserError
from .feature_space import describe, groups_on, spec_from_config

WEIGHTS_FILE, META_FILE = "proxy_weights.pt", "proxy.json"


@dataclass
class ProxySettings:
    """What every candidate is trained with. Defaults keep one candidate to seconds on a CPU core."""

    max_epochs: int = 3
    max_train_seqs: int | None = 64
    crop_len: int = 256               # random crops: 4x less work per epoch than whole sequences
    burn_in: int = 64                 # leading crop steps that only warm the GRU state
    # 64 sequences -> 8 optimiser steps per epoch; with 16 the epoch-1 scores ASHA prunes on were
    # about 3x noisier across seeds on the default synthetic data
    batch_size: int = 8
    lr: float = 5e-3                  # few steps, so a higher rate than a full training run
    model: dict = field(default_factory=lambda: {"hidden": 32, "layers": 1, "head": "linear"})
    seed: int = 0                     # weights, batches, crops and the train subsample
    tune_from: str = "valid"

    def check(self) -> None:
        def need(ok: bool, msg: str):
            if not ok:
                raise UserError(f"feature-search budget: {msg}")
        need(int(self.max_epochs) >= 1, f"epochs must be >= 1, got {self.max_epochs}")
        need(self.max_train_seqs is None or int(self.max_train_seqs) >= 1,
             f"train sequences must be >= 1, got {self.max_train_seqs}")
        need(int(self.crop_len) == 0 or int(self.crop_len) > int(self.burn_in),
             f"crop must be 0 (whole sequences) or > the burn-in of {self.burn_in} steps, got {self.crop_len}")

    def train_config(self):
        from ..training.trainer import TrainConfig
        return TrainConfig.from_dict({
            "epochs": int(self.max_epochs), "batch_size": int(self.batch_size), "lr": float(self.lr),
            "crop_len": int(self.crop_len), "burn_in": int(self.burn_in),
            "patience": int(self.max_epochs)})      # no early stop inside a candidate: ASHA decides


def spec_params(spec: dict) -> dict:
    """MLflow params of a candidate: the spec flattened (``temporal.inputs`` ...) and its groups."""
    from ..tracking import flat_params
    return {"groups": describe(spec), **flat_params({g: spec[g] for g in spec if spec[g] is not None})}


class ProxyRun:
    """One feature spec scored by the proxy, epoch by epoch (the trial-run protocol of trial.py)."""

    def __init__(self, data_dir: str, spec: dict, proxy: ProxySettings, cache_dir: str | None = None):
        import torch
        from ..models import create_model
        from ..training.prepare import prepare
        from ..training.trainer import Trainer, set_seed
        self.spec, self.proxy = spec, proxy
        self.prep = prepare(data_dir, spec, max_train_seqs=proxy.max_train_seqs, subsample_seed=proxy.seed,
                            cache_dir=cache_dir, tune_from=proxy.tune_from)
        self.n_features = int(self.prep.pipeline.n_features_out)
        set_seed(proxy.seed)
        self.model = create_model("gru", n_features=self.n_features, **proxy.model)
        self.trainer = Trainer(self.model, proxy.train_config(), self.prep.fit, self.prep.tune, None,
                               seed=proxy.seed)
        self.device = str(self.trainer.device)
        self.params = spec_params(spec)
        self._torch = torch

    @property
    def done(self) -> bool:
        return self.trainer.done

    def step(self) -> dict:
        rec = self.trainer.run_epoch()
        return {**rec, "n_features": self.n_features, "proxy_tune_mean": float(self.trainer.best_score)}

    def run_all(self, on_epoch=None) -> dict:
        """Every epoch in this process (the raw baseline); returns ``finish``'s metrics without a bundle."""
        while not self.done:
            rec = self.step()
            if on_epoch is not None:
                on_epoch(rec)
        return self.finish(None)

    def finish(self, bundle_dir: str | None) -> dict:
        """Best weights restored; metrics, and the proxy model + spec written to ``bundle_dir``."""
        res = self.trainer.finish()
        out = {"proxy_tune_mean": float(res.tune["mean"]), "proxy_tune_t0": float(res.tune["t0"]),
               "proxy_tune_t1": float(res.tune["t1"]), "n_features": self.n_features,
               "best_epoch": int(res.best_epoch)}
        if bundle_dir is None:
            return out
        os.makedirs(bundle_dir, exist_ok=True)
        self._torch.save(self.model.cpu().state_dict(), os.path.join(bundle_dir, WEIGHTS_FILE))
        meta = {"spec": self.spec, "model": asdict(self.model.config), "proxy": asdict(self.proxy),
                "metrics": out, "history": res.history, "split": self.prep.info}
        with open(os.path.join(bundle_dir, META_FILE), "w") as f:
            json.dump(meta, f, indent=1, default=str)
        return {**out, "bundle": bundle_dir}

    def state_dict(self) -> dict:
        return self.trainer.state_dict()

    def load_state_dict(self, s: dict) -> None:
        self.trainer.load_state_dict(s)


@dataclass
class FeatureTrialBuilder:
    """Picklable recipe for Ray trials: a sampled config of ``feature_space.SPACE`` -> ``ProxyRun``."""

    data_dir: str
    proxy: ProxySettings
    cache_dir: str | None = None

    def __call__(self, config: dict, ctx=None) -> ProxyRun:
        return ProxyRun(self.data_dir, spec_from_config(config), self.proxy, self.cache_dir)


def load_proxy(bundle_dir: str):
    """A finished candidate's proxy model (eval mode, CPU) and its bundle metadata."""
    import torch
    from ..models import create_model
    meta = json.load(open(os.path.join(bundle_dir, META_FILE)))
    model = create_model("gru", **meta["model"])
    model.load_state_dict(torch.load(os.path.join(bundle_dir, WEIGHTS_FILE), map_location="cpu",
                                     weights_only=True))
    return model.eval(), meta


def group_importance(data_dir: str, bundle_dir: str, cache_dir: str | None = None, n_repeats: int = 3,
                     seed: int = 0) -> dict:
    """Permutation importance per feature group of a finished candidate, on the tune split it was scored on."""
    from ..training.prepare import prepare
    from ..training.trainer import predict
    from .importance import group_columns, permutation_importance
    model, meta = load_proxy(bundle_dir)
    proxy = ProxySettings(**meta["proxy"])
    prep = prepare(data_dir, meta["spec"], max_train_seqs=proxy.max_train_seqs, subsample_seed=proxy.seed,
                   cache_dir=cache_dir, tune_from=proxy.tune_from)
    cols = group_columns(prep.pipeline.groups(), prep.pipeline.feature_names)
    tune = prep.tune
    result = permutation_importance(lambda X: predict(model, X, device="cpu"), np.asarray(tune.X), tune.Y,
                                    tune.mask, cols, n_repeats=n_repeats, seed=seed)
    result["groups_on"] = groups_on(meta["spec"])
    return result
