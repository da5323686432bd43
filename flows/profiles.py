"""Presets of the flows (``demo``, ``full``, ``smoke``) and their validation.

A profile is plain data: a wall-clock budget (or none), the stages' caps and
spaces, and the resources. ``resolve(profile, **overrides)`` lays the
caller's values over it, checks every one and returns ``Settings``, so a bad
value ends the flow (and the CLI, exit 2) with one line before anything is
written or any server, Ray or MLflow store is started.

- ``demo`` (the default preset): **5 minutes on 2 CPU cores**. The budget is
  the interface (flows/budget.py): one joint study over the families (the
  family is a dimension of the Optuna search, under one ASHA), each family's
  recipe first, the families' own spaces at full size on whole sequences
  (crops are a searchable option), epochs as ASHA's fidelity and an LR that
  anneals by the deadline; the trials the budget cuts keep their bundles; the
  search stops starting trials once it stagnates (tuning/stagnation.py);
  retrain adopts the best trials as members and fills the rest of its time
  with seeds of the best configs (early-stopped, annealing by its deadline).
  ``--time-budget 20m`` keeps all of that and changes the budget.
- ``full``: sized for a Ray cluster with GPUs and the real 10.7M-row train
  set: the families' spaces, full data, ASHA over 30 epochs, 3 seeds of each
  family's top 3 configs, one experiment per family (joint when given a
  time budget).
- ``smoke``: the whole chain at the smallest fixed counts (tiny models, crops
  of 256 steps, 2 epochs, no budget): what the tests and a quick check of a
  new machine run. It measures nothing about model quality.

The counts of a preset are caps: under a time budget a stage stops at its
allotment or its counts, whichever comes first.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field

from ..errors import UserError
from ..search_spaces import space_modules
from ..submission.precision import check_precision

# each family's smoke space lives in its search_spaces/<family>.py (SMOKE)
SMOKE_SPACES = {fam: mod.SMOKE for fam, mod in space_modules().items() if hasattr(mod, "SMOKE")}
SMOKE_TRAIN_SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 6e-3, "log": True},
    "batch_size": {"type": "choice", "values": [16, 32]},
    "loss": {"type": "choice", "values": ["wmse", "combo"]},
}

SMOKE = {
    "time_budget": None,
    "feature_search": {"num_samples": 4, "max_epochs": 1, "max_train_seqs": 128, "time_budget_s": 60.0},
    "hpo": {"num_samples": 3, "max_epochs": 2, "grace_period": 1, "reduction_factor": 3.0,
            "time_budget_s": 200.0, "max_train_seqs": 256, "top_k": 1,
            # crops of 256 steps (32 of burn-in) keep an epoch to seconds on a CPU core
            "train_fixed": {"crop_len": 256, "burn_in": 32, "patience": 2},
            "recipes": False, "joint": False},
    "retrain": {"top_k": 1, "seeds": 2, "max_epochs": 2},
    "ensemble": {"budget_minutes": 60.0, "safety": 2.0, "precision": "float32"},
    "resources": "cpu=1",
}
PROFILES = {
    "demo": {
        "time_budget": "5m",
        "feature_search": {"num_samples": 4, "max_epochs": 1, "max_train_seqs": 128, "time_budget_s": None},
        # the families' own spaces (crop_len, patience and the rest from the common space); every
        # family's recipes first; ASHA stops the weak early; the cap on trials is never reached in 5 min
        "hpo": {"num_samples": 64, "max_epochs": 16, "grace_period": 1, "reduction_factor": 3.0,
                "time_budget_s": None, "max_train_seqs": None, "top_k": 2, "train_fixed": {},
                "recipes": True, "joint": True,
                # no new trials once the best has not risen for the last half of the time gone (after
                # half the HPO's share): the time passes to seeds (tuning/stagnation.py)
                "stagnation": 0.5},
        # the best trials are members as they are (adopt); seeds of the best configs fill the
        # share, up to 8 per config
        "retrain": {"top_k": 2, "seeds": 8, "max_epochs": None, "adopt": True},
        "ensemble": {"budget_minutes": 60.0, "safety": 2.0, "precision": "float32"},
        "resources": "cpu=1",
    },
    "full": {
        "time_budget": None,
        "feature_search": {"num_samples": 48, "max_epochs": 4, "max_train_seqs": 2048, "time_budget_s": 7200.0},
        "hpo": {"num_samples": 64, "max_epochs": 30, "grace_period": 3, "reduction_factor": 3.0,
                # patience (3-12), crop_len (0 = whole sequences) and the rest come from the common space
                "time_budget_s": 43200.0, "max_train_seqs": None, "top_k": 3, "train_fixed": {},
                "recipes": True, "joint": False},
        "retrain": {"top_k": 3, "seeds": 3, "max_epochs": None},
        "ensemble": {"budget_minutes": 60.0, "safety": 2.0, "precision": "float32"},
        "resources": "cpu=4,gpu=0.5",
    },
    "smoke": SMOKE,
}

# flat override name -> (section, key) in a profile
OVERRIDES = {
    "num_samples": ("hpo", "num_samples"), "max_epochs": ("hpo", "max_epochs"),
    "hpo_budget_s": ("hpo", "time_budget_s"), "max_train_seqs": ("hpo", "max_train_seqs"),
    "top_k": ("retrain", "top_k"), "seeds": ("retrain", "seeds"), "retrain_epochs": ("retrain", "max_epochs"),
    "feature_samples": ("feature_search", "num_samples"), "feature_budget_s": ("feature_search", "time_budget_s"),
    "budget_minutes": ("ensemble", "budget_minutes"), "safety": ("ensemble", "safety"),
    "precision": ("ensemble", "precision"),     # weights in the zip (submission/engine_weights.py); costs per mode
    "folds": ("retrain", "folds"),              # k-fold bagged members (training/bagging.py); None = plain
    "stagnation": ("hpo", "stagnation"),        # under a budget: end the HPO once it stalls (0 = off)
}
_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.\-]+:\d+)$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


@dataclass(frozen=True)
class Settings:
    """Everything a flow needs, checked. Stage dicts hold the keyword arguments of the stage functions."""

    profile: str
    data_dir: str | None               # None: the synthetic default, generated under run_dir on first use
    run_dir: str                       # absolute
    families: tuple
    resources: dict
    ray_address: str | None = None
    tracking_uri: str | None = None
    feature_search: dict = field(default_factory=dict)   # {} when the feature search is off
    hpo: dict = field(default_factory=dict)
    retrain: dict = field(default_factory=dict)
    ensemble: dict = field(default_factory=dict)
    score: bool = True
    seed: int = 0
    time_budget_s: float | None = None    # one wall-clock budget for the whole run (flows/budget.py)

    @property
    def budgeted(self) -> bool:
        return self.time_budget_s is not None

    def default_data_dir(self) -> str:
        return os.path.join(self.run_dir, "data", "synthetic")


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise UserError(msg)


def _int(name: str, v, minimum: int = 1, optional: bool = False) -> int | None:
    if v is None and optional:
        return None
    _need(isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
          f"{name} must be a whole number >= {minimum}, got {v!r}")
    return int(v)


def _pos(name: str, v, optional: bool = True, minimum: float = 0.0, strict: bool = True) -> float | None:
    if v is None and optional:
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v > minimum if strict else v >= minimum)
    _need(ok and v == v and v != float("inf"), f"{name} must be a number {'>' if strict else '>='} {minimum:g}, "
                                               f"got {v!r}")
    return float(v)


def check_data_dir(data_dir: str | None) -> str | None:
    """None (synthetic default) or an existing folder holding train.parquet and valid.parquet."""
    if data_dir is None:
        return None
    _need(isinstance(data_dir, str) and data_dir != "", f"data_dir must be a folder path, got {data_dir!r}")
    _need(os.path.isdir(data_dir), f"--data {data_dir}: not a directory (it must hold train.parquet and "
                                   f"valid.parquet)")
    for role in ("train", "valid"):
        _need(os.path.isfile(os.path.join(data_dir, f"{role}.parquet")),
              f"--data {data_dir}: no {role}.parquet (the folder must hold train.parquet and valid.parquet)")
    return os.path.abspath(data_dir)


def check_run_dir(run_dir: str | None) -> str:
    path = os.path.abspath(run_dir or os.environ.get("LOBSWEEP_RUN_DIR") or "runs")
    _need(not os.path.exists(path) or os.path.isdir(path), f"--run-dir {path}: exists and is not a directory")
    return path


def check_endpoints(ray_address: str | None, tracking_uri: str | None) -> None:
    _need(ray_address is None or (isinstance(ray_address, str) and bool(_RAY_ADDRESS.match(ray_address))),
          f"--ray-address must be host:port, ray://host:port or auto, got {ray_address!r}")
    _need(tracking_uri is None or (isinstance(tracking_uri, str) and bool(_URI.match(tracking_uri))),
          f"--tracking-uri must be a URI such as sqlite:///path/mlflow.db or http://host:5000, got {tracking_uri!r}")


def _families(families) -> tuple:
    from ..tuning.sweep import resolve_families
    return tuple(resolve_families("all" if families in (None, "", []) else families))


def resolve(profile: str = "demo", *, data_dir: str | None = None, run_dir: str | None = None, families=None,
            resources: str | dict | None = None, ray_address: str | None = None, tracking_uri: str | None = None,
            feature_search: bool = True, score: bool = True, seed: int = 0, time_budget=None,
            **overrides) -> Settings:
    """The profile's settings with ``overrides`` (names in ``OVERRIDES``; None keeps the profile's value).

    ``time_budget`` ("5m", "2h", seconds; None keeps the preset's) shares one wall-clock budget out
    over the stages (flows/budget.py); the profile's counts and stage budgets stay as caps. Under a
    budget the HPO searches the families jointly (one study, one ASHA).
    """
    from .budget import parse_duration
    from ..tuning.ray_setup import parse_resources
    from ..tuning.sweep import check_settings
    _need(profile in PROFILES, f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    unknown = sorted(set(overrides) - set(OVERRIDES))
    _need(not unknown, f"unknown parameter {', '.join(unknown)}; known: {', '.join(sorted(OVERRIDES))}")
    p = copy.deepcopy(PROFILES[profile])
    for name, value in overrides.items():
        if value is not None:
            section, key = OVERRIDES[name]
            p[section][key] = value

    def check(name, fn, **kw):
        section, key = OVERRIDES[name]
        p[section][key] = fn(name, p[section][key], **kw)
    for name in ("num_samples", "max_epochs", "top_k", "seeds", "feature_samples"):
        check(name, _int)
    for name in ("max_train_seqs", "retrain_epochs"):
        check(name, _int, optional=True)
    if p["retrain"].get("folds") is not None:
        check("folds", _int, minimum=2)
    for name in ("hpo_budget_s", "feature_budget_s"):
        check(name, _pos)
    check("budget_minutes", _pos, optional=False)
    check("safety", _pos, optional=False, minimum=1.0, strict=False)
    check_precision(p["ensemble"]["precision"], "parameter precision")
    hpo, fs, rt, ens = p["hpo"], p["feature_search"], p["retrain"], p["ensemble"]
    hpo["grace_period"] = min(int(hpo["grace_period"]), hpo["max_epochs"])
    check_settings({**hpo, "max_concurrent": None, "scheduler": "asha", "searcher": "tpe"})
    check_endpoints(ray_address, tracking_uri)
    res = parse_resources(resources if resources not in (None, "") else p["resources"])
    fams = _families(families)
    if profile == "smoke":
        hpo["spaces"] = {f: {"model": SMOKE_SPACES[f], "train": SMOKE_TRAIN_SPACE} for f in fams if f in SMOKE_SPACES}
    budget_s = parse_duration(time_budget if time_budget is not None else p["time_budget"])
    hpo["joint"] = bool(hpo.get("joint")) or budget_s is not None
    return Settings(profile=profile, data_dir=check_data_dir(data_dir), run_dir=check_run_dir(run_dir),
                    families=fams, resources=res, ray_address=ray_address, tracking_uri=tracking_uri,
                    feature_search=fs if feature_search else {}, hpo=hpo, retrain=rt, ensemble=ens, score=bool(score),
                    seed=_int("seed", seed, minimum=0), time_budget_s=budget_s)


def check_ensemble(checkpoints: str | None, budget_minutes: float, safety: float, precision: str = "float32") -> None:
    """The ensemble-only flows' parameters."""
    check_precision(precision, "parameter precision")
    _need(isinstance(checkpoints, str) and os.path.isdir(checkpoints),
          f"checkpoints must be a folder of bundles, got {checkpoints!r}")
    _pos("budget_minutes", budget_minutes, optional=False)
    _pos("safety", safety, optional=False, minimum=1.0, strict=False)
