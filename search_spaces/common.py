"""Search dimensions shared by every family: optimiser, loss and training window.

Keys are ``TrainConfig`` fields (training/config.py). ``crop_len`` is the
sequence-length ablation: 0 trains on whole 1000-step sequences, otherwise on
random crops whose first ``burn_in`` steps only warm the recurrent state.
Every ``crop_len`` value here is larger than every ``burn_in`` value, so any
combination is a valid ``TrainConfig``; ``swa_epochs`` is capped at the
trial's epoch budget (tuning/trial.py). ``plateau`` is ReduceLROnPlateau
on the tune score; ``ema_decay`` 0 is off. Every named recipe
(recipes.py) is a point of this space together with the family spaces.

Dimension format (plain data, JSON-able), shared by every space module:
    {"type": "float",  "low": a, "high": b, "log": bool}
    {"type": "int",    "low": a, "high": b, "log": bool}   (inclusive bounds)
    {"type": "choice", "values": [v, ...]}                 (values may be lists)
"""

from __future__ import annotations

SPACE = {
    "lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
    # a choice, so 0 is expressible: the vanilla recipe that won on the real data used none
    "weight_decay": {"type": "choice", "values": [0.0, 1e-4, 1e-3, 1e-2, 1e-1]},
    "batch_size": {"type": "choice", "values": [16, 32, 64, 192]},
    "schedule": {"type": "choice", "values": ["cosine", "onecycle", "constant", "plateau"]},
    "grad_clip": {"type": "choice", "values": [0.5, 1.0, 2.0]},
    "loss": {"type": "choice", "values": ["mse", "wmse", "whuber", "pearson", "combo"]},
    "pearson_coef": {"type": "float", "low": 0.1, "high": 2.0, "log": True},      # combo only
    # t1 is much noisier than t0; down-weighting it may help t0 without costing t1
    "target_weights": {"type": "choice", "values": [[1.0, 1.0], [1.0, 0.5], [1.0, 0.25]]},
    "crop_len": {"type": "choice", "values": [0, 256, 512]},
    "burn_in": {"type": "choice", "values": [32, 64, 128]},
    "patience": {"type": "int", "low": 3, "high": 12, "log": False},
    "swa_epochs": {"type": "choice", "values": [0, 2, 4]},           # capped at the trial's epochs
    "ema_decay": {"type": "choice", "values": [0.0, 0.99, 0.999]},
}
