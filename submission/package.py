"""Package checkpoint bundles into a self-contained submission zip.

The zip (at most ``max_bytes``, 20 MB by default):

    solution.py              submission/solution_template.py: PredictionModel over the engine
    lsrt_engine/*.py         submission/engine*.py verbatim (numpy only)
    lsrt_features/*.py       features/*.py verbatim (numpy only; relative imports keep working)
    model/manifest.json      members (family, config, pipeline index), distinct pipelines as
                             JSON (fitted normalisers included), weights [M, 2], post_scale [2]
    model/m000.npz ...       each member's state_dict: float32 arrays, or its weight matrices in
                             float16 or int8 (``precision``; engine_weights.py), decoded at load
    model/ort_g000.onnx ...  int8-ort only: onnxruntime int8 step graph of each GRU group
                             (engine_ort.py builds it here; engine_ort_run.py runs it in the zip)

``precision`` float16 or int8 must pass the score gate (precision.py): each member's
official score on the report rows of a dataset within 1e-4 of its float32 score, and
the ensemble's too. A member that fails is refused, or stored in float32 with
``fallback``; the manifest records each member's ``precision``.

How members become the engine a zip runs (bagged members as K models, the
layout, the batch reference it must match) is assemble.py. Members whose
weights are 0 for both targets are left out (they would cost time and bytes
and add nothing).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile

import numpy as np

from ..errors import read_json
from ..training.bundle import Bundle
from .assemble import (PackageError, build_engine, check_post_scale, check_weights, engine_layout, expand_bags,
                       load_members, member_names, offline_predictions, ort_engine)
from .engine import FORMAT, FusedEngine
from .engine_weights import encode
from .precision import STREAM_SEQS, TOLERANCE, Gate, check_precision, gate_data, stream_gate

MAX_ZIP_BYTES = 20_000_000            # the scorer's limit: "20 MB", decimal
SPEC_FORMAT = "lobsweep.ensemble/1"
ENGINE_FILES = ("engine.py", "engine_ops.py", "engine_rnn.py", "engine_blocks.py", "engine_weights.py",
                "engine_ort_run.py")
_HERE = os.path.dirname(os.path.abspath(__file__))
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)      # fixed timestamps: the same inputs give the same bytes


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _write(zf: zipfile.ZipFile, name: str, data: bytes | str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)
    return zf.getinfo(name)


def _code_files() -> dict[str, str]:
    """Zip path -> source of solution.py and the vendored engine and feature packages."""
    from .. import features
    files = {"solution.py": open(os.path.join(_HERE, "solution_template.py")).read(),
             "lsrt_engine/__init__.py": '"""Vendored lob-sweep streaming engine."""\n'
                                        "from .engine import FORMAT, FusedEngine, load_engine  # noqa: F401\n"}
    for name in ENGINE_FILES:
        files[f"lsrt_engine/{name}"] = open(os.path.join(_HERE, name)).read()
    feat_dir = os.path.dirname(os.path.abspath(features.__file__))
    for name in sorted(os.listdir(feat_dir)):
        if name.endswith(".py"):
            files[f"lsrt_features/{name}"] = open(os.path.join(feat_dir, name)).read()
    return files


def _drop_advice(names: list[str], sizes: list[int], w: np.ndarray, total: int, max_bytes: int) -> list[str]:
    """Members to drop, lowest mean weight per byte first, until the zip would fit."""
    order = sorted(range(len(names)), key=lambda i: (w[i].mean() / max(sizes[i], 1), -sizes[i]))
    drop = []
    for i in order:
        if total <= max_bytes:
            break
        drop.append(f"{names[i]} ({sizes[i] / 1e6:.2f} MB, weight {w[i, 0]:.3g}/{w[i, 1]:.3g})")
        total -= sizes[i]
    return drop


def choose_precisions(bundles: list[Bundle], names: list[str], arrays: list[dict], owner: list[int],
                      w: np.ndarray, scale: np.ndarray, precision: str, fallback: bool = False,
                      data_dir: str | None = None, tolerance: float = TOLERANCE) -> tuple[list[str], dict | None]:
    """Each member's stored mode (float32, or ``precision`` where the score gate passes) and the gate's
    record; PrecisionError (one line naming the member) when a member fails without ``fallback``."""
    if precision == "float32":
        return ["float32"] * len(bundles), None
    if precision == "int8-ort":
        raise ValueError("int8-ort is gated by ort_gate (the streamed ensemble), not per member")
    gate = Gate(gate_data(data_dir, bundles), precision, tolerance, fallback)
    results = [gate.member(names[i], b, [a for a, o in zip(arrays, owner) if o == i]) for i, b in enumerate(bundles)]
    ensemble = gate.ensemble(results, w, scale)
    record = {"data": gate.data.path, "tolerance": tolerance, "ensemble": ensemble,
              "members": [{"name": g.name, "stored": g.stored, "score32": g.score32, "score": g.score,
                           "delta": g.delta, **({"problem": g.problem} if g.problem else {}),
                           **({"fell_back": g.fell_back} if g.fell_back else {})} for g in results]}
    return [g.stored for g in results], record


def ort_gate(bundles: list[Bundle], engine32: FusedEngine, arrays: list[dict], layout, pipelines, w, scale,
             fallback: bool, data_dir: str | None, tolerance: float, gate_seqs: int) -> tuple[dict, dict]:
    """(graphs to ship, the gate's record) for int8-ort: the float32 engine and the int8-ort engine streamed
    over the first ``gate_seqs`` report sequences (precision.stream_gate); graphs {} after a fallback."""
    data = gate_data(data_dir, bundles)
    engine, graphs, _ = ort_engine(layout, arrays, pipelines, w, scale)
    ens = stream_gate(data, engine32, engine, "int8-ort", gate_seqs, tolerance, fallback)
    record = {"data": data.path, "tolerance": tolerance, "ensemble": ens, "members": [], "paths": engine.paths}
    return (graphs if ens["stored"] == "int8-ort" else {}), record


def package(members: list[str], out_zip: str, weights: np.ndarray | None = None, post_scale=(1.0, 1.0),
            max_bytes: int = MAX_ZIP_BYTES, precision: str = "float32", fallback: bool = False,
            data_dir: str | None = None, tolerance: float = TOLERANCE, gate_seqs: int = STREAM_SEQS) -> dict:
    """Write the submission zip for ``members`` (bundle dirs) atomically; returns its description.

    ``weights`` [M, 2]: per-target member weights (each column sums to 1; None = uniform).
    ``precision``: how weight matrices are stored (float32, float16, int8, int8-ort); a compact mode passes
    the score gate on the report rows of ``data_dir`` (default: the members' own dataset) or nothing is
    written, unless ``fallback`` stores the failing members in float32. int8-ort also ships onnxruntime
    int8 step graphs of the GRU groups; its gate streams the first ``gate_seqs`` report sequences and a
    failing ensemble is stored in float32 entirely with ``fallback``.
    Over ``max_bytes`` (compressed zip bytes) nothing is written and PackageError names the members to drop.
    """
    check_precision(precision)
    bundles = load_members(members)
    w = check_weights(weights, len(bundles))
    scale = check_post_scale(post_scale)
    keep = [i for i in range(len(bundles)) if w[i].any()]
    skipped = [member_names(bundles)[i] for i in range(len(bundles)) if i not in keep]
    bundles, w = [bundles[i] for i in keep], w[keep]
    n_members = len(bundles)
    short = dict(zip((b.path for b in bundles), member_names(bundles)))
    member_bundles = bundles
    bundles, arrays, w_models, folds, owner = expand_bags(bundles, w)    # a bagged member streams as its K fold models
    names = [short[b.path] + (f"#fold{j}" if j >= 0 else "") for b, j in zip(bundles, folds)]
    pipelines, layout = engine_layout(bundles)
    engine32 = build_engine(layout, arrays, pipelines, w_models, scale)   # a bad family or shape fails before writing
    out_zip = os.path.abspath(str(out_zip))
    out_dir = os.path.dirname(out_zip)
    if not os.path.isdir(out_dir):
        raise PackageError(f"{out_dir}: output directory does not exist")
    graphs = {}
    if precision == "int8-ort":
        graphs, gate = ort_gate(member_bundles, engine32, arrays, layout, pipelines, w_models, scale, fallback,
                                data_dir, tolerance, gate_seqs)
        modes = [gate["ensemble"]["stored"]] * len(arrays)
    else:
        stored, gate = choose_precisions(member_bundles, [short[b.path] for b in member_bundles], arrays, owner,
                                         w, scale, precision, fallback, data_dir, tolerance)
        modes = [stored[o] for o in owner]
    ort = [{"file": f"ort_g{i:03d}.onnx", "members": list(idx), "external": refs}
           for i, (idx, (_, refs)) in enumerate(graphs.items())]

    entries = [{"name": n, "bundle": b.path, "file": f"m{i:03d}.npz", **m, "precision": p,
                "valid_fingerprint": b.spec.get("data", {}).get("valid_fingerprint"),
                **({"fold": j, "bag_k": b.n_models} if j >= 0 else {})}
               for i, (n, b, m, j, p) in enumerate(zip(names, bundles, layout, folds, modes))]
    note = next((b.spec.get("note", "final fit: no honest score") for b in bundles      # a final fit saw report
                 if b.spec.get("bag", {}).get("final")), None)
    manifest = {"format": FORMAT, "members": entries, "pipelines": pipelines,
                "weights": w_models.tolist(), "post_scale": scale.tolist(), **({"ort": ort} if ort else {}),
                **({"note": note} if note else {})}

    fd, tmp = tempfile.mkstemp(prefix=".package-", suffix=".zip", dir=out_dir)
    os.close(fd)
    try:
        sizes = []
        with zipfile.ZipFile(tmp, "w") as zf:
            for path, text in _code_files().items():
                _write(zf, path, text)
            _write(zf, "model/manifest.json", json.dumps(manifest, indent=1))
            for entry, arr, mode in zip(entries, arrays, modes):
                sizes.append(_write(zf, "model/" + entry["file"], _npz_bytes(encode(arr, mode))).compress_size)
            for g, (graph, _) in zip(ort, graphs.values()):
                _write(zf, "model/" + g["file"], graph)
        total = os.path.getsize(tmp)                 # compressed bytes: what the 20 MB limit counts
        if total > max_bytes:
            drop = _drop_advice(names, sizes, w_models, total, max_bytes)
            raise PackageError(f"{os.path.basename(out_zip)}: package would be {total / 1e6:.2f} MB, over the "
                               f"{max_bytes / 1e6:.2f} MB limit; drop {', '.join(drop)} to fit")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)            # mkstemp makes 0600; a zip is an ordinary file
        os.replace(tmp, out_zip)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    families: dict[str, int] = {}
    for m in layout:
        families[m["family"]] = families.get(m["family"], 0) + 1
    return {"path": out_zip, "bytes": total, "n_members": n_members, "n_models": len(bundles), "families": families,
            "n_pipelines": len(pipelines), "member_bytes": dict(zip(names, sizes)),
            "member_precision": dict(zip(names, modes)), "precision": precision, "gate": gate, "skipped": skipped,
            "ort_files": [g["file"] for g in ort],
            "weights": w_models.tolist(), "post_scale": scale.tolist(), **({"note": note} if note else {})}


def read_ensemble_spec(spec_path: str) -> tuple[list[str], np.ndarray | None, tuple[float, float]]:
    """(member bundle paths, weights [M, 2] or None, post_scale) from an ensemble spec JSON.

    Relative member paths are taken relative to the spec file's directory.
    """
    try:
        spec = read_json(spec_path, PackageError)
    except FileNotFoundError:
        raise PackageError(f"{spec_path}: ensemble spec not found") from None
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise PackageError(f"{spec_path}: not an ensemble spec (expected format {SPEC_FORMAT!r})")
    if not isinstance(spec.get("members"), list) or not spec["members"]:
        raise PackageError(f"{spec_path}: 'members' must be a non-empty list of bundle paths")
    base = os.path.dirname(os.path.abspath(spec_path))
    members = [m if os.path.isabs(m) else os.path.join(base, m) for m in map(str, spec["members"])]
    weights = spec.get("weights")
    post_scale = tuple(spec.get("post_scale") or (1.0, 1.0))
    return members, None if weights is None else np.asarray(weights, dtype=np.float64), post_scale


def package_from_spec(spec_path: str, out_zip: str, max_bytes: int = MAX_ZIP_BYTES, **options) -> dict:
    """``package`` with the members, weights and post_scale of an ensemble spec JSON (``options``:
    precision, fallback, data_dir, tolerance)."""
    members, weights, post_scale = read_ensemble_spec(spec_path)
    return package(members, out_zip, weights=weights, post_scale=post_scale, max_bytes=max_bytes, **options)


def read_manifest(zip_path: str) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        return json.loads(zf.read("model/manifest.json"))


def zip_reference_predictions(zip_path: str) -> np.ndarray | None:
    """The offline reference for a lob-sweep zip, when its member bundles still exist here."""
    try:
        manifest = read_manifest(zip_path)
    except (KeyError, zipfile.BadZipFile, OSError, json.JSONDecodeError):
        return None
    paths = [m["bundle"] for m in manifest["members"]]
    if not all(os.path.isdir(p) for p in paths):
        return None
    return offline_predictions(paths, manifest["weights"], manifest["post_scale"])


def zip_precisions(zip_path: str) -> set[str]:
    """The storage modes of a zip's members (float32 for zips written before compact storage)."""
    return {m.get("precision", "float32") for m in read_manifest(zip_path)["members"]}


def parity_check(zip_path: str, data_path: str, max_rows: int | None = None, tolerance: float = 1e-4) -> dict:
    """Score the zip step by step on ``data_path`` and compare with the offline (float32) reference.

    ``data_path`` must be the valid file the members predicted (same need-prediction rows).
    A float32 zip must match the reference prediction by prediction: ``parity_ok`` is
    ``max_abs_diff <= tolerance``. A zip with float16 or int8 members computes with other
    weights, so it must keep the official score instead: ``parity_ok`` is
    ``|score_delta| <= tolerance`` (``mode`` says which check ran).
    Returns the scorer's summary plus ``max_abs_diff``, ``score_delta``, ``mode`` and ``parity_ok``.
    """
    from .scorer import _read_targets, score_zip
    from ..data.metric import score
    reference = zip_reference_predictions(zip_path)
    if reference is None:
        raise PackageError(f"{zip_path}: its member bundles are not all on this machine; no offline reference")
    res = score_zip(zip_path, data_path, progress=False, max_rows=max_rows)
    P = res.pop("predictions")
    if max_rows is None and P.shape != reference.shape:
        raise PackageError(f"{data_path}: {P.shape[0]} scored rows, the members predicted {reference.shape[0]}; "
                           f"use the valid file they were trained with")
    reference = reference[:P.shape[0]]
    diff = float(np.abs(P - reference).max())
    delta = res["weighted_pearson"] - score(_read_targets(data_path, max_rows)[1], reference)["mean"]
    mode = "prediction" if zip_precisions(zip_path) == {"float32"} else "score"
    ok = diff <= tolerance if mode == "prediction" else abs(delta) <= tolerance
    return {**res, "max_abs_diff": diff, "score_delta": float(delta), "mode": mode, "parity_ok": ok}
