"""Child process of ``scorer.score_zip``: import one unpacked submission and feed it every row.

Run as ``python -I score_worker.py CONFIG.json``. Standalone on purpose: it
imports only the stdlib before the import blocker is in place, and never
imports ``lobsweep`` (the parent passes the feature column names in CONFIG).

Import policy (mirrors the offline competition container, which holds only
numpy, pandas, pyarrow, tqdm, torch, onnxruntime and the base image's pip,
setuptools and wheel):

- ``sys.path`` keeps only the unpacked zip dir, the stdlib dirs and
  site-packages; editable-install hooks and other meta-path finders go.
- One meta-path finder replaces ``PathFinder`` and resolves a *top-level*
  name only if it is a module in the zip dir, a stdlib module, or a top-level
  name of one of the container's distributions or their (non-extra)
  requirements, read from installed metadata. Everything else is reported as
  absent (find_spec -> None), so ``import sklearn`` raises the same
  ``ModuleNotFoundError`` it would in the container, whoever the importer is,
  and the allowed libraries' optional imports take the same fallback paths
  they take there. Submodules of an allowed package resolve normally.
- Known leak: namespace packages shared with allowed ones (``google.*`` beside
  protobuf) are not split per distribution.

Protocol: progress lines ``P <rows_done>`` on the original stdout (the
solution's own prints go to stderr), predictions of the need_prediction rows
to ``pred_path`` (.npy, float64 [rows, 2]) and a JSON result to
``result_path``: ``{"ok": true, ...timings}`` or ``{"ok": false, "error": ONE_LINE}``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata as metadata
import json
import os
import re
import site
import sys
import time
import traceback

CONTAINER_DISTS = ("numpy", "pandas", "pyarrow", "tqdm", "torch", "onnxruntime", "pip", "setuptools", "wheel")
PROGRESS_EVERY = 2000
_ALLOWED_TEXT = "only the stdlib, numpy, pandas, pyarrow, tqdm, torch, onnxruntime and modules inside the zip"


class ContractError(Exception):
    """The solution broke a rule of the submission contract; the message is one line."""


def _requirement_name(req: str) -> str | None:
    """The distribution a requirement names; None for extras. Platform markers are not
    evaluated (a Windows-only dependency is allowed too, which only over-allows)."""
    spec, _, marker = req.partition(";")
    if "extra" in marker:
        return None
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    return m.group(1) if m else None


def _top_level_names(dist: metadata.Distribution) -> set[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return {n.strip() for n in text.split() if n.strip()}
    names = set()
    for f in dist.files or ():
        first = f.parts[0]
        if len(f.parts) > 1:
            if first.isidentifier() and not first.startswith("__"):
                names.add(first)
        elif first.endswith((".py", ".so", ".pyd")):
            names.add(first.split(".")[0])
    return names


def container_top_level_names(dists=CONTAINER_DISTS) -> set[str]:
    """Top-level import names of ``dists`` and their non-extra requirements, transitively."""
    seen, names, todo = set(), set(), list(dists)
    while todo:
        key = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(key)
        except metadata.PackageNotFoundError:
            continue
        names |= _top_level_names(dist)
        todo.extend(n for n in map(_requirement_name, dist.requires or ()) if n)
    return names


class ContainerFinder:
    """Meta-path finder that resolves only what the competition container would hold."""

    def __init__(self, solution_dir: str, stdlib_paths: list[str], site_paths: list[str], allowed: set[str]):
        self.solution_dir = solution_dir
        self.stdlib_paths = stdlib_paths
        self.lib_paths = stdlib_paths + site_paths
        self.allowed = allowed | set(sys.stdlib_module_names)
        self.blocked: set[str] = set()

    def find_spec(self, fullname, path=None, target=None):
        finder = importlib.machinery.PathFinder
        if "." in fullname:
            return finder.find_spec(fullname, path, target)
        spec = finder.find_spec(fullname, [self.solution_dir], target)
        if spec is None:
            spec = finder.find_spec(fullname, self.stdlib_paths, target)
        if spec is None and fullname in self.allowed:
            spec = finder.find_spec(fullname, self.lib_paths, target)
        if spec is None:
            self.blocked.add(fullname)
        return spec

    def invalidate_caches(self):
        importlib.machinery.PathFinder.invalidate_caches()


def install_blocker(solution_dir: str) -> ContainerFinder:
    """Restrict sys.path / sys.meta_path / sys.modules to the container's view."""
    site_paths = [os.path.realpath(p) for p in site.getsitepackages()]
    stdlib_paths = [p for p in sys.path if p and os.path.realpath(p) not in site_paths
                    and os.path.realpath(p).startswith(os.path.realpath(sys.base_prefix))]
    finder = ContainerFinder(solution_dir, stdlib_paths, site_paths, container_top_level_names())
    sys.path[:] = [solution_dir] + stdlib_paths + site_paths
    sys.meta_path[:] = [importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter, finder]
    for name in list(sys.modules):
        top = name.partition(".")[0]
        if name != "__main__" and top not in finder.allowed:
            del sys.modules[name]
    importlib.invalidate_caches()
    return finder


