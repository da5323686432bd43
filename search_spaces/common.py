"""Search dimensions shared by every family: optimiser, loss and training window.

Keys are ``TrainConfig`` fields (training/trainer.py). ``crop_len`` is the
sequence-length ablation: 0 trains on whole 1000-step sequences, otherwise on
random crops whose first ``burn_in`` steps only warm the recurrent state.
Every ``crop_len`` value here is larger than every ``burn_in`` value, so any
combination is a valid ``TrainConfig``.

Dimension format (plain data, JSON-able), shared by every space module:
    {"type": "float",  "low": a, "high": b, "log": bool}
    {"type": "int",    "low": a, "high": b, "log": bool}   (inclusive bounds)
    {"type": "choice", "values": [v, ...]}                 (values may be lists)
"""

from __future__ import annotations

SPACE = {
    "lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "batch_size": {"type": "choice", "values": [16, 32, 64]},
    "schedule": {"type": "choice", "values": ["cosine", "onecycle", "constant"]},
    "grad_clip": {"type": "choice", "values": [0.5, 1.0, 2.0]},
    "loss": {"type": "choice", "values": ["mse", "wmse", "whuber", "combo"]},
    # t1 is much noisier than t0; down-weighting it may help t0 without costing t1
    "target_weights": {"type": "choice", "values": [[1.0, 1.0], [1.0, 0.5], [1.0, 0.25]]},
    "crop_len": {"type": "choice", "values": [0, 256, 512]},
    "burn_in": {"type": "choice", "values": [32, 64, 128]},
}
