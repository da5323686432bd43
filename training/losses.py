"""Training losses, built by name from a factory.

Every loss takes ``pred [N, 2]`` and ``y [N, 2]`` holding only the rows that
count (need-prediction steps; warm-up steps feed the state but are dropped
before the loss) and returns a scalar. ``target_weights`` scales the two
targets' terms (t1 is much noisier than t0, so down-weighting it can help).

Names:
    mse       plain mean squared error
    wmse      |y|-weighted MSE, aligned with the metric's weights
    whuber    |y|-weighted Huber (robust to the heavy-tailed targets)
    pearson   negative weighted Pearson per target over the batch: the metric itself
    combo     wmse + pearson_coef * pearson
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import UserError

LOSSES = ("mse", "wmse", "whuber", "pearson", "combo")
WEIGHT_FLOOR = 1e-8

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_target(values: torch.Tensor, target_weights: torch.Tensor) -> torch.Tensor:
    """values [2] -> weighted mean over targets."""
    return (values * target_weights).sum() / target_weights.sum()


def weighted_mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[N, 2] -> [2]: sum_i w_i (p_i - y_i)^2 / sum_i w_i with w = |y|."""
    w = y.abs().clamp_min(WEIGHT_FLOOR)
    return (w * (pred - y) ** 2).sum(0) / w.sum(0)


def weighted_huber(pred: torch.Tensor, y: torch.Tensor, delta: float) -> torch.Tensor:
    w = y.abs().clamp_min(WEIGHT_FLOOR)
    h = F.huber_loss(pred, y, reduction="none", delta=delta)
    return (w * h).sum(0) / w.sum(0)


def weighted_pearson(pred: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """[N, 2] -> [2] weighted Pearson per target, as the metric (no clip: it has no gradient)."""
    w = y.abs().clamp_min(WEIGHT_FLOOR)
    sw = w.sum(0)
    mp = (w * pred).sum(0) / sw
    my = (w * y).sum(0) / sw
    dp, dy = pred - mp, y - my
    cov = (w * dp * dy).sum(0) / sw
    vp = (w * dp * dp).sum(0) / sw
    vy = (w * dy * dy).sum(0) / sw
    return cov / torch.sqrt(vp * vy + eps)


def make_loss(name: str = "wmse", *, target_weights=(1.0, 1.0), huber_delta: float = 1.0,
              pearson_coef: float = 0.5) -> LossFn:
    """The loss ``name`` as ``fn(pred [N,2], y [N,2]) -> scalar``."""
    if name not in LOSSES:
        raise UserError(f"unknown loss '{name}'; choose one of {', '.join(LOSSES)}")
    if len(target_weights) != 2 or min(target_weights) < 0 or sum(target_weights) <= 0:
        raise UserError(f"target_weights must be two non-negative numbers, not both 0; got {target_weights}")
    tw_cpu = torch.tensor([float(t) for t in target_weights])

    def loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pred, y = pred.float(), y.float()
        tw = tw_cpu.to(pred.device)
        if name == "mse":
            per = ((pred - y) ** 2).mean(0)
        elif name == "wmse":
            per = weighted_mse(pred, y)
        elif name == "whuber":
            per = weighted_huber(pred, y, huber_delta)
        elif name == "pearson":
            per = -weighted_pearson(pred, y)
        else:
            per = weighted_mse(pred, y) - pearson_coef * weighted_pearson(pred, y)
        return _per_target(per, tw)

    loss.name = name
    return loss
