"""Peak memory of loading a full-size (10.7M-row) contract file, against its array size.

    python bench/load_memory.py [--n-seq 10721] [--keep PATH]

Writes a contract-schema file of random (but valid) rows in row groups, then
loads it with ``lobsweep.data.loader.load`` in a fresh process and prints the
peak RSS of that process, the in-memory array size (X + Y + mask) and their
ratio. The goal is a ratio of about 3 or less.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = r"""
import resource, sys, time
from lobsweep.data.loader import load
t = time.perf_counter()
d = load(sys.argv[1])
secs = time.perf_counter() - t
arrays = d.X.nbytes + d.Y.nbytes + d.mask.nbytes
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(arrays, peak, secs, d.n_rows)
"""


def write_file(path: str, n_seq: int, seed: int = 0, group: int = 500) -> None:
    from lobsweep.data.contract import ALL_COLS, SEQ_LEN, WARMUP
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n_seq * 3)[:n_seq]
    writer = None
    for s in range(0, n_seq, group):
        k = min(group, n_seq - s)
        n = k * SEQ_LEN
        mid = rng.normal(0, 1, n).astype(np.float32)
        cols = {"seq_ix": np.repeat(ids[s:s + k], SEQ_LEN).astype(np.int64),
                "step_in_seq": np.tile(np.arange(SEQ_LEN), k).astype(np.int64),
                "need_prediction": np.tile(np.arange(SEQ_LEN) >= WARMUP, k)}
        for c in ALL_COLS[3:]:
            cols[c] = mid + rng.random(n, dtype=np.float32)
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-seq", type=int, default=10721)
    ap.add_argument("--keep", default=None, help="write the file here and keep it")
    a = ap.parse_args()
    path = a.keep or os.path.join(tempfile.mkdtemp(), "train.parquet")
    t = time.perf_counter()
    if not os.path.exists(path):
        write_file(path, a.n_seq)
    print(f"file: {path} ({os.path.getsize(path) / 2**20:.0f} MiB, written in {time.perf_counter() - t:.0f} s)")
    out = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True, check=True)
    arrays, peak, secs, rows = out.stdout.split()
    arrays, peak = int(arrays), int(peak)
    print(f"rows {int(rows):,}  load {float(secs):.1f} s")
    print(f"arrays (X+Y+mask) {arrays / 2**30:.2f} GiB  peak RSS {peak / 2**30:.2f} GiB  "
          f"ratio {peak / arrays:.2f}x  (goal <= 3x)")
    if not a.keep:
        os.remove(path)


if __name__ == "__main__":
    main()
