"""Import checkpoint bundles trained elsewhere (Kaggle, another cluster) into the member pool.

Each bundle is validated on its own (spec, weights loadable with
``weights_only=True`` into the model its spec describes, predictions covering
exactly the valid file it claims, and that file's fingerprint matching the
local valid data). A bagged member (k-fold, ``bagging.py``) must also have
been trained on the local train file with the fold assignment its K and fold
seed give on this data, else it is rejected saying what differs. Valid bundles are copied into ``<run_dir>/checkpoints/imported/``
and logged as runs of the ``retrain`` experiment (stage tag ``imported``), so
leaderboards and ``--from-mlflow retrain`` see them. Bad ones are rejected
with one reason each and leave no trace. Finally a Prefect event tells the
ensemble deployment's trigger that new members arrived.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ..data.loader import data_paths, load
from ..errors import UserError
from .bundle import BundleError, find_bundles, validate_bundle

EVENT = "lobsweep.checkpoints.imported"
RESOURCE_ID = "lobsweep.checkpoints"


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
    dest_root = os.path.join(pool_dir(run_dir), "imported")
    os.makedirs(dest_root, exist_ok=True)
    accepted, rejected = [], []
    train = None
    for path in found:
        try:
            b = validate_bundle(path, valid.fingerprint, n_rows)
            if "bag" in b.spec:                 # a bagged member: its folds must be this pool's
                from .bagging import check_fold_assignment
                train = train or _train_file(data_dir)
                check_fold_assignment(path, train, valid)
        except BundleError as exc:
            rejected.append({"bundle": path, "reason": str(exc)})
            continue
        name = os.path.basename(os.path.normpath(path))
        dest = os.path.join(dest_root, name)
        tmp = tempfile.mkdtemp(prefix=".import-", dir=dest_root)
        shutil.rmtree(tmp)
        shutil.copytree(path, tmp)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        accepted.append({"bundle": dest, "source": os.path.abspath(path)})
    if use_mlflow and accepted:
        from .bundle import load_bundle
        from .member import log_member
        for a in accepted:
            a["mlflow_run_id"] = log_member(load_bundle(a["bundle"]), {
                "experiment": "retrain", "uri": tracking_uri, "stage": "imported",
                "tags": {"source": a["source"], "imported": "true"}})
    event = None
    if emit and accepted:
        event = announce(pool_dir(run_dir), data_dir, [a["bundle"] for a in accepted])
    return {"accepted": accepted, "rejected": rejected, "pool": pool_dir(run_dir), "event": event}


def _train_file(data_dir: str):
    path = data_paths(data_dir)["train"]
    if not os.path.exists(path):
        raise UserError(f"--data {data_dir}: no train.parquet to check bagged members' fold assignment against")
    return load(path)


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