class DataPoint:
    """One row as the competition feeds it."""

    __slots__ = ("seq_ix", "step_in_seq", "need_prediction", "state")

    def __init__(self, seq_ix: int, step_in_seq: int, need_prediction: bool, state):
        self.seq_ix = seq_ix
        self.step_in_seq = step_in_seq
        self.need_prediction = need_prediction
        self.state = state


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(exc: BaseException, finder: ContainerFinder, solution_dir: str) -> str:
    """``Type: message (file:line)`` with the innermost frame inside the zip, plus the import policy."""
    if isinstance(exc, ImportError) and exc.name and exc.name.partition(".")[0] in finder.blocked:
        top = exc.name.partition(".")[0]
        return f"import of '{top}' failed: it is not in the competition container ({_ALLOWED_TEXT})"
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if os.path.isabs(frame.filename) and os.path.realpath(frame.filename).startswith(solution_dir + os.sep):
            where = f" ({os.path.relpath(frame.filename, solution_dir)}:{frame.lineno})"
            break
    return _one_line(f"{type(exc).__name__}: {exc}") + where


def _check(out, np, need: bool):
    """The prediction as float64 [2], or raise ContractError naming the broken rule."""
    if not need:
        if out is not None:
            raise ContractError(f"returned {type(out).__name__} while need_prediction is False; it must return None")
        return None
    if out is None:
        raise ContractError("returned None but need_prediction is True; it must return an array of shape (2,)")
    if not isinstance(out, np.ndarray):
        raise ContractError(f"returned {type(out).__name__}; it must return a numpy.ndarray of shape (2,)")
    if out.shape != (2,):
        raise ContractError(f"returned an array of shape {out.shape}; the shape must be (2,)")
    if out.dtype.kind not in "fiu":
        raise ContractError(f"returned an array of dtype {out.dtype}; it must be numeric")
    values = out.astype(np.float64)
    if not np.isfinite(values).all():
        raise ContractError(f"returned a non-finite value {values.tolist()}; predictions must be finite")
    return values


def _load_rows(cfg: dict):
    """(seq_ix list, step list, need list, X float32 [n, 32]) of the first ``max_rows`` rows."""
    import numpy as np
    import pyarrow.parquet as pq

    cols = cfg["feature_cols"]
    table = pq.read_table(cfg["data_path"], columns=["seq_ix", "step_in_seq", "need_prediction", *cols])
    if cfg.get("max_rows") is not None:
        table = table.slice(0, int(cfg["max_rows"]))
    X = np.empty((table.num_rows, len(cols)), dtype=np.float32)
    for j, name in enumerate(cols):
        X[:, j] = table.column(name).to_numpy(zero_copy_only=False)
    seq = table.column("seq_ix").to_numpy(zero_copy_only=False).astype(np.int64).tolist()
    step = table.column("step_in_seq").to_numpy(zero_copy_only=False).astype(np.int64).tolist()
    need = table.column("need_prediction").to_numpy(zero_copy_only=False).astype(bool).tolist()
    return seq, step, need, X


def run(cfg: dict, finder: ContainerFinder, proto) -> dict:
    """Import the solution, feed every row, save predictions; return the timings."""
    import numpy as np

    solution_dir = cfg["solution_dir"]
    seq, step, need, X = _load_rows(cfg)
    n = len(seq)
    preds = np.empty((sum(need), 2), dtype=np.float64)

    t_setup = time.perf_counter()
    try:
        module = importlib.import_module("solution")
    except BaseException as exc:  # noqa: BLE001 - any failure of user code is reported, not raised
        raise ContractError(f"importing solution.py failed: {_describe(exc, finder, solution_dir)}") from None
    cls = getattr(module, "PredictionModel", None)
    if not isinstance(cls, type):
        raise ContractError("solution.py defines no class PredictionModel")
    try:
        model = cls()
    except BaseException as exc:  # noqa: BLE001
        raise ContractError(f"PredictionModel() failed: {_describe(exc, finder, solution_dir)}") from None
    predict = model.predict
    setup_seconds = time.perf_counter() - t_setup

    k = 0
    t0 = time.perf_counter()
    for i in range(n):
        try:
            out = predict(DataPoint(seq[i], step[i], need[i], X[i].copy()))
        except BaseException as exc:  # noqa: BLE001
            raise ContractError(f"predict raised at row {i} (seq_ix={seq[i]}, step_in_seq={step[i]}): "
                                f"{_describe(exc, finder, solution_dir)}") from None
        try:
            values = _check(out, np, need[i])
        except ContractError as exc:
            raise ContractError(f"row {i} (seq_ix={seq[i]}, step_in_seq={step[i]}): predict {exc}") from None
        if values is not None:
            preds[k] = values
            k += 1
        if (i + 1) % PROGRESS_EVERY == 0:
            proto.write(f"P {i + 1}\n")
    seconds = time.perf_counter() - t0
    proto.write(f"P {n}\n")
    np.save(cfg["pred_path"], preds)
    return {"ok": True, "total_rows": n, "rows": k, "seconds": seconds, "setup_seconds": setup_seconds}


def _write_result(path: str, result: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh)
    os.replace(tmp, path)


def main(config_path: str) -> None:
    with open(config_path) as fh:
        cfg = json.load(fh)
    cfg["solution_dir"] = os.path.realpath(cfg["solution_dir"])
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    finder = install_blocker(cfg["solution_dir"])
    try:
        result = run(cfg, finder, proto)
    except ContractError as exc:
        result = {"ok": False, "error": _one_line(str(exc), 500)}
    _write_result(cfg["result_path"], result)
    proto.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)        # threads or atexit hooks left by the solution must not keep the worker alive


if __name__ == "__main__":
    main(sys.argv[1])
