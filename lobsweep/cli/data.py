"""CLI commands of the data stage: ``lobsweep validate`` and ``lobsweep synth``."""

from __future__ import annotations

import json

from ..errors import UserError
from .core import arguments, command


@command("validate", "check a contract parquet file; one-line summary or one-line error")
@arguments(lambda p: (p.add_argument("path"),
                  p.add_argument("--no-targets-ok", action="store_true",
                                 help="accept a test-style file without t0/t1"),
                  p.add_argument("--repair-features", action="store_true",
                                 help="forward-fill NaN/inf features instead of failing")))
def cmd_validate(args):
    from ..data.loader import load
    data = load(args.path, require_targets=not args.no_targets_ok, repair_features=args.repair_features)
    extra = f", {data.repaired} non-finite feature values repaired" if data.repaired else ""
    print(f"ok: {data.summary()}{extra}")


@command("synth", "write a synthetic dataset (train/valid/oracle parquet) with a known oracle")
@arguments(lambda p: (p.add_argument("--out", required=True),
                  p.add_argument("--n-train", type=int, default=512),
                  p.add_argument("--n-valid", type=int, default=128),
                  p.add_argument("--seq-len", type=int, default=1000),
                  p.add_argument("--seed", type=int, default=0),
                  p.add_argument("--variant", default="default",
                                 help="planted signal: default, or shifted (other time scales and interactions)"),
                  p.add_argument("--valid-shift", type=float, default=0.0,
                                 help="share (0..1) of valid sequences from a regime train never has")))
def cmd_synth(args):
    from ..data.synth import write_dataset
    for name in ("n_train", "n_valid"):
        if getattr(args, name) < 2:
            raise UserError(f"--{name.replace('_', '-')} must be at least 2")
    info = write_dataset(args.out, n_train=args.n_train, n_valid=args.n_valid,
                         seq_len=args.seq_len, seed=args.seed, variant=args.variant,
                         valid_shift=args.valid_shift)
    print(json.dumps({k: v for k, v in info.items() if not isinstance(v, (bytes,))}, default=str))
