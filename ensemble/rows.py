"""Which rows the ensemble is chosen on, and which it is reported on.

Every member's predictions must cover the same selection rows, with their
targets and sequence ids, and the same report rows. Three layouts, read off
the bundles' specs (DESIGN.md, "Honest evaluation"):

    tune_from="valid" (default)  select on the valid file's tune role rows of
                                 ``valid_pred.npy``; report on the rest
    tune_from="train"            select on ``tune_pred.npy`` (the tune sequences
                                 carved out of train); report on all of valid
    bagged members (all, same    select on ``oof_pred.npy``: out-of-fold rows of
    fold assignment)             the whole pool (train + the valid tune role);
                                 report on the valid report role (K-model
                                 averages); a final fit has no honest report
Bagged and plain members are not mixed: a bag has no out-of-fold rows on
the tune role alone that a plain member could be compared with.

Targets always come from the data files, never from a bundle. Sequence ids
(``groups``) are made unique across files: valid sequences are offset by the
train count. Shapes: ``P[N, M, 2]``, ``Y[N, 2]``, ``groups[N]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.loader import LobData, load_role
from ..data.splits import row_roles, sequence_roles
from ..errors import UserError
from ..training.bundle import Bundle, BundleError, load_pred


@dataclass
class SelectionRows:
    P_tune: np.ndarray          # [N_tune, M, 2]
    Y_tune: np.ndarray          # [N_tune, 2]
    g_tune: np.ndarray          # [N_tune]
    P_report: np.ndarray        # [N_rep, M, 2]
    Y_report: np.ndarray        # [N_rep, 2]
    g_report: np.ndarray        # [N_rep]
    report_rows: np.ndarray     # bool [valid need-prediction rows]: the rows reported on
    selected_on: str            # "tune" | "tune-from-train" | "oof"
    honest: bool = True         # False for a final fit (report was in the pool)


def _rows_of(data: LobData, idx: np.ndarray, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``[n, 2]`` and group ids ``[n]`` of the need-prediction rows of sequences ``idx``."""
    mask = data.mask[idx]
    groups = np.repeat(np.asarray(idx) + offset, mask.sum(axis=1))
    return np.asarray(data.Y[idx])[mask], groups


def _same(members: list[Bundle], key, what: str) -> object:
    values = {repr(key(m)) for m in members}
    if len(values) > 1:
        raise UserError(f"the members differ in {what} ({len(values)} different values); ensemble members "
                        "must share it, so ensemble them in separate runs")
    return key(members[0])


def selection_rows(members: list[Bundle], valid: LobData, split: dict, data_dir: str) -> SelectionRows:
    """The selection and report arrays for ``members`` (see the module docstring)."""
    bagged = [m.name for m in members if m.spec.get("bag")]
    if bagged and len(bagged) == len(members):
        return _oof_rows(members, valid, data_dir)
    if bagged:      # a bag's valid_pred on tune rows is its K-model average: in-sample, not comparable
        raise UserError(f"bagged members ({', '.join(bagged[:3])}) cannot be ensembled with plain ones: bags select "
                        "on out-of-fold pool rows, plain members on the tune role; ensemble them separately")
    tune_from = _same(members, lambda m: m.spec["data"]["split"].get("tune_from", "valid"), "tune_from")
    if tune_from == "train":
        return _train_tune_rows(members, valid, split, data_dir)
    seq_of_row, is_tune = row_roles(valid.mask, sequence_roles(split, valid.seq_ix).tune)
    Y = valid.Y[valid.mask]
    P = np.stack([m.valid_pred for m in members], axis=1)                 # [rows, M, 2]
    return SelectionRows(P[is_tune], Y[is_tune], seq_of_row[is_tune], P[~is_tune], Y[~is_tune],
                         seq_of_row[~is_tune], ~is_tune, "tune")


def _train_file(data_dir: str) -> LobData:
    return load_role(data_dir, "train", "these members select on train rows; pass --data DIR")


def _stacked(members, name: str, n_rows: int, where: str) -> np.ndarray:
    """Each member's saved ``name`` predictions, checked to cover ``n_rows`` rows of ``where``: [rows, M, 2]."""
    preds = []
    for m in members:
        p = load_pred(m.path, name)
        if p.shape[0] != n_rows:
            raise BundleError(f"{m.path}: {name} has {p.shape[0]} rows; {where} has {n_rows}")
        preds.append(p)
    return np.stack(preds, axis=1)


def _train_tune_rows(members, valid, split, data_dir) -> SelectionRows:
    train = _train_file(data_dir)
    roles = sequence_roles({**split, "tune_from": "train"}, valid.seq_ix, train.seq_ix)
    Y_tune, g_tune = _rows_of(train, roles.tune)
    preds = _stacked(members, "tune_pred", Y_tune.shape[0], "the carved tune split")
    Y_rep, g_rep = _rows_of(valid, roles.report, offset=train.n_seq)
    P_rep = np.stack([m.valid_pred for m in members], axis=1)
    return SelectionRows(preds, Y_tune, g_tune, P_rep, Y_rep, g_rep,
                         np.ones(P_rep.shape[0], dtype=bool), "tune-from-train")


def _oof_rows(members, valid, data_dir) -> SelectionRows:
    from ..training.bagging import load_folds, pool_sequences
    bag = _same(members, lambda m: {k: m.spec["bag"][k] for k in ("folds_digest", "final", "k")},
                "fold assignment (bagged members must share one)")
    pool = members[0].spec["bag"]["pool"]
    load_folds(members[0].path)                 # checked to exist and to match its digest
    train = _train_file(data_dir)
    train_idx, valid_pool_idx, report_idx = pool_sequences(train, valid, pool)   # report in the pool if final
    Y_tr, g_tr = _rows_of(train, train_idx)
    Y_va, g_va = _rows_of(valid, valid_pool_idx, offset=train.n_seq)
    Y_pool, g_pool = np.concatenate([Y_tr, Y_va]), np.concatenate([g_tr, g_va])
    preds = _stacked(members, "oof_pred", Y_pool.shape[0], "the pool")
    seq_of_row, _ = row_roles(valid.mask, report_idx)
    is_rep = np.isin(seq_of_row, report_idx)
    Y = valid.Y[valid.mask]
    P_rep = np.stack([m.valid_pred for m in members], axis=1)[is_rep]
    return SelectionRows(preds, Y_pool, g_pool, P_rep, Y[is_rep], seq_of_row[is_rep] + train.n_seq,
                         is_rep, "oof", honest=not bag["final"])
