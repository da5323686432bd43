"""Load and validate contract parquet files into pre-tensorized arrays.

Shapes (N = sequences, T = 1000 steps, F = 32 features):
    X     float32 [N, T, F]   features, C-contiguous, so ``X[i]`` is a view
    Y     float32 [N, T, 2]   targets (None for a test-style file)
    mask  bool    [N, T]      need_prediction
    seq_ix int64  [N]         sequence ids in file order

Memory: the file is read one column at a time straight into the preallocated
arrays, so the peak is about the arrays plus one column (checked by
bench/load_memory.py). Every check names the problem and where it is
(column, seq_ix, step) in one line, and raises ``DataError``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError, UserError
from ..features.base import forward_fill
from .contract import ALL_COLS, FEATURE_COLS, ID_COLS, N_FEATURES, SEQ_LEN, TARGET_COLS, WARMUP


@dataclass
class LobData:
    """One contract file as arrays. ``Y`` is None when the file has no targets."""

    X: np.ndarray
    Y: np.ndarray | None
    mask: np.ndarray
    seq_ix: np.ndarray
    fingerprint: str
    path: str = ""
    repaired: int = 0          # non-finite feature values replaced (only with repair_features)
    meta: dict = field(default_factory=dict)

    @property
    def n_seq(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0] * self.X.shape[1])

    def subset(self, idx: np.ndarray) -> "LobData":
        """The sequences ``idx`` (a copy; used for role splits and subsamples)."""
        idx = np.asarray(idx)
        return LobData(
            X=self.X[idx], Y=None if self.Y is None else self.Y[idx], mask=self.mask[idx],
            seq_ix=self.seq_ix[idx], fingerprint=self.fingerprint, path=self.path,
            meta={**self.meta, "subset_of": self.fingerprint, "n_subset": int(len(idx))},
        )

    def summary(self) -> str:
        targets = "targets present" if self.Y is not None else "no targets"
        return (f"{os.path.basename(self.path) or '<memory>'}: {self.n_seq} sequences, "
                f"{self.n_rows} rows, {targets}, fingerprint {self.fingerprint[:12]}")


def _where(seq_ix: np.ndarray, step: np.ndarray, row: int) -> str:
    return f"seq_ix={int(seq_ix[row])}, step={int(step[row])} (row {row})"


def _open(path: str) -> pq.ParquetFile:
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory; pass the parquet file itself")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a parquet file ({str(exc).splitlines()[0]})") from None


def _check_schema(path: str, schema: pa.Schema, require_targets: bool) -> bool:
    """Check names, order and dtypes. Returns whether targets are present."""
    names = list(schema.names)
    has_targets = any(t in names for t in TARGET_COLS)
    expected = ALL_COLS if has_targets else ALL_COLS[: len(ID_COLS) + N_FEATURES]
    missing = [c for c in expected if c not in names]
    if has_targets and not all(t in names for t in TARGET_COLS):
        missing = [t for t in TARGET_COLS if t not in names] + missing
    if missing:
        raise DataError(f"{path}: missing column '{missing[0]}'"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = [c for c in names if c not in expected]
    if extra:
        raise DataError(f"{path}: unexpected column '{extra[0]}'; the contract has exactly {len(expected)} columns")
    for i, (got, want) in enumerate(zip(names, expected)):
        if got != want:
            raise DataError(f"{path}: columns out of order: position {i} is '{got}', expected '{want}'")
    for name in names:
        t = schema.field(name).type
        if name == "need_prediction":
            ok = pa.types.is_boolean(t) or pa.types.is_integer(t)
        elif name in ("seq_ix", "step_in_seq"):
            ok = pa.types.is_integer(t)
        else:
            ok = pa.types.is_floating(t) or pa.types.is_integer(t)
        if not ok:
            raise DataError(f"{path}: column '{name}' has non-numeric dtype {t}")
    if require_targets and not has_targets:
        raise DataError(f"{path}: no target columns t0/t1 (a test-style file), but targets are needed here")
    return has_targets


def _read_col(pf: pq.ParquetFile, name: str) -> np.ndarray:
    col = pf.read(columns=[name]).column(0)
    if col.null_count:
        return col.to_numpy(zero_copy_only=False).astype(np.float64)   # nulls -> NaN, reported below
    return col.to_numpy()


def _check_layout(path: str, seq: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows must be whole sequences of SEQ_LEN consecutive steps 0..T-1.

    Returns (sequence ids in file order, start row of each sequence).
    """
    n = len(seq)
    if n == 0:
        raise DataError(f"{path}: the file has no rows")
    starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
    lengths = np.diff(np.r_[starts, n])
    ids = seq[starts]
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        sid = uniq[np.argmax(counts > 1)]
        runs = starts[ids == sid]
        raise DataError(f"{path}: rows of seq_ix={int(sid)} are not contiguous "
                        f"(second block starts at row {int(runs[1])})")
    expected_step = np.arange(n) - np.repeat(starts, lengths)
    bad = np.flatnonzero(step != expected_step)
    if bad.size:
        r = int(bad[0])
        s = int(step[r])
        block = np.searchsorted(starts, r, side="right") - 1
        in_block = step[starts[block]: starts[block] + lengths[block]]
        srt = np.sort(in_block)
        dups = srt[1:][np.diff(srt) == 0]
        if dups.size:
            raise DataError(f"{path}: duplicate (seq_ix, step) at seq_ix={int(seq[r])}, step={int(dups[0])}")
        raise DataError(f"{path}: steps not in order at {_where(seq, step, r)}: expected step {int(expected_step[r])}, got {s}")
    wrong = np.flatnonzero(lengths != SEQ_LEN)
    if wrong.size:
        b = int(wrong[0])
        raise DataError(f"{path}: seq_ix={int(ids[b])} has {int(lengths[b])} steps; every sequence must have {SEQ_LEN}")
    return ids.astype(np.int64), starts


