"""Continue a finished sweep: more samples, a narrowed space, a searcher that remembers.

Ray Tune's own restore cannot add samples or change the space (ray#15177,
#42221), so ``lobsweep sweep --extend NAME`` starts a *new* Tune experiment per
family in the same sweep folder (``ray/<family>.ext<k>``), whose Optuna
searcher is warm-started with every trial the sweep recorded so far: the
recorded configs go in as ``points_to_evaluate`` with their tune scores as
``evaluated_rewards``, so the searcher models them and runs none of them
again. Trials are never rerun; their records, bundles and MLflow runs stay,
and the leaderboard is rebuilt over old and new trials together.

The score told to the searcher is the trial's last reported tune score, as
Ray itself reports to Optuna when a trial ends (ASHA-stopped trials included);
a failed trial gets the trainable's fail score. A recorded config that the
narrowed space cannot hold (a value outside a range or choice) cannot be
given to Optuna and is left out of the warm start, and the count is logged.

``--set-space`` takes ``KEY=DIM``: KEY is ``model.<field>`` or
``train.<field>`` (every family of the sweep) or ``<family>.model.<field>``;
DIM is a search dimension in JSON (``{"type": "int", "low": 2, "high": 4}``), a
JSON list (a choice) or one value (a choice of one: the field is fixed).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

from ..errors import UserError
from ..search_spaces import MODEL_PREFIX, TRAIN_PREFIX, check_dim
from ..search_spaces.adapter import decode_value

log = logging.getLogger("lobsweep.tuning")


def parse_set_space(items: list[str] | None, families: list[str]) -> dict:
    """``["model.layers=[3,4]", "gru.train.lr=0.001"]`` -> ``{family: {"model.layers": dim, ...}}``."""
    out: dict = {f: {} for f in families}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set-space expects KEY=DIM (e.g. model.layers=[3,4]), got {item!r}")
        key, raw = (x.strip() for x in item.split("=", 1))
        fams = families
        head = key.split(".", 1)[0]
        if head not in ("model", "train"):
            if head not in families:
                raise UserError(f"--set-space {key}: start the key with model., train. or one of this sweep's "
                                f"families ({', '.join(families)})")
            fams, key = [head], key.split(".", 1)[1]
        if not key.startswith((MODEL_PREFIX, TRAIN_PREFIX)) or key.count(".") != 1:
            raise UserError(f"--set-space {item}: the key must be model.<field> or train.<field>")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw                                   # a bare word: a choice of that one string
        if isinstance(value, dict):
            dim = value
        else:
            dim = {"type": "choice", "values": value if isinstance(value, list) else [value]}
        check_dim(key, dim)
        for f in fams:
            out[f][key] = dim
    return out


def apply_overrides(space: dict, overrides: dict) -> dict:
    """The flat sweep ``space`` with ``overrides`` laid over it (dimensions replaced or added)."""
    return {**space, **overrides}


def _fits(value, dim: dict) -> bool:
    if dim["type"] == "choice":
        return any(value == v for v in dim["values"])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if dim["type"] == "int" and not float(value).is_integer():
        return False
    return dim["low"] <= value <= dim["high"]


def warm_start(records: list[dict], space: dict, defaults: dict, fail_score: float = -1.0,
               metric: str = "tune_mean") -> tuple[list[dict], list[float], int]:
    """Recorded trials -> (points in ``space``, their scores, how many did not fit it).

    A key the trial was not sampled on (the space gained a dimension) takes the
    value the trial trained with: ``defaults`` (the Config / TrainConfig
    defaults, or the sweep's fixed training options).
    """
    points, rewards, skipped = [], [], 0
    for rec in records:
        config = {k: decode_value(v) for k, v in (rec.get("config") or {}).items()}
        point = {k: config.get(k, defaults.get(k)) for k in space}
        if not all(_fits(point[k], dim) for k, dim in space.items()):
            skipped += 1
            continue
        m = rec.get("metrics") or {}
        score = fail_score if rec.get("status") == "failed" or metric not in m else float(m[metric])
        points.append(point)
        rewards.append(score)
    return points, rewards, skipped


def check_extendable(meta: dict, groups: list[str], done: set[str]) -> None:
    """One line if the sweep cannot be extended now (joint, or still unfinished)."""
    if meta.get("joint"):
        raise UserError(f"sweep {meta['name']!r} searched the family jointly; --extend supports per-family "
                        f"sweeps only (Optuna's warm start needs a fixed space)")
    missing = [g for g in groups if g not in done]
    if missing:
        raise UserError(f"sweep {meta['name']!r} has not finished ({', '.join(missing)} still to run); "
                        f"finish it with --resume {meta['name']} before extending it")


def experiments(meta: dict) -> list[dict]:
    """Every Tune experiment of a sweep, in run order: the families' own, then each extension's."""
    groups = [("joint", None)] if meta["joint"] else [(f, f) for f in meta["families"]]
    out = [{"name": g, "family": fam, "num_samples": int(meta["num_samples"]), "extension": None}
           for g, fam in groups]
    for k, ext in enumerate(meta.get("extensions") or [], 1):
        out += [{"name": f"{g}.ext{k}", "family": fam, "num_samples": int(ext["num_samples"]), "extension": ext}
                for g, fam in groups]
    return out


def check_overrides(overrides: dict) -> None:
    """Every overridden key must be a real Config / TrainConfig field of its family."""
    from ..models import get_config_class
    from ..search_spaces import check_space
    from ..training.trainer import TrainConfig
    for fam, dims in overrides.items():
        model = {k[len(MODEL_PREFIX):]: d for k, d in dims.items() if k.startswith(MODEL_PREFIX)}
        train = {k[len(TRAIN_PREFIX):]: d for k, d in dims.items() if k.startswith(TRAIN_PREFIX)}
        check_space(model, get_config_class(fam), f"--set-space for {fam}")
        check_space(train, TrainConfig, "--set-space")


def flat_defaults(family: str, train_fixed: dict | None = None) -> dict:
    """What a trial trains with on an unsampled key: the Config defaults, TrainConfig defaults, fixed options."""
    from ..search_spaces.recipes import complete
    d = complete({"family": family, "model": {}, "train": {}})
    train = {**d["train"], **(train_fixed or {})}
    return {**{MODEL_PREFIX + k: v for k, v in d["model"].items()}, **{TRAIN_PREFIX + k: v for k, v in train.items()}}


def extension_search(meta, exp, spaces, records, fail_score) -> tuple[dict, list | None, list | None]:
    """An extension's space (overrides laid on), and its warm start from the records of its family."""
    fam = exp["family"]
    space = apply_overrides(spaces[fam], exp["extension"]["set_space"].get(fam, {}))
    prior = [r for r in records if r.get("family") == fam]
    points, rewards, skipped = warm_start(prior, space, flat_defaults(fam, meta["train_fixed"]), fail_score)
    log.info("sweep %s: %s warm-starts from %d recorded trials (%d outside the narrowed space)",
             meta["name"], exp["name"], len(points), skipped)
    return space, points or None, rewards or None


def extension(run_dir: str, name: str, num_samples, set_space, time_budget_s) -> tuple[dict, str]:
    """The stored settings of finished sweep ``name`` with one more extension appended (checked)."""
    from .leaderboard import sweep_dir
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
