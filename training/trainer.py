"""The trainer: one model, pre-tensorized arrays, the official metric for early stopping.

Shapes: N sequences, T steps (1000), F features, L crop length.
    Split.X [N, T, F] float32, Split.Y [N, T, 2], Split.mask [N, T] (need_prediction)

The loss counts only need-prediction steps (and, with crops, only steps after
the burn-in); warm-up steps still run through the model and feed its state.
Early stopping watches the official score on the *tune* split; the *report*
split is scored every epoch for the record but never chooses anything.

Schedules: ``cosine`` / ``onecycle`` / ``constant`` step the LR every batch;
``plateau`` is ReduceLROnPlateau on the tune score, stepped once per epoch
(factor ``plateau_factor`` after ``plateau_patience`` epochs without a better
score). With ``time_limit_s`` the cosine runs to whichever ends first, the
epochs or the time limit (progress = the larger of steps/total and
elapsed/limit), so a run stopped by its wall-clock budget has annealed by
then instead of being cut at a high LR; such a run is not bit-reproducible.
With ``ema_decay`` > 0 an EMA of the weights (averaging.py) is what
gets scored, kept as the best weights and saved; the raw weights only train.

Memory: ``step_memory_mb`` bounds what one forward keeps for backward. Before
the first epoch a probe measures that per sequence (device.py ``saved_bytes``)
on two training sequences; a batch that would keep more trains as micro-batches
whose gradients add up, each weighted by its share of the batch's trained rows.
That is exact for ``mse``; the |y|-weighted and Pearson losses are normalised
within each micro-batch, so for them it approximates the whole batch's loss.

A ``Trainer`` is resumable: ``state_dict()`` holds weights, optimiser,
scheduler, history and the best weights, and every epoch's randomness is
derived from (seed, epoch), so a trial restored from a checkpoint continues
exactly as if it had never stopped.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data.metric import score_masked
from ..errors import UserError
from .averaging import WeightEMA, swapped
from .device import amp_dtype, micro_batch_size, pick_device
from .config import TrainConfig
from .losses import make_loss

log = logging.getLogger("lobsweep.training")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or inf; the run is recorded as failed."""


@dataclass
class Split:
    """One role's arrays: X [N, T, F], Y [N, T, 2], mask [N, T]."""

    X: np.ndarray
    Y: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.X.shape[0])


