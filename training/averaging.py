"""Weight averages the trainer can evaluate and save instead of the raw weights.

- ``WeightEMA``: an exponential moving average of the weights, updated after
  every optimiser step. Its decay is warmed up as in TensorFlow's
  ExponentialMovingAverage with ``num_updates``: d_n = min(decay, (1+n)/(10+n)),
  so that a short run (a few hundred steps) is not dominated by the random
  initial weights.
- ``swapped(model, weights)``: a context that evaluates ``model`` with other
  weights (the EMA, an SWA average) and puts its own back afterwards.

Only floating-point entries of a state_dict are averaged; the others (none in
today's families) are taken from the live model.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class WeightEMA:
    """Shadow copy of a model's floating-point weights (float32, on the model's device)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.n = 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.n += 1
        d = min(self.decay, (1.0 + self.n) / (10.0 + self.n))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1.0 - d)

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A full state_dict for ``model``: the averaged entries, the rest from the model (CPU copies)."""
        return {k: (self.shadow[k].to(v.dtype) if k in self.shadow else v.detach()).cpu().clone()
                for k, v in model.state_dict().items()}

    def state_dict(self) -> dict:
        return {"n": self.n, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, s: dict) -> None:
        self.n = int(s["n"])
        dev = next(iter(self.shadow.values())).device if self.shadow else "cpu"
        self.shadow = {k: v.to(dev).float() for k, v in s["shadow"].items()}


@contextlib.contextmanager
def swapped(model: nn.Module, weights: dict[str, torch.Tensor] | None):
    """Run the body with ``weights`` loaded into ``model`` (no-op for None); restore them after."""
    if weights is None:
        yield
        return
    current = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(weights)
    try:
        yield
    finally:
        model.load_state_dict(current)
