"""The trial builder of the hyperparameter sweep: one family, one sampled config, the Trainer.

``ModelTrialBuilder`` is what ``SweepTrainable`` calls in each trial process.
It prepares the data through ``training.prepare`` with the sweep's cache dir,
so trials open the transformed arrays the driver already wrote (memory-mapped)
instead of transforming again; an actor reused for several trials keeps the
prepared roles in memory.

Honest evaluation: trials train on *fit*, score *tune* every epoch (ASHA and
the searcher see only that), and score *report* once, at the end of a trial
that completed, for the leaderboard. ``report`` is never passed to the
Trainer, so no per-epoch report score exists to be looked at.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from ..models import count_params, create_model
from ..search_spaces import split_config
from ..training.bundle import save_bundle
from ..submission.cost import member_cost_ms
from ..training.member import build_spec, feature_set_name, member_metrics
from ..training.prepare import Prepared, prepare
from ..training.trainer import TrainConfig, Trainer, predict, set_seed

_PREPARED: dict[str, Prepared] = {}


def prepared(data_dir: str, features_spec: dict | None, max_train_seqs: int | None, cache_dir: str | None,
             tune_from: str = "valid") -> Prepared:
    """``prepare`` memoised per process (reused actors run many trials on the same roles)."""
    import json
    key = json.dumps([data_dir, features_spec, max_train_seqs, cache_dir, tune_from], sort_keys=True, default=str)
    if key not in _PREPARED:
        _PREPARED.clear()                       # one data set per process at a time
        _PREPARED[key] = prepare(data_dir, features_spec, max_train_seqs=max_train_seqs, cache_dir=cache_dir,
                                 tune_from=tune_from)
    return _PREPARED[key]


@dataclass
class ModelTrialBuilder:
    """Picklable recipe: (sampled config, trial context) -> ``ModelTrial``.

    ``train_fixed`` holds TrainConfig options that are not searched (e.g.
    ``{"patience": 3}``); ``epochs`` is always ``max_epochs``, so the LR
    schedule spans the whole budget a trial may get.
    """

    data_dir: str
    max_epochs: int
    features_spec: dict | None = None
    max_train_seqs: int | None = None
    cache_dir: str | None = None
    tune_from: str = "valid"
    seed: int = 0
    train_fixed: dict = field(default_factory=dict)

    def __call__(self, config: dict, ctx) -> "ModelTrial":
        return ModelTrial(self, config, getattr(ctx, "deadline", None))


class ModelTrial:
    """One sampled model trained epoch by epoch (the trial-run protocol of trainable.py)."""

    def __init__(self, spec: ModelTrialBuilder, config: dict, deadline: float | None = None):
        self.spec = spec
        self.family, hp, train = split_config(config)
        self.prep = prepared(spec.data_dir, spec.features_spec, spec.max_train_seqs, spec.cache_dir, spec.tune_from)
        train = {**train, **spec.train_fixed, "epochs": int(spec.max_epochs)}
        if deadline is not None:           # under a time budget: the LR anneals by the experiment's end
            left = max(deadline - time.time(), 1.0)
            train["time_limit_s"] = min(float(train.get("time_limit_s") or left), left)
        if "swa_epochs" in train:          # a searched SWA window longer than the budget: the whole budget
            train["swa_epochs"] = min(int(train["swa_epochs"]), int(spec.max_epochs))
        self.cfg = TrainConfig.from_dict(train)
        set_seed(spec.seed)
        self.model = create_model(self.family, **{**hp, "n_features": self.prep.pipeline.n_features_out})
        self.trainer = Trainer(self.model, self.cfg, self.prep.fit, self.prep.tune, None, seed=spec.seed)
        self.device = str(self.trainer.device)
        self.tags = {"seed": str(spec.seed), "feature_set": feature_set_name(spec.features_spec)}
        self.params = {"family": self.family,
                       **{f"model.{k}": v for k, v in asdict(self.model.config).items()},
                       **{f"train.{k}": v for k, v in self.cfg.to_dict().items()}}

    @property
    def params_count(self) -> int:
        return count_params(self.model)

    @property
    def done(self) -> bool:
        return self.trainer.done

    def step(self) -> dict:
        return self.trainer.run_epoch()

    def finish(self, bundle_dir: str) -> dict:
        """Best weights, the report split scored once, the bundle written; the flat final metrics."""
        res = self.trainer.finish()
        res.report = self.trainer.evaluate(self.prep.report)
        model = self.model.cpu().eval()
        metrics = member_metrics(res, self.prep, self.params_count)
        spec = build_spec(self.family, model, asdict(model.config), self.cfg, self.prep, self.spec.seed, res,
                          metrics, extra={"stage": "hpo", "trial_dir": bundle_dir})
        P = predict(model, self.prep.valid_X, self.cfg.eval_batch_size, "cpu")
        save_bundle(bundle_dir, model, spec, P[self.prep.valid_mask])
        final = {("final_" + k if k.startswith("tune_") else k): float(v) for k, v in metrics.items()}
        final["ms_per_step"] = member_cost_ms(bundle_dir)     # this member alone in the packaged engine
        return {**final, "bundle": bundle_dir}

    def state_dict(self) -> dict:
        return self.trainer.state_dict()

    def load_state_dict(self, s: dict) -> None:
        self.trainer.load_state_dict(s)
