"""What a retrain trains: one job per (leaderboard entry, seed), and where its summary goes.

Shared by the multi-seed retrain (``retrain.py``) and the k-fold bagged one
(``bag_retrain.py``): the same entries of a sweep's leaderboard, the same
seeds, the same ``retrain.json``.
"""

from __future__ import annotations

import json
import os

from ..errors import UserError
from ..training.bundle import load_bundle

SEED_BASE = 10_000          # retrain seeds never coincide with sweep trial seeds


def feature_spec_of(features: dict | None) -> dict:
    """The pipeline *spec* from a bundle's fitted pipeline JSON (or a bare spec)."""
    features = features or {}
    return features.get("spec", features) if "format" in features else features


def retrain_entries(board: dict, top_k: int, adopt: bool = False) -> list[tuple[int, dict]]:
    """(rank, entry) to retrain: the top ``top_k`` of each family (with ``adopt``: of the whole
    board, as every family's top trials join as they are), plus the floor when it is not among them."""
    if adopt:
        chosen = list(enumerate(board.get("overall", [])[:top_k]))
    else:
        chosen = [(rank, e) for entries in board.get("families", {}).values() for rank, e in enumerate(entries[:top_k])]
    floor = board.get("floor")
    if floor and not any(e["trial_id"] == floor["trial_id"] for _, e in chosen):
        chosen.append((len(chosen), floor))
    return chosen


def plan_jobs(board: dict, top_k: int, seeds: int, max_epochs: int | None = None, adopt: bool = False) -> list[dict]:
    """One job per (leaderboard entry, seed) for the entries of ``retrain_entries``."""
    if top_k < 1 or seeds < 1:
        raise UserError(f"--top-k and --seeds must be >= 1, got {top_k} and {seeds}")
    jobs = []
    for rank, e in retrain_entries(board, top_k, adopt):
        family = e["family"]
        tcfg = dict(e.get("train_config") or {})
        tcfg["time_limit_s"] = 0.0          # a trial's own deadline is not a member's; the stage sets one
        if max_epochs:
            tcfg["epochs"] = int(max_epochs)
            tcfg["swa_epochs"] = min(int(tcfg.get("swa_epochs", 0)), int(max_epochs))
        for s in range(seeds):
            jobs.append({"family": family, "hparams": e["hparams"], "train_config": tcfg,
                         "features": feature_spec_of(e.get("features")), "seed": SEED_BASE + 100 * rank + s,
                         "parent_trial": e["trial_id"], "parent_bundle": e.get("bundle"), "rank": rank,
                         "train_seconds": (e.get("train_seconds") or 0.0),
                         "epoch_seconds": (e.get("train_seconds") or 0.0) / max(1, int(e.get("epochs") or 1)),
                         "floor": bool(board.get("floor")) and e["trial_id"] == board["floor"]["trial_id"],
                         "name": f"{family}-{e['trial_id']}-s{s}"})
    if not jobs:
        raise UserError("the leaderboard has no completed trials to retrain")
    return jobs


def write_summary(root: str, summary: dict, what: str) -> dict:
    """``root/retrain.json`` written atomically; a stage where every member failed raises after writing it."""
    path = os.path.join(root, "retrain.json")
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f, indent=1, default=str)
    os.replace(path + ".tmp", path)
    summary["path"] = path
    if not summary["bundles"]:
        raise UserError(f"every {what} failed; first error: {summary['failed'][0]['error']}")
    return summary


def data_dir_of(board: dict) -> str:
    for es in board.get("families", {}).values():
        for e in es:
            if e.get("bundle") and os.path.isdir(e["bundle"]):
                d = load_bundle(e["bundle"]).spec["data"].get("data_dir")
                if d:
                    return d
    raise UserError("cannot tell which data the sweep used; pass --data DIR")
