"""Import checkpoint bundles trained elsewhere (Kaggle, another cluster) into the member pool.

Each bundle is validated on its own (spec, weights loadable with
``weights_only=True`` into the model its spec describes, predictions covering
exactly the valid file it claims, and that file's fingerprint matching the
local valid data), and against this pool:

- its role split (tune fraction, seed, where tune comes from) must equal the
  pool's, since a member that early-stopped on what this pool calls report
  would leak the report split into every decision made with it;
- a bagged member (k-fold, ``training/bagging.py``) must also have been trained on the
  local train file with the fold assignment its K and fold seed give on this
  data, else it is rejected saying what differs;
- its ``valid_pred.npy`` must be what its weights predict (a bag: its K models'
  average), re-computed here on a sample of valid sequences (the ensemble
  trusts those predictions);
- a ``latency.json`` measured on another host is dropped and the member's cost
  measured again here.

Valid bundles are copied into ``<run_dir>/checkpoints/imported/``
and logged as runs of the ``retrain`` experiment (stage tag ``imported``), so
leaderboards and ``--from-mlflow retrain`` see them. Bad ones are rejected
with one reason each and leave no trace. Finally a Prefect event tells the
ensemble deployment's trigger that new members arrived.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from ..data.loader import LobData, data_paths, load, load_role
from ..data.splits import split_info
from ..errors import UserError
from ..training.bundle import Bundle, BundleError, find_bundles, load_bundle, validate_bundle

EVENT = "lobsweep.checkpoints.imported"
RESOURCE_ID = "lobsweep.checkpoints"
CHECK_SEQUENCES = 4          # valid sequences whose predictions are recomputed from the weights
PRED_TOLERANCE = 1e-3        # max |diff| allowed (float32 on another machine's BLAS differs by ~1e-6)


def pool_split(pool: str) -> dict:
    """The role split every bundle in ``pool`` shares, or the default split for an empty pool."""
    splits = set()
    for path in find_bundles(pool):
        try:
            splits.add(json.dumps(load_bundle(path).spec["data"].get("split"), sort_keys=True))
        except BundleError:
            continue
    if len(splits) > 1:
        raise UserError(f"{pool}: its bundles were trained with different role splits ({' vs '.join(sorted(splits))})")
    return json.loads(splits.pop()) if splits else split_info()


def check_split(b: Bundle, expected: dict) -> None:
    got = b.spec["data"].get("split")
    if got != expected:
        raise BundleError(f"{b.path}: trained with role split {got}, this pool uses {expected}; its early stopping "
                          f"may have seen what this pool calls report")


def check_predictions(b: Bundle, valid: LobData, n_seq: int = CHECK_SEQUENCES) -> float:
    """Recompute the bundle's predictions on ``n_seq`` evenly spaced valid sequences; max |diff| (or BundleError)."""
    from ..training.trainer import predict
    idx = np.unique(np.linspace(0, valid.n_seq - 1, min(n_seq, valid.n_seq)).round().astype(int))
    offsets = np.concatenate([[0], np.cumsum(valid.mask.sum(axis=1))])
    F = b.pipeline().transform(np.asarray(valid.X[idx]))
    P = np.mean([predict(m, F, 8, "cpu") for m in b.build_models()], axis=0)    # [k, T, 2]; a bag: the K average
    worst = 0.0
    for k, i in enumerate(idx):
        mine = P[k][valid.mask[i]]
        theirs = b.valid_pred[offsets[i]:offsets[i + 1]]
        worst = max(worst, float(np.abs(mine - theirs).max()))
    if not worst <= PRED_TOLERANCE:
        raise BundleError(f"{b.path}: valid_pred.npy is not what its weights predict (max |diff| {worst:.2g} over "
                          f"{len(idx)} valid sequences, tolerance {PRED_TOLERANCE:g})")
    return worst


def pool_dir(run_dir: str | None = None) -> str:
    from ..tracking import run_dir as rd
    return os.path.join(rd(run_dir), "checkpoints")


def import_checkpoints(src: str, data_dir: str, *, run_dir: str | None = None, tracking_uri: str | None = None,
                       use_mlflow: bool = True, emit: bool = True) -> dict:
    """Validate, copy, register and announce the bundles under ``src``. Returns a summary."""
    if not os.path.isdir(src):
        raise UserError(f"{src}: not a directory of checkpoint bundles")
    found = find_bundles(src)
    if not found:
        raise UserError(f"{src}: no bundles (folders holding spec.json) found")
    valid_path = data_paths(data_dir)["valid"]
    if not os.path.exists(valid_path):
        raise UserError(f"--data {data_dir}: no valid.parquet to check the bundles against")
    valid = load(valid_path)
    n_rows = int(valid.mask.sum())
    from ..submission.cost import LATENCY_FILE, member_cost_ms
    dest_root = os.path.join(pool_dir(run_dir), "imported")
    os.makedirs(dest_root, exist_ok=True)
    expected_split = pool_split(pool_dir(run_dir))
    accepted, rejected = [], []
    train = None
    for path in found:
        try:
            b = validate_bundle(path, valid.fingerprint, n_rows)
            check_split(b, expected_split)
            if "bag" in b.spec:                 # a bagged member: its folds must be this pool's
                from ..training.bagging import check_fold_assignment
                train = train or _train_file(data_dir)
                check_fold_assignment(path, train, valid)
            pred_diff = check_predictions(b, valid)
        except BundleError as exc:
            rejected.append({"bundle": path, "reason": str(exc)})
            continue
        name = os.path.basename(os.path.normpath(path))
        dest = os.path.join(dest_root, name)
        tmp = tempfile.mkdtemp(prefix=".import-", dir=dest_root)
        shutil.rmtree(tmp)
        shutil.copytree(path, tmp, ignore=shutil.ignore_patterns(LATENCY_FILE, "latency-*.json"))  # measured here
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        accepted.append({"bundle": dest, "source": os.path.abspath(path), "pred_max_abs_diff": pred_diff,
                         "ms_per_step": member_cost_ms(dest)})
    if use_mlflow and accepted:
        from ..training.member import log_member
        for a in accepted:
            a["mlflow_run_id"] = log_member(load_bundle(a["bundle"]), {
                "experiment": "retrain", "uri": tracking_uri, "stage": "imported",
                "tags": {"source": a["source"], "imported": "true"}}, {"ms_per_step": a["ms_per_step"]})
    event = None
    if emit and accepted:
        event = announce(pool_dir(run_dir), data_dir, [a["bundle"] for a in accepted])
    return {"accepted": accepted, "rejected": rejected, "pool": pool_dir(run_dir), "event": event}


def _train_file(data_dir: str) -> LobData:
    return load_role(data_dir, "train", "bagged members' fold assignment is checked against it")


def announce(pool: str, data_dir: str, bundles: list[str]) -> str | None:
    """Emit the Prefect event the ensemble deployment is triggered by; returns its id.

    Needs ``PREFECT_API_URL`` (without it Prefect would talk to a throwaway
    in-process server and no deployment would ever see the event).
    """
    if not os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.events import emit_event
    ev = emit_event(event=EVENT, resource={"prefect.resource.id": RESOURCE_ID},
                    payload={"path": os.path.abspath(pool), "data_dir": os.path.abspath(data_dir),
                             "bundles": [os.path.abspath(b) for b in bundles]})
    return str(ev.id) if ev is not None else None