@dataclass
class TrainResult:
    history: list[dict]
    best_epoch: int
    tune: dict
    report: dict | None
    swa_used: bool = False
    stopped_early: bool = False
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A tensor over ``a`` (shared memory on CPU); read-only arrays (memory-mapped caches) are copied once."""
    a = np.asarray(a)
    if not a.flags.writeable:
        a = np.array(a)
    return torch.as_tensor(a, device=device)


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


@torch.no_grad()
def predict(model: nn.Module, X: np.ndarray, batch_size: int = 64, device=None, amp: str = "off") -> np.ndarray:
    """Batch forward over whole sequences: X [N, T, F] -> float32 [N, T, 2]."""
    device = torch.device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval()
    out = np.empty(X.shape[:2] + (2,), dtype=np.float32)
    dt = amp_dtype(device, amp)
    for s in range(0, X.shape[0], batch_size):
        xb = _tensor(X[s:s + batch_size], device)
        with torch.autocast(device.type, dtype=dt, enabled=dt is not None):
            yb = model(xb)
        out[s:s + batch_size] = yb.float().cpu().numpy()
    model.train(was_training)
    return out


def data_fits_device(split: Split, device: torch.device, placement: str = "auto") -> bool:
    """Whether the fit arrays live on ``device`` (never: batches are gathered from host memory).

    auto: on the CPU always; on a GPU when they take at most a quarter of its free memory,
    leaving room for activations and for the other trials sharing it.
    """
    if placement == "never":
        return False
    if device.type != "cuda" or placement == "always":
        return True
    need = sum(np.asarray(a).nbytes for a in (split.X, split.Y, split.mask))
    free, _ = torch.cuda.mem_get_info(device)
    return need <= free / 4


class Trainer:
    """Epoch-at-a-time training with early stopping on the tune split."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, train: Split, tune: Split,
                 report: Split | None = None, seed: int = 0, progress: bool = False):
        cfg.check()
        if len(train) == 0 or len(tune) == 0:
            raise UserError("training needs at least one fit and one tune sequence")
        self.cfg, self.seed, self.progress = cfg, int(seed), progress
        self.device = pick_device(cfg.device)
        self.amp = amp_dtype(self.device, cfg.amp)
        self.model = model.to(self.device)
        self.train_split, self.tune_split, self.report_split = train, tune, report
        self.loss_fn = make_loss(cfg.loss, target_weights=cfg.target_weights,
                                 huber_delta=cfg.huber_delta, pearson_coef=cfg.pearson_coef)
        # The train arrays become tensors once; a batch is an index gather, on the device when the
        # arrays fit there, else on the host (pinned) and copied over batch by batch.
        self.resident = data_fits_device(train, self.device, cfg.data_on_device)
        home = self.device if self.resident else torch.device("cpu")
        self.Xt, self.Yt, self.Mt = (_tensor(a, home) for a in (train.X, train.Y, train.mask))
        if not self.resident and self.device.type == "cuda":
            self.Xt, self.Yt, self.Mt = (t.pin_memory() for t in (self.Xt, self.Yt, self.Mt))
        self.started = time.perf_counter()
        self.steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = self.steps_per_epoch * cfg.epochs
        if cfg.schedule == "cosine" and cfg.time_limit_s:
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._timed_cosine(total))
        elif cfg.schedule == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=total, eta_min=cfg.lr * 0.02)
        elif cfg.schedule == "onecycle":
            self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=cfg.lr, total_steps=total)
        elif cfg.schedule == "plateau":            # stepped per epoch on the tune score (run_epoch)
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, mode="max", factor=float(cfg.plateau_factor), patience=int(cfg.plateau_patience))
        else:
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda _: 1.0)
        self.ema = WeightEMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.epoch = 0
        self.history: list[dict] = []
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_weights = None
        self.swa_sum = None
        self.swa_n = 0
        sample = self.Xt[: min(2, len(train)), : (cfg.crop_len or self.Xt.shape[1])].to(self.device).clone()
        self.micro = micro_batch_size(self.model.train(), sample, cfg.batch_size, cfg.step_memory_mb, self.amp)
        if self.micro < cfg.batch_size:
            log.info("batches of %d sequences train as micro-batches of %d (step_memory_mb=%g)",
                     cfg.batch_size, self.micro, cfg.step_memory_mb)

    # ------------------------------------------------------------ one epoch
    def _batches(self):
        """Shuffled index slices and crop starts, derived from (seed, epoch)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.train_split))
        T = self.Xt.shape[1]
        L = self.cfg.crop_len or T
        for s in range(0, len(order), self.cfg.batch_size):
            idx = order[s:s + self.cfg.batch_size]
            start = int(rng.integers(0, T - L + 1)) if L < T else 0
            yield torch.as_tensor(idx, device=self.Xt.device), start, L

    def _train_epoch(self) -> float:
        self.model.train()
        torch.manual_seed(self.seed * 100_003 + self.epoch)      # dropout: resumable per epoch
        total, count = 0.0, 0
        batches = self._batches()
        if self.progress:
            from tqdm.auto import tqdm
            batches = tqdm(batches, total=self.steps_per_epoch, leave=False, file=sys.stderr,
                           desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}")
        for idx, start, L in batches:
            xb, yb, mb = (t[idx, start:start + L] for t in (self.Xt, self.Yt, self.Mt))
            if not self.resident:
                xb, yb, mb = (t.to(self.device, non_blocking=True) for t in (xb, yb, mb))
            mb = mb.clone()
            if L < self.Xt.shape[1] and self.cfg.burn_in:
                mb[:, : self.cfg.burn_in] = False
            if not bool(mb.any()):
                continue
            self.opt.zero_grad(set_to_none=True)
            loss = self._forward_backward(xb, yb, mb)
            if self.cfg.grad_clip:
                self.scaler.unscale_(self.opt)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.model)
            if self.cfg.schedule != "plateau":
                self.sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        return total / max(count, 1)

    def _forward_backward(self, xb, yb, mb) -> torch.Tensor:
        """Loss of the batch, gradients accumulated; micro-batches (``self.micro`` sequences) weigh
        by their share of the batch's trained rows. Exact for ``mse``; the weighted and Pearson
        losses are normalised within each micro-batch, so there they approximate the whole batch's."""
        rows = mb.sum()
        total = torch.zeros((), device=xb.device)
        for s in range(0, xb.shape[0], self.micro):
            x, y, m = xb[s:s + self.micro], yb[s:s + self.micro], mb[s:s + self.micro]
            if not bool(m.any()):
                continue
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                pred = self.model(x)
            loss = self.loss_fn(pred[m], y[m]) * (m.sum() / rows)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training loss became {loss.item()} at epoch {self.epoch + 1}")
            self.scaler.scale(loss).backward()
            total = total + loss.detach()
        return total

    def scored_weights(self) -> dict | None:
        """The weights that are scored and kept: the EMA's when on (None: the model's own)."""
        return None if self.ema is None else self.ema.weights(self.model)

    def evaluate(self, split: Split) -> dict:
        P = predict(self.model, split.X, self.cfg.eval_batch_size, self.device,
                    "off" if self.amp is None else self.cfg.amp)
        return score_masked(split.Y, P, split.mask)

    def run_epoch(self) -> dict:
        """Train one epoch, score tune (and report), track the best epoch. Returns the record."""
        t0 = time.perf_counter()
        lr = self.opt.param_groups[0]["lr"]
        train_loss = self._train_epoch()
        scored = self.scored_weights()
        with swapped(self.model, scored):
            tune = self.evaluate(self.tune_split)
            rep = self.evaluate(self.report_split) if self.report_split is not None else None
        rec = {"epoch": self.epoch + 1, "train_loss": train_loss, "lr": lr,
               "tune_t0": tune["t0"], "tune_t1": tune["t1"], "tune_mean": tune["mean"]}
        if rep is not None:
            rec.update(report_t0=rep["t0"], report_t1=rep["t1"], report_mean=rep["mean"])
        if tune["mean"] > self.best_score:
            self.best_score, self.best_epoch = tune["mean"], self.epoch + 1
            self.best_weights = scored if scored is not None else copy.deepcopy(
                {k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        if self.cfg.schedule == "plateau":
            self.sched.step(tune["mean"])
        if self.cfg.swa_epochs and self.epoch >= self.cfg.epochs - self.cfg.swa_epochs:
            sd = {k: v.detach().cpu().double()
                  for k, v in (scored if scored is not None else self.model.state_dict()).items()}
            self.swa_sum = sd if self.swa_sum is None else {k: self.swa_sum[k] + sd[k] for k in sd}
            self.swa_n += 1
        self.epoch += 1
        rec["seconds"] = time.perf_counter() - t0
        self.history.append(rec)
        return rec

    def _timed_cosine(self, total_steps: int):
        """LR factor of a cosine (floor 0.02, as CosineAnnealingLR's eta_min) over steps or time."""
        limit = float(self.cfg.time_limit_s)

        def factor(step: int) -> float:
            progress = min(1.0, max(step / max(total_steps, 1), (time.perf_counter() - self.started) / limit))
            return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))
        return factor

    @property
    def done(self) -> bool:
        if self.epoch >= self.cfg.epochs:
            return True
        if self.cfg.time_limit_s and self.epoch:          # would the next epoch end past the limit?
            elapsed = time.perf_counter() - self.started
            if elapsed + elapsed / self.epoch > float(self.cfg.time_limit_s):
                return True
        if self.epoch == 0 or self.cfg.swa_epochs:
            return False
        return self.epoch - self.best_epoch >= self.cfg.patience

    # ------------------------------------------------------------ finish / resume
    def finish(self) -> TrainResult:
        """Restore the best weights (or the SWA average when it scores better on tune)."""
        swa_used = False
        if self.swa_n:
            avg = {k: (self.swa_sum[k] / self.swa_n).to(v.dtype) for k, v in self.model.state_dict().items()}
            with swapped(self.model, avg):
                swa_score = self.evaluate(self.tune_split)["mean"]
            if swa_score > self.best_score:
                self.best_score, swa_used = swa_score, True
                self.best_weights = {k: v.cpu() for k, v in avg.items()}
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        tune = self.evaluate(self.tune_split)
        report = self.evaluate(self.report_split) if self.report_split is not None else None
        return TrainResult(history=list(self.history), best_epoch=self.best_epoch, tune=tune, report=report,
                           swa_used=swa_used, stopped_early=self.epoch < self.cfg.epochs,
                           seconds=sum(r["seconds"] for r in self.history))

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "history": self.history,
                "best_score": self.best_score, "best_epoch": self.best_epoch, "best_weights": self.best_weights,
                "swa_sum": self.swa_sum, "swa_n": self.swa_n,
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, s: dict) -> None:
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        self.sched.load_state_dict(s["sched"])
        self.scaler.load_state_dict(s["scaler"])
        self.epoch, self.history = int(s["epoch"]), list(s["history"])
        self.best_score, self.best_epoch = float(s["best_score"]), int(s["best_epoch"])
        self.best_weights, self.swa_sum, self.swa_n = s["best_weights"], s["swa_sum"], int(s["swa_n"])
        if self.ema is not None and s.get("ema") is not None:
            self.ema.load_state_dict(s["ema"])


def fit(model: nn.Module, cfg: TrainConfig, train: Split, tune: Split, report: Split | None = None,
        seed: int = 0, progress: bool = False, on_epoch=None) -> TrainResult:
    """Train until ``cfg.epochs`` or early stopping; ``on_epoch(record)`` sees each epoch."""
    trainer = Trainer(model, cfg, train, tune, report, seed=seed, progress=progress)
    while not trainer.done:
        rec = trainer.run_epoch()
        if on_epoch is not None:
            on_epoch(rec)
    return trainer.finish()
