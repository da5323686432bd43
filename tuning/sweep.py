"""The hyperparameter sweep: every family's space, ASHA + TPE, one folder, one MLflow parent run.

Layout of ``<run_dir>/sweeps/<name>/``::

    sweep.json          settings, MLflow ids, per-family progress (resume reads it)
    cache/              the prepared feature arrays all trials open
    ray/<family>/       Ray Tune's experiment (storage_path): trials, checkpoints, logs
    families/<f>.json   trial records of a family whose experiment has ended
    bundles/<trial_id>/ the best model of every *completed* trial (pruned ones get none)
    leaderboard.json    top-K per family (leaderboard.py), read by the retrain stage

Families run one after another, each a Tune experiment with its own space and
``num_samples`` trials; with ``joint=True`` one experiment searches the family
itself as a categorical dimension (``num_samples`` trials in all). A time
budget is shared out as it goes: each family gets an equal part of what is
left, so time a family did not use passes to the next. Resume continues the
family that was running when the driver died and skips finished ones.
"""

from __future__ import annotations

import json
import os
import re
import time

from ..errors import UserError
from .leaderboard import sweep_dir

EXPERIMENT = "hpo"
ALL = "all"


def resolve_families(families) -> list[str]:
    """``"gru,lstm"`` / a list / ``"all"`` -> checked family names (UserError for unknown ones)."""
    from ..models import get_config_class, list_models
    if isinstance(families, str):
        families = [f.strip() for f in families.split(",") if f.strip()]
    families = list(families or [])
    if families == [ALL]:
        families = list_models()
    if not families:
        raise UserError("no model family given (--families gru,lstm,... or all)")
    for f in families:
        get_config_class(f)
    if len(set(families)) != len(families):
        raise UserError(f"a family is listed twice in {','.join(families)}")
    return families


def _check_data(data_dir) -> None:
    from ..data.loader import data_paths
    if data_dir is None:
        raise UserError("--data DIR is required (a folder with train.parquet and valid.parquet)")
    for role in ("train", "valid"):
        if not os.path.exists(data_paths(data_dir)[role]):
            raise UserError(f"{data_dir}: no {role}.parquet (--data DIR must hold train.parquet and valid.parquet)")


def check_settings(s: dict) -> None:
    def need(ok, msg):
        if not ok:
            raise UserError(msg)
    need(int(s["num_samples"]) >= 1, f"--num-samples must be >= 1, got {s['num_samples']}")
    need(int(s["max_epochs"]) >= 1, f"--max-epochs must be >= 1, got {s['max_epochs']}")
    need(1 <= int(s["grace_period"]) <= int(s["max_epochs"]),
         f"--grace-period must be in [1, max epochs = {s['max_epochs']}], got {s['grace_period']}")
    need(float(s["reduction_factor"]) > 1, f"--reduction-factor must be > 1, got {s['reduction_factor']}")
    need(s["time_budget_s"] is None or float(s["time_budget_s"]) > 0,
         f"--time-budget must be > 0 seconds, got {s['time_budget_s']}")
    need(s["max_concurrent"] is None or int(s["max_concurrent"]) >= 1,
         f"--max-concurrent must be >= 1, got {s['max_concurrent']}")
    need(int(s["top_k"]) >= 1, f"--top-k must be >= 1, got {s['top_k']}")
    need(s.get("max_train_seqs") is None or int(s["max_train_seqs"]) >= 1,
         f"--max-train-seqs must be >= 1, got {s.get('max_train_seqs')}")
    need(s["scheduler"] in ("asha", "fifo") and s["searcher"] in ("tpe", "random"),
         "scheduler must be asha or fifo and searcher tpe or random")