def _finite_or_fail(path: str, name: str, values: np.ndarray, seq: np.ndarray, step: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        r = int(np.argmax(bad))
        kind = "NaN" if np.isnan(values[r]) else "inf"
        raise DataError(f"{path}: {kind} in column '{name}' at {_where(seq, step, r)}")


def _repair(col: np.ndarray, n_seq: int) -> int:
    """Forward-fill ``col`` in place, sequence by sequence; the number of values replaced."""
    v = col.reshape(n_seq, SEQ_LEN)
    n_bad = int((~np.isfinite(v)).sum())
    if n_bad:
        v[...] = forward_fill(v)
    return n_bad


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """A content hash of the arrays (shapes and bytes), for provenance."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def load(path: str, require_targets: bool = True, repair_features: bool = False) -> LobData:
    """Read and validate one contract file. Raises ``DataError`` with one line on bad input."""
    path = str(path)
    pf = _open(path)
    has_targets = _check_schema(path, pf.schema_arrow, require_targets)
    seq = _read_col(pf, "seq_ix").astype(np.int64, copy=False)
    step = _read_col(pf, "step_in_seq").astype(np.int64, copy=False)
    ids, _ = _check_layout(path, seq, step)
    n_seq = len(ids)

    need = _read_col(pf, "need_prediction")
    if need.dtype != np.bool_:
        if not np.isin(need, (0, 1)).all():
            raise DataError(f"{path}: need_prediction holds values other than True/False")
        need = need.astype(bool)
    expected = step >= WARMUP
    bad = np.flatnonzero(need != expected)
    if bad.size:
        r = int(bad[0])
        raise DataError(f"{path}: need_prediction is {bool(need[r])} at {_where(seq, step, r)}; "
                        f"it must be False for steps 0..{WARMUP - 1} and True after")
    mask = need.reshape(n_seq, SEQ_LEN)

    X = np.empty((n_seq, SEQ_LEN, N_FEATURES), dtype=np.float32)
    flatX = X.reshape(-1, N_FEATURES)
    repaired = 0
    for j, name in enumerate(FEATURE_COLS):
        col = _read_col(pf, name).astype(np.float32, copy=False)
        if repair_features:
            col = np.array(col, dtype=np.float32, copy=True)
            repaired += _repair(col, n_seq)
        else:
            _finite_or_fail(path, name, col, seq, step)
        flatX[:, j] = col
        del col

    Y = None
    if has_targets:
        Y = np.empty((n_seq, SEQ_LEN, 2), dtype=np.float32)
        flatY = Y.reshape(-1, 2)
        for j, name in enumerate(TARGET_COLS):
            col = _read_col(pf, name).astype(np.float32, copy=False)
            _finite_or_fail(path, name, col, seq, step)
            flatY[:, j] = col
    del seq, step, need
    fp = fingerprint_arrays(ids, X, Y)
    return LobData(X=X, Y=Y, mask=np.ascontiguousarray(mask), seq_ix=ids, fingerprint=fp,
                   path=path, repaired=repaired)


def data_paths(data_dir: str) -> dict[str, str]:
    """The contract file names inside a ``--data DIR`` folder."""
    names = {"train": "train.parquet", "valid": "valid.parquet", "oracle_valid": "oracle_valid.parquet"}
    return {k: os.path.join(str(data_dir), v) for k, v in names.items()}


def load_role(data_dir: str, role: str, needed_for: str) -> LobData:
    """The ``role`` file of ``data_dir`` (``load``), or one UserError saying what needed it."""
    path = data_paths(data_dir)[role]
    if not os.path.exists(path):
        raise UserError(f"--data {data_dir}: no {os.path.basename(path)} ({needed_for})")
    return load(path)


def load_oracle(path: str, like: LobData) -> np.ndarray:
    """Oracle predictions ``[N, T, 2]`` aligned with ``like`` (joined on seq_ix/step)."""
    pf = _open(path)
    names = pf.schema_arrow.names
    for c in ("seq_ix", "step_in_seq", "t0", "t1"):
        if c not in names:
            raise DataError(f"{path}: oracle file lacks column '{c}'")
    seq = _read_col(pf, "seq_ix").astype(np.int64)
    step = _read_col(pf, "step_in_seq").astype(np.int64)
    pos = {int(s): i for i, s in enumerate(like.seq_ix)}
    try:
        rows = np.fromiter((pos[int(s)] for s in seq), dtype=np.int64, count=len(seq))
    except KeyError as exc:
        raise DataError(f"{path}: oracle has seq_ix={exc.args[0]}, which the data file lacks") from None
    out = np.full((like.n_seq, SEQ_LEN, 2), np.nan, dtype=np.float32)
    out[rows, step, 0] = _read_col(pf, "t0")
    out[rows, step, 1] = _read_col(pf, "t1")
    if np.isnan(out[like.mask]).any():
        raise DataError(f"{path}: oracle does not cover every need_prediction row of {like.path}")
    return out
