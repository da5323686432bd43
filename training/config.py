"""Every option of one training run (``TrainConfig``), checked before any work starts.

The trainer (trainer.py) documents what each option does; a bad value is one
line naming the option (``UserError``), from the CLI, a recipe, a sweep's
sampled config or a bundle's ``spec.json``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import UserError
from .losses import LOSSES

SCHEDULES = ("cosine", "onecycle", "constant", "plateau")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DATA_PLACEMENTS = ("auto", "always", "never")


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    schedule: str = "cosine"
    grad_clip: float = 1.0            # max grad norm; 0 disables
    loss: str = "wmse"
    target_weights: tuple = (1.0, 1.0)
    huber_delta: float = 1.0
    pearson_coef: float = 0.5
    crop_len: int = 0                 # 0 = full sequences; else random crops of this length
    burn_in: int = 64                 # leading crop steps that only feed the state
    patience: int = 3                 # epochs without a better tune score before stopping
    swa_epochs: int = 0               # average weights over the last k epochs (0 = off)
    ema_decay: float = 0.0            # EMA of the weights, scored and saved instead of them (0 = off)
    plateau_patience: int = 2         # schedule "plateau": epochs without a better tune score ...
    plateau_factor: float = 0.5       # ... before the LR is multiplied by this
    amp: str = "auto"                 # CUDA only: bf16 where supported, else fp16
    eval_batch_size: int = 64
    step_memory_mb: float = 2048.0    # what one forward may keep for backward; a batch that needs more
    #                                   runs as micro-batches whose gradients add up (0 = no limit)
    device: str = "auto"
    time_limit_s: float = 0.0         # wall-clock budget: no epoch starts that would end past it (0 = none)
    data_on_device: str = "auto"      # fit arrays on the GPU: auto (when they take <= 1/4 of free memory),
    #                                   always, or never (batches are gathered on the host and copied over)

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown training option '{unknown[0]}'; valid: {', '.join(sorted(known))}")
        if "target_weights" in d:
            d["target_weights"] = tuple(float(v) for v in d["target_weights"])
        cfg = cls(**d)
        cfg.check()
        return cfg

    def check(self) -> None:
        def need(ok: bool, msg: str):
            if not ok:
                raise UserError(f"bad training option: {msg}")
        need(int(self.epochs) >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(int(self.batch_size) >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(float(self.lr) > 0 and math.isfinite(float(self.lr)), f"lr must be > 0, got {self.lr}")
        need(float(self.weight_decay) >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}")
        need(self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        need(int(self.crop_len) == 0 or int(self.crop_len) > int(self.burn_in) >= 0,
             f"crop_len must be 0 or > burn_in ({self.burn_in}), got {self.crop_len}")
        need(int(self.patience) >= 1, f"patience must be >= 1, got {self.patience}")
        need(0 <= int(self.swa_epochs) <= int(self.epochs), f"swa_epochs must be in [0, epochs], got {self.swa_epochs}")
        need(0.0 <= float(self.ema_decay) < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(int(self.plateau_patience) >= 0, f"plateau_patience must be >= 0, got {self.plateau_patience}")
        need(0.0 < float(self.plateau_factor) < 1.0, f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        need(math.isfinite(float(self.time_limit_s)) and float(self.time_limit_s) >= 0,
             f"time_limit_s must be >= 0 seconds (0 = no limit), got {self.time_limit_s}")
        need(math.isfinite(float(self.step_memory_mb)) and float(self.step_memory_mb) >= 0,
             f"step_memory_mb must be >= 0 (0 = no limit), got {self.step_memory_mb}")
        need(self.data_on_device in DATA_PLACEMENTS,
             f"data_on_device must be one of {DATA_PLACEMENTS}, got {self.data_on_device!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_weights"] = list(self.target_weights)
        return d
