"""Members into the streaming engine a zip runs, in-process, and the batch reference it must match.

- ``check_weights``: per-target member weights [M, 2] (uniform when none).
- ``expand_bags``: a bagged member (K fold models, training/bagging.py) becomes K engine
  models of weight w/K each, so the fused step averages them; its reference is the
  bag's own ``valid_pred.npy`` (the K-model average), which the K entries reproduce.
- ``engine_layout``: the distinct feature pipelines and each model's engine entry.
- ``engine_from_bundles``: the engine a zip of a given precision runs, built here
  (costs, benches, tests, the precision gate); ``ort_engine`` for int8-ort.
- ``offline_predictions``: what the zip must stream, the per-target weighted average of
  the members' ``valid_pred.npy`` (batch forward), times ``post_scale``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ..errors import UserError
from ..features import FeaturePipeline
from ..models import get_config_class
from ..models.registry import build_config
from ..training.bundle import Bundle, load_bundle
from .engine import FusedEngine
from .engine_ort_run import attach, externals
from .engine_weights import decode, encode, round_trip
from .precision import check_precision


class PackageError(UserError):
    """The members, weights or size of a package are not acceptable."""


def load_members(members) -> list[Bundle]:
    if not members:
        raise PackageError("no members to package")
    return [m if isinstance(m, Bundle) else load_bundle(str(m)) for m in members]


def check_weights(weights, n_members: int) -> np.ndarray:
    """float64 [M, 2]: uniform when None; else finite, >= 0, each column summing to 1."""
    if weights is None:
        return np.full((n_members, 2), 1.0 / n_members)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_members, 2):
        raise PackageError(f"weights must be [n_members, 2] = [{n_members}, 2], got shape {list(w.shape)}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise PackageError("weights must be finite and non-negative")
    sums = w.sum(axis=0)
    if not np.allclose(sums, 1.0, atol=1e-6):
        raise PackageError(f"each weight column must sum to 1, got t0 {sums[0]:.6g}, t1 {sums[1]:.6g}")
    return w


def check_post_scale(post_scale) -> np.ndarray:
    s = np.asarray(post_scale, dtype=np.float64).reshape(-1)
    if s.shape != (2,) or not np.isfinite(s).all():
        raise PackageError(f"post_scale must be two finite numbers, got {list(np.ravel(post_scale))}")
    return s


def expand_bags(bundles: list[Bundle], w: np.ndarray):
    """One engine model per plain member, K per bagged member, each of those with weight ``w / K``:
    the engine's weighted sum then averages a bag's K models inside the fused step.
    Returns (bundle per model, float32 arrays per model, weights [n_models, 2], fold per model,
    member index per model)."""
    out_b, arrays, ws, folds, owner = [], [], [], [], []
    for i, (b, wi) in enumerate(zip(bundles, w)):
        sets = b.state_dicts()
        for j, sd in enumerate(sets):
            out_b.append(b)
            arrays.append({k: v.detach().cpu().float().numpy() for k, v in sd.items()})
            ws.append(wi / len(sets))
            folds.append(j if "bag" in b.spec else -1)
            owner.append(i)
    return out_b, arrays, np.asarray(ws, dtype=np.float64).reshape(-1, 2), folds, owner


def engine_layout(bundles: list[Bundle]) -> tuple[list[str], list[dict]]:
    """Distinct pipeline JSON strings, and each member's engine entry (family, config, pipeline).

    Configs are rebuilt through the model registry (types coerced, defaults filled), so equal
    models group together in the engine whatever their spec.json spelled.
    """
    pipelines, index, members = [], {}, []
    for b in bundles:
        key = json.dumps(b.spec["features"], sort_keys=True)
        if key not in index:
            index[key] = len(pipelines)
            pipelines.append(key)
        family = b.spec["family"]
        config = dataclasses.asdict(build_config(family, get_config_class(family), b.spec["config"]))
        members.append({"family": family, "config": config, "pipeline": index[key]})
    return pipelines, members


def member_names(bundles: list[Bundle]) -> list[str]:
    """Bundle directory names, or full paths where two names clash."""
    short = [b.name for b in bundles]
    return [b.name if short.count(b.name) == 1 else b.path for b in bundles]


def build_engine(layout: list[dict], arrays: list[dict], pipelines: list[str], w, scale, fuse: bool = True):
    try:
        return FusedEngine(layout, arrays, [FeaturePipeline.from_json(p) for p in pipelines], w, scale, fuse=fuse)
    except (ValueError, KeyError) as exc:
        raise PackageError(f"cannot build the streaming engine: {exc}") from None


def engine_from_bundles(members, weights=None, post_scale=(1.0, 1.0), fuse: bool = True,
                        precision: str = "float32") -> FusedEngine:
    """The packaged engine, built in-process straight from bundles (costs, benches, tests), with the
    weights a zip of ``precision`` computes with (every member in that mode, no gate; int8-ort: its GRU
    groups step through the onnxruntime int8 graphs the zip carries)."""
    bundles = load_members(members)
    models, arrays, w, _, _ = expand_bags(bundles, check_weights(weights, len(bundles)))
    pipelines, layout = engine_layout(models)
    scale = check_post_scale(post_scale)
    if check_precision(precision) == "int8-ort":
        return ort_engine(layout, arrays, pipelines, w, scale, fuse)[0]
    return build_engine(layout, stored_weights(arrays, precision), pipelines, w, scale, fuse)


def stored_weights(arrays: list[dict], precision: str) -> list[dict]:
    try:
        return [round_trip(a, precision) for a in arrays]
    except ValueError as exc:
        raise PackageError(f"cannot store the weights in {precision}: {exc}") from None


def ort_engine(layout: list[dict], arrays: list[dict], pipelines: list[str], w, scale, fuse: bool = True):
    """What an int8-ort zip runs: (the engine, {member indices: (graph bytes, external refs)} of its GRU
    groups, each model's arrays as stored). The graphs leave the per-member int8 matrices external
    (engine_ort.ship_graph): the .npz holds them once, for both paths."""
    try:
        from .engine_ort import group_graphs, ship_graph
        import onnx  # noqa: F401
    except ImportError:
        raise PackageError("--precision int8-ort builds its onnxruntime graphs with the onnx package, which "
                           "is not installed here (pip install onnx), or use --precision int8") from None
    try:
        stored = [encode(a, "int8-ort") for a in arrays]
    except ValueError as exc:
        raise PackageError(f"cannot store the weights in int8-ort: {exc}") from None
    # graphs from the float32 weights: quantize_dynamic rounds the per-member matrices exactly as the .npz's
    # int8 (per output row, max |w| / 127; ship_graph then uses the .npz's), and the folded first layer once
    # (folding decoded int8 weights and quantising again moved the score twice as much)
    graphs = {idx: ship_graph(g, [stored[i] for i in idx])
              for idx, g in group_graphs(build_engine(layout, arrays, pipelines, w, scale, fuse)).items()}
    engine = build_engine(layout, [decode(s) for s in stored], pipelines, w, scale, fuse)
    attach(engine, {idx: (g, externals(refs, [stored[i] for i in idx])) for idx, (g, refs) in graphs.items()})
    return engine, graphs, stored


def offline_predictions(members, weights=None, post_scale=(1.0, 1.0)) -> np.ndarray:
    """float64 [rows, 2]: sum_m weights[m, j] * valid_pred_m[:, j] * post_scale[j]."""
    bundles = load_members(members)
    w = check_weights(weights, len(bundles))
    shapes = {b.valid_pred.shape for b in bundles}
    if len(shapes) != 1:
        raise PackageError(f"members predict different valid files (valid_pred shapes {sorted(shapes)})")
    P = np.stack([b.valid_pred.astype(np.float64) for b in bundles], axis=1)  # [rows, M, 2]
    return (P * w[None]).sum(axis=1) * check_post_scale(post_scale)
