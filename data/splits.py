"""The three evaluation roles, split by whole sequences (DESIGN.md, "Honest evaluation").

- fit:    the train file; weights are learned here.
- tune:   part of the valid file (default half); early stopping, pruning,
          hyperparameter/feature choice, ensemble members and weights.
- report: the rest of the valid file; only ever reported.

The split is a seeded permutation of sequence *ids* (not positions), so the same
sequences land in the same role whatever order the file lists them in. The
seed and fraction are recorded in every spec.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

DEFAULT_TUNE_FRAC = 0.5
DEFAULT_SPLIT_SEED = 0


def _rank_key(seq_ix: np.ndarray, seed: int) -> np.ndarray:
    """A per-id pseudo-random key that depends only on (id, seed)."""
    h = np.empty(len(seq_ix), dtype=np.uint64)
    for i, s in enumerate(np.asarray(seq_ix, dtype=np.int64)):
        d = hashlib.blake2b(f"{seed}:{int(s)}".encode(), digest_size=8).digest()
        h[i] = int.from_bytes(d, "little")
    return h


def _ids(seq_ix_or_n) -> np.ndarray:
    """Sequence ids in file order, or 0..n-1 for a count."""
    return np.arange(seq_ix_or_n) if np.isscalar(seq_ix_or_n) else np.asarray(seq_ix_or_n)


def split_roles(seq_ix_or_n, tune_frac: float = DEFAULT_TUNE_FRAC,
                seed: int = DEFAULT_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Split valid sequences into (tune_idx, report_idx), sorted index arrays.

    ``seq_ix_or_n`` is the array of sequence ids in file order, or a count
    (then ids are 0..n-1).
    """
    if not 0.0 < tune_frac < 1.0:
        raise UserError(f"tune fraction must be in (0, 1), got {tune_frac}")
    ids = _ids(seq_ix_or_n)
    n = len(ids)
    if n < 2:
        raise UserError(f"need at least 2 sequences to split into tune/report roles, got {n}")
    order = np.argsort(_rank_key(ids, seed), kind="stable")
    n_tune = min(max(1, int(round(n * tune_frac))), n - 1)
    return np.sort(order[:n_tune]), np.sort(order[n_tune:])


@dataclass(frozen=True)
class Roles:
    """Which sequences play which role under one ``split`` (sorted index arrays, file positions)."""

    fit: np.ndarray          # train-file sequences learned on
    tune: np.ndarray         # sequences of the tune role, in ``tune_file``
    report: np.ndarray       # valid-file sequences only ever reported on
    tune_file: str           # "valid", or "train" when the tune role is carved from train


def sequence_roles(split: dict, valid_ids, train_ids=None) -> Roles:
    """The roles a spec's ``split`` (split_info) gives the sequences of a train and a valid file.

    The one place the split is applied: with ``tune_from="valid"`` (the default) the valid
    file's sequences divide into tune and report and all of train is fit; with ``"train"`` the
    tune role is carved from train (``train_ids`` needed) and all of valid is report.
    """
    valid = _ids(valid_ids)
    if split.get("tune_from", "valid") == "train":
        if train_ids is None:
            raise ValueError("a split with tune_from='train' needs the train file's sequence ids")
        carved, fit = split_roles(train_ids, split["tune_frac"], split["seed"])
        return Roles(fit, carved, np.arange(len(valid)), "train")
    tune, report = split_roles(valid, split["tune_frac"], split["seed"])
    fit = np.arange(0 if train_ids is None else len(_ids(train_ids)))
    return Roles(fit, tune, report, "valid")


def report_roles(seq_ix_or_n, split: dict) -> np.ndarray:
    """The report-role sequences of a valid file under ``split``: the report half of the valid
    file, or all of it when the tune rows were carved from train."""
    if split.get("tune_from", "valid") == "train":
        return np.arange(len(_ids(seq_ix_or_n)))
    return sequence_roles(split, seq_ix_or_n).report


def split_info(tune_frac: float = DEFAULT_TUNE_FRAC, seed: int = DEFAULT_SPLIT_SEED,
               tune_from: str = "valid") -> dict:
    """What every spec records about the split."""
    return {"tune_frac": tune_frac, "seed": seed, "tune_from": tune_from}


def row_roles(valid_mask: np.ndarray, tune_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per need-prediction row of the valid file (file order): (sequence index, is-tune flag).

    Bundles store ``valid_pred`` as the need-prediction rows of the valid file in
    file order; this maps those rows back to their sequence and role.
    """
    valid_mask = np.asarray(valid_mask, dtype=bool)
    seq_of_row = np.repeat(np.arange(valid_mask.shape[0]), valid_mask.sum(axis=1))
    is_tune = np.isin(seq_of_row, np.asarray(tune_idx))
    return seq_of_row, is_tune
