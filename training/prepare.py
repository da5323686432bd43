"""Turn a ``--data DIR`` into the three roles' feature arrays, with a disk cache.

    fit    = train file               (or train minus the carved tune part)
    tune   = part of valid (default)  (or part of train with tune_from="train")
    report = rest of valid            (all of valid with tune_from="train")

The raw arrays and each fitted feature pipeline's outputs are cached as .npy
under ``cache_dir``, keyed by the file's identity and the pipeline spec, and
opened memory-mapped: a sweep's trials share one transform instead of
recomputing it per trial.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from ..data.loader import LobData, data_paths, load, load_oracle
from ..data.splits import sequence_roles, split_info
from ..errors import UserError
from ..features import FeaturePipeline
from .trainer import Split


@dataclass
class Prepared:
    pipeline: FeaturePipeline
    fit: Split
    tune: Split
    report: Split
    valid_X: np.ndarray            # [Nv, T, F] transformed valid file, file order
    valid_mask: np.ndarray         # [Nv, T]
    valid_Y: np.ndarray            # [Nv, T, 2]
    tune_idx: np.ndarray           # indices into the valid file (empty with tune_from="train")
    report_idx: np.ndarray
    oracle: np.ndarray | None      # [Nv, T, 2] when oracle_valid.parquet exists
    info: dict                     # fingerprints and split, recorded in every spec


def _key(*parts) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=10).hexdigest()


def _file_id(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _cached_raw(path: str, cache_dir: str | None) -> LobData:
    """``load`` with the arrays cached as .npy (validation runs once per file version)."""
    if not cache_dir:
        return load(path)
    d = os.path.join(cache_dir, "raw-" + _key(_file_id(path)))
    names = ("X", "Y", "mask", "seq_ix")
    if os.path.exists(os.path.join(d, "meta.json")):
        meta = json.load(open(os.path.join(d, "meta.json")))
        arrs = {n: np.load(os.path.join(d, n + ".npy"), mmap_mode="r") for n in names}
        return LobData(X=arrs["X"], Y=arrs["Y"], mask=np.asarray(arrs["mask"]), seq_ix=np.asarray(arrs["seq_ix"]),
                       fingerprint=meta["fingerprint"], path=path)
    data = load(path)
    tmp = d + f".tmp{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    for n in names:
        np.save(os.path.join(tmp, n + ".npy"), getattr(data, n))
    json.dump({"fingerprint": data.fingerprint, "path": path}, open(os.path.join(tmp, "meta.json"), "w"))
    try:
        os.replace(tmp, d)
    except OSError:                      # another process won the race; use its copy
        pass
    return data


def _cached_transform(pipe: FeaturePipeline, X: np.ndarray, tag: str, cache_dir: str | None) -> np.ndarray:
    if not cache_dir:
        return pipe.transform(X)
    path = os.path.join(cache_dir, f"feat-{_key(tag, pipe.to_json())}.npy")
    if os.path.exists(path):
        return np.load(path, mmap_mode="r")
    out = pipe.transform(X)
    tmp = path + f".tmp{os.getpid()}.npy"
    np.save(tmp, out)
    os.replace(tmp, path)
    return out


def prepare(data_dir: str, features_spec: dict | None = None, *, tune_frac: float = 0.5, split_seed: int = 0,
            tune_from: str = "valid", max_train_seqs: int | None = None, subsample_seed: int = 0,
            cache_dir: str | None = None) -> Prepared:
    """Load, split into roles, fit the feature pipeline on fit data, transform all roles."""
    paths = data_paths(data_dir)
    for role in ("train", "valid"):
        if not os.path.exists(paths[role]):
            raise UserError(f"{data_dir}: no {os.path.basename(paths[role])} (--data DIR must hold "
                            f"train.parquet and valid.parquet)")
    if tune_from not in ("valid", "train"):
        raise UserError(f"tune_from must be 'valid' or 'train', got {tune_from!r}")
    train = _cached_raw(paths["train"], cache_dir)
    valid = _cached_raw(paths["valid"], cache_dir)
    oracle = load_oracle(paths["oracle_valid"], valid) if os.path.exists(paths["oracle_valid"]) else None

    roles = sequence_roles(split_info(tune_frac, split_seed, tune_from), valid.seq_ix, train.seq_ix)
    fit_idx, report_idx = roles.fit, roles.report
    carved_tune = roles.tune if roles.tune_file == "train" else None
    tune_idx = roles.tune if roles.tune_file == "valid" else np.array([], dtype=np.int64)
    if max_train_seqs and max_train_seqs < len(fit_idx):
        rng = np.random.default_rng(subsample_seed)
        fit_idx = np.sort(rng.choice(fit_idx, size=max_train_seqs, replace=False))

    pipe = FeaturePipeline.from_spec(features_spec or {})
    fit_X = np.asarray(train.X[fit_idx]) if len(fit_idx) < train.n_seq else train.X
    pipe.fit(fit_X, mask=train.mask[fit_idx])
    del fit_X
    tag = [train.fingerprint, fit_idx.tolist() if len(fit_idx) < train.n_seq else "all"]
    # Only the train sequences a role uses are transformed: with --max-train-seqs 64 on the real
    # 10.7M-row file, transforming all of it held a second full-size array for nothing.
    used = np.sort(np.concatenate([fit_idx, carved_tune])) if tune_from == "train" else fit_idx
    whole = len(used) == train.n_seq
    train_F = _cached_transform(pipe, train.X if whole else np.asarray(train.X[used]),
                                f"train:{tag}:{'all' if whole else used.tolist()}", cache_dir)
    valid_F = _cached_transform(pipe, valid.X, f"valid:{valid.fingerprint}:{tag}", cache_dir)

    def role(data: LobData, F: np.ndarray, idx: np.ndarray, rows: np.ndarray | None = None) -> Split:
        """``idx`` indexes ``data``; ``rows`` the same sequences' rows in ``F`` (default: ``idx``)."""
        rows = idx if rows is None else rows
        if len(idx) == data.n_seq and len(rows) == F.shape[0]:
            return Split(F, data.Y, data.mask)
        return Split(np.asarray(F[rows]), np.asarray(data.Y[idx]), data.mask[idx])

    fit_split = role(train, train_F, fit_idx, np.searchsorted(used, fit_idx))
    if tune_from == "train":
        tune_split = role(train, train_F, carved_tune, np.searchsorted(used, carved_tune))
    else:
        tune_split = role(valid, valid_F, tune_idx)
    report_split = role(valid, valid_F, report_idx)
    info = {"train_fingerprint": train.fingerprint, "valid_fingerprint": valid.fingerprint,
            "split": split_info(tune_frac, split_seed, tune_from), "n_fit": int(len(fit_split)),
            "n_tune": int(len(tune_split)), "n_report": int(len(report_split)),
            "max_train_seqs": max_train_seqs, "subsample_seed": subsample_seed,
            "n_features": int(pipe.n_features_out), "data_dir": os.path.abspath(data_dir)}
    return Prepared(pipeline=pipe, fit=fit_split, tune=tune_split, report=report_split, valid_X=valid_F,
                    valid_mask=valid.mask, valid_Y=np.asarray(valid.Y), tune_idx=tune_idx, report_idx=report_idx,
                    oracle=oracle, info=info)


def oracle_scores(prep: Prepared) -> dict | None:
    """The oracle's official score on the tune and report roles of the valid file."""
    from ..data.metric import score_masked
    if prep.oracle is None or prep.info["split"]["tune_from"] == "train":
        return None if prep.oracle is None else {
            "report": score_masked(prep.valid_Y, prep.oracle, prep.valid_mask)}
    out = {}
    for name, idx in (("tune", prep.tune_idx), ("report", prep.report_idx)):
        out[name] = score_masked(prep.valid_Y[idx], prep.oracle[idx], prep.valid_mask[idx])
    return out
