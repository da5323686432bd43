"""Epoch time of the project trainer against a bare torch loop, same GRU, same data, one run.

    python bench/train_throughput.py [--n-seq 128] [--crop 0] [--epochs 2] [--threads 2]

Both train the default ``gru`` on the same random arrays with the same batch
size, optimiser and loss; the trainer also scores the tune split each epoch
(that is part of its job), so the bench reports the ratio with and without
that evaluation. Goal: trainer / bare <= 1.15 on the training part.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lobsweep.models import create_model  # noqa: E402
from lobsweep.training.losses import make_loss  # noqa: E402
from lobsweep.training.trainer import Split, TrainConfig, Trainer  # noqa: E402


def data(n: int, T: int = 1000, F: int = 32, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, F)).astype(np.float32)
    Y = rng.standard_t(4, size=(n, T, 2)).astype(np.float32)
    mask = np.zeros((n, T), dtype=bool)
    mask[:, 99:] = True
    return Split(X, Y, mask)


def bare_epoch(model, split: Split, batch: int, lr: float, seed: int) -> float:
    """The 20-line loop: shuffled batches, forward, masked weighted MSE, AdamW, clip."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    loss_fn = make_loss("wmse")
    X, Y, M = torch.from_numpy(split.X), torch.from_numpy(split.Y), torch.from_numpy(split.mask)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(split)))
    t = time.perf_counter()
    for s in range(0, len(split), batch):
        idx = order[s:s + batch]
        pred = model(X[idx])
        m = M[idx]
        loss = loss_fn(pred[m], Y[idx][m])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-seq", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    train, tune = data(a.n_seq), data(max(2, a.n_seq // 8), seed=1)
    bare, proj, proj_eval = [], [], []
    for ep in range(a.epochs):
        torch.manual_seed(0)
        bare.append(bare_epoch(create_model("gru"), train, a.batch, 2e-3, ep))
        torch.manual_seed(0)
        tr = Trainer(create_model("gru"), TrainConfig(epochs=1, batch_size=a.batch), train, tune, seed=ep)
        t = time.perf_counter()
        tr._train_epoch()
        proj.append(time.perf_counter() - t)
        t = time.perf_counter()
        tr.evaluate(tune)
        proj_eval.append(time.perf_counter() - t)
    b, p, e = np.median(bare), np.median(proj), np.median(proj_eval)
    print(f"gru default, {a.n_seq} seqs x 1000 steps, batch {a.batch}, {a.threads} threads")
    print(f"bare loop     {b:7.2f} s/epoch")
    print(f"trainer       {p:7.2f} s/epoch   ratio {p / b:.3f}  (goal <= 1.15)")
    print(f"+ tune eval   {p + e:7.2f} s/epoch   ratio {(p + e) / b:.3f}  (eval of {len(tune)} seqs: {e:.2f} s)")


if __name__ == "__main__":
    main()
