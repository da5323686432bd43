"""CUDA training check: the project trainer on a GPU with AMP, against fp32, on synthetic data.

    python bench/gpu_train.py [--n-train 512] [--epochs 2]

Prints per-epoch seconds and the tune/report scores for amp=off and amp=bf16
(and fp16), so the AMP path is exercised end to end (autocast, GradScaler for
fp16, evaluation under autocast). Needs a CUDA device; exits 0 with a note
when there is none.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--n-valid", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--families", default="gru,transformer,ssm")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    from lobsweep.data.synth import write_dataset
    from lobsweep.models import create_model
    from lobsweep.training.prepare import oracle_scores, prepare
    from lobsweep.training.trainer import TrainConfig, Trainer

    d = tempfile.mkdtemp()
    write_dataset(d, n_train=a.n_train, n_valid=a.n_valid)
    prep = prepare(d, {})
    orc = oracle_scores(prep)["report"]["mean"]
    print(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}, oracle report mean {orc:.4f}")
    for fam in a.families.split(","):
        for amp in ("off", "bf16", "fp16"):
            torch.manual_seed(0)
            model = create_model(fam, n_features=prep.pipeline.n_features_out)
            cfg = TrainConfig(epochs=a.epochs, batch_size=32, lr=2e-3, amp=amp, loss="mse", device="cuda")
            tr = Trainer(model, cfg, prep.fit, prep.tune, prep.report, seed=0)
            torch.cuda.synchronize()
            t = time.perf_counter()
            while not tr.done:
                tr.run_epoch()
            torch.cuda.synchronize()
            res = tr.finish()
            secs = (time.perf_counter() - t) / len(res.history)
            print(f"{fam:<12} amp={amp:<5} {secs:6.2f} s/epoch  tune {res.tune['mean']:.4f}  "
                  f"report {res.report['mean']:.4f} ({100 * res.report['mean'] / orc:.0f}% of oracle)  "
                  f"peak mem {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB", flush=True)
            torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    sys.exit(main())