def run_sweep(data_dir, families, *, name=None, num_samples=8, max_epochs=8, grace_period=1, reduction_factor=3,
              time_budget_s=None, resources=None, max_concurrent=None, features_spec=None, max_train_seqs=None,
              ray_address=None, tracking_uri=None, resume=False, run_dir=None, seed=0, top_k=3, joint=False,
              scheduler="asha", searcher="tpe", spaces=None, train_fixed=None, points_to_evaluate=None,
              callbacks=None, track=True, verbose=0, local_cpus=None, local_gpus=None, recipes=True,
              extend=None, set_space=None) -> dict:
    """Run, resume or extend a sweep; returns a summary with the leaderboard path.

    ``spaces`` (``{family: {"model": {...}, "train": {...}}}``) replaces the
    default spaces; ``points_to_evaluate`` lists configs to try first (keys as
    in the sweep space: ``"model.hidden"``, ``"train.lr"``). With ``recipes``
    each family's named recipes (search_spaces/recipes.py) are its first
    trials. On resume the stored settings are used and only ``ray_address`` /
    ``resources`` apply. ``extend=NAME`` continues a finished sweep with
    ``num_samples`` more trials per family, its space narrowed by
    ``set_space`` (``["model.layers=[3,4]", ...]``; see sweep_extend.py).
    """
    from ..tracking import run_dir as _run_dir
    from .ray_setup import parse_resources
    run_dir = _run_dir(run_dir)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(name)):
        raise UserError(f"sweep name must be letters, digits, '.', '_' or '-', got {name!r}")
    if extend:
        meta, meta_path = _extension(run_dir, str(extend), num_samples, set_space, time_budget_s)
        name = meta["name"]
        if resources is not None:
            meta["resources"] = parse_resources(resources)
    elif resume:
        if not name:
            raise UserError("resume needs the sweep's name (--resume NAME)")
        meta_path = os.path.join(sweep_dir(run_dir, name), "sweep.json")
        if not os.path.exists(meta_path):
            raise UserError(f"no sweep named {name!r} under {run_dir}/sweeps (nothing to resume)")
        meta = json.load(open(meta_path))
        if resources is not None:
            meta["resources"] = parse_resources(resources)
    else:
        name = name or time.strftime("sweep-%Y%m%d-%H%M%S")
        meta_path = os.path.join(sweep_dir(run_dir, name), "sweep.json")
        if os.path.exists(meta_path):
            raise UserError(f"sweep {name!r} already exists; resume it with --resume {name} or pick another --name")
        _check_data(data_dir)
        meta = {"name": name, "data_dir": os.path.abspath(data_dir), "families": resolve_families(families),
                "num_samples": num_samples, "max_epochs": max_epochs, "grace_period": grace_period,
                "reduction_factor": reduction_factor, "time_budget_s": time_budget_s,
                "resources": parse_resources(resources), "max_concurrent": max_concurrent,
                "features_spec": features_spec, "max_train_seqs": max_train_seqs, "seed": seed, "top_k": top_k,
                "joint": bool(joint), "scheduler": scheduler, "searcher": searcher, "spaces": spaces or {},
                "train_fixed": train_fixed or {}, "points_to_evaluate": points_to_evaluate,
                "tracking_uri": tracking_uri, "track": bool(track), "recipes": bool(recipes)}
        check_settings(meta)
    from .sweep_run import execute
    return execute(meta, meta_path, run_dir, ray_address=ray_address, callbacks=callbacks, verbose=verbose,
                   local_cpus=local_cpus, local_gpus=local_gpus)


def _extension(run_dir: str, name: str, num_samples, set_space, time_budget_s) -> tuple[dict, str]:
    """The stored settings of finished sweep ``name`` with one more extension appended (checked)."""
    from .sweep_extend import check_extendable, check_overrides, experiments, parse_set_space
    meta_path = os.path.join(sweep_dir(run_dir, name), "sweep.json")
    if not os.path.exists(meta_path):
        raise UserError(f"no sweep named {name!r} under {run_dir}/sweeps (nothing to extend)")
    meta = json.load(open(meta_path))
    fam_dir = os.path.join(os.path.dirname(meta_path), "families")
    done = {f[:-5] for f in os.listdir(fam_dir) if f.endswith(".json")} if os.path.isdir(fam_dir) else set()
    check_extendable(meta, [e["name"] for e in experiments(meta)], done)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {num_samples!r}")
    if time_budget_s is not None and not float(time_budget_s) > 0:
        raise UserError(f"--time-budget must be > 0 seconds, got {time_budget_s}")
    overrides = parse_set_space(set_space, meta["families"])
    check_overrides(overrides)
    meta.setdefault("extensions", []).append({"num_samples": int(num_samples), "set_space": overrides,
                                              "time_budget_s": time_budget_s,
                                              "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return meta, meta_path
