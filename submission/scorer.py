"""Score a submission zip the way the competition does: step by step, in a clean process.

``score_zip`` unpacks the zip into a temp dir, runs ``score_worker.py`` with
``python -I`` (import path: the zip dir, the stdlib and site-packages only;
an import blocker hides every distribution the container lacks, see the
worker's docstring), feeds the rows in file order and enforces the predict
rules there. This process then scores the need_prediction rows with the
official metric and, when an oracle file is known, reports the fraction of
the oracle's score on the same rows.

The worker runs with one BLAS/OpenMP thread, as in the 1-vCPU container, so
``ms_per_row`` (predict-loop wall time over every row fed, scorer overhead
included) projects to the hidden test set: ``projected_minutes_1500_seq``.
Every failure raises ``UserError`` with one line; temp files are always removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..data.contract import FEATURE_COLS, SEQ_LEN, TARGET_COLS
from ..data.metric import score
from ..errors import DataError, UserError
from ..progress import Stage

MAX_ZIP_BYTES = 20_000_000        # "20 MB"; the decimal reading is the stricter one
MAX_UNPACKED_BYTES = 2_000_000_000
TEST_SEQUENCES = 1500             # size of the hidden test set, for the time projection
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "score_worker.py")
ID_COLS = ["seq_ix", "step_in_seq", "need_prediction"]
_ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def _unpack(zip_path: str, dest: str) -> int:
    """Check and extract the zip into ``dest``; returns the zip's size in bytes."""
    if not os.path.isfile(zip_path):
        raise UserError(f"{zip_path}: submission zip not found")
    size = os.path.getsize(zip_path)
    if size > MAX_ZIP_BYTES:
        raise UserError(f"{zip_path}: {size / 1e6:.1f} MB, over the 20 MB submission limit")
    if not zipfile.is_zipfile(zip_path):
        raise UserError(f"{zip_path}: not a zip file")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            if "solution.py" not in names:
                nested = [n for n in names if n.endswith("/solution.py")]
                hint = (f" (found '{nested[0]}'; zip the folder's contents, not the folder)" if nested
                        else "")
                raise UserError(f"{zip_path}: no solution.py at the zip root{hint}")
            if sum(i.file_size for i in zf.infolist()) > MAX_UNPACKED_BYTES:
                raise UserError(f"{zip_path}: unpacks to over {MAX_UNPACKED_BYTES / 1e9:.0f} GB")
            zf.extractall(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
        raise UserError(f"{zip_path}: cannot unpack ({exc})") from None
    return size


def _read_targets(data_path: str, max_rows: int | None) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Keys of the scored rows, their targets float64 [rows, 2], and the number of rows fed."""
    if not os.path.isfile(data_path):
        raise DataError(f"{data_path}: data file not found")
    try:
        schema = pq.read_schema(data_path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{data_path}: not a parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in TARGET_COLS if c not in schema.names]
    if missing:
        raise DataError(f"{data_path}: no target column '{missing[0]}'; scoring needs a file with targets")
    missing = [c for c in ID_COLS + FEATURE_COLS if c not in schema.names]
    if missing:
        raise DataError(f"{data_path}: missing column '{missing[0]}'")
    table = pq.read_table(data_path, columns=ID_COLS + TARGET_COLS)
    if max_rows is not None:
        table = table.slice(0, int(max_rows))
    df = table.to_pandas()
    need = df["need_prediction"].to_numpy().astype(bool)
    keys = df.loc[need, ["seq_ix", "step_in_seq"]].reset_index(drop=True)
    Y = df.loc[need, TARGET_COLS].to_numpy(dtype=np.float64)
    if len(Y) == 0:
        raise DataError(f"{data_path}: no need_prediction rows among the {len(df)} rows scored")
    bad = ~np.isfinite(Y).all(axis=1)
    if bad.any():
        r = int(np.argmax(bad))
        raise DataError(f"{data_path}: non-finite target at seq_ix={int(keys.seq_ix[r])}, "
                        f"step_in_seq={int(keys.step_in_seq[r])}")
    return keys, Y, len(df)


def _oracle_scores(oracle_path: str, keys: pd.DataFrame, Y: np.ndarray) -> dict:
    """The oracle's official score on the scored rows, joined on (seq_ix, step_in_seq)."""
    try:
        oracle = pq.read_table(oracle_path).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{oracle_path}: cannot read oracle file ({str(exc).splitlines()[0]})") from None
    cols = ["seq_ix", "step_in_seq", *TARGET_COLS]
    missing = [c for c in cols if c not in oracle.columns]
    if missing:
        raise DataError(f"{oracle_path}: oracle file lacks column '{missing[0]}'")
    try:
        joined = keys.merge(oracle[cols], how="left", on=["seq_ix", "step_in_seq"], validate="many_to_one")
    except pd.errors.MergeError:
        raise DataError(f"{oracle_path}: duplicate (seq_ix, step_in_seq) rows in the oracle file") from None
    P = joined[TARGET_COLS].to_numpy(dtype=np.float64)
    gap = np.isnan(P).any(axis=1)
    if gap.any():
        r = int(np.argmax(gap))
        raise DataError(f"{oracle_path}: oracle lacks {int(gap.sum())} scored rows, first seq_ix="
                        f"{int(keys.seq_ix[r])}, step_in_seq={int(keys.step_in_seq[r])}")
    s = score(Y, P)
    return {"oracle_t0": s["t0"], "oracle_t1": s["t1"], "oracle_weighted_pearson": s["mean"]}


def default_oracle_path(data_path: str) -> str | None:
    """``oracle_<stem>.parquet`` beside the data file (``valid.parquet`` -> ``oracle_valid.parquet``)."""
    folder, name = os.path.split(os.path.abspath(data_path))
    candidate = os.path.join(folder, f"oracle_{os.path.splitext(name)[0]}.parquet")
    return candidate if os.path.isfile(candidate) else None


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 4000))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _stage_rows(stage: Stage, rows: int, total_rows: int) -> None:
    """Rows scored and rows/s on the stage's line; a printed line at each quarter of the file."""
    before = stage.counts.get("scored", 0)
    stage.counts["scored"] = rows
    stage.extra = f"{rows / max(time.time() - stage.started, 1e-9):,.0f} rows/s"
    if any(before < q * total_rows <= rows for q in (0.25, 0.5, 0.75)):
        stage.event(f"{100 * rows // max(total_rows, 1)}%")
    else:
        stage.tick()


def _run_worker(cfg: dict, work: str, total_rows: int, progress, timeout: float | None,
                label: str) -> dict:
    """Run the worker on ``cfg``; returns its result dict or raises UserError."""
    cfg_path = os.path.join(work, "config.json")
    with open(cfg_path, "w") as fh:
        json.dump(cfg, fh)
    log_path = os.path.join(work, "worker.log")
    env = {**os.environ, **_ONE_THREAD}
    stage = progress if isinstance(progress, Stage) else None
    with open(log_path, "wb") as log, tqdm(total=total_rows, disable=progress is not True, unit="row",
                                             desc="scoring", mininterval=0.5) as bar:
        proc = subprocess.Popen([sys.executable, "-I", WORKER, cfg_path], cwd=cfg["solution_dir"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.start()
        try:
            for line in proc.stdout:
                if line.startswith("P "):
                    bar.update(int(line[2:]) - bar.n)
                    if stage is not None:
                        _stage_rows(stage, int(line[2:]), total_rows)
            proc.wait()
        finally:
            if timer:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if timed_out.is_set():
        raise UserError(f"{label}: scoring stopped, the submission ran past the {timeout:g} s timeout")
    if not os.path.isfile(cfg["result_path"]):
        detail = _last_line(log_path)
        raise UserError(f"{label}: the submission's process died (exit code {proc.returncode})"
                        + (f": {detail}" if detail else ""))
    with open(cfg["result_path"]) as fh:
        result = json.load(fh)
    if not result.get("ok"):
        raise UserError(f"{label}: submission rejected: {result.get('error', 'unknown error')}")
    return result


def score_zip(zip_path, data_path, *, oracle_path=None, progress: bool | Stage = True,
              max_rows: int | None = None, timeout: float | None = None) -> dict:
    """Score a submission zip on a contract parquet file with targets.

    ``progress``: True draws a tqdm bar, a ``lobsweep.progress.Stage`` gets rows and rows/s.

    Returns t0, t1, weighted_pearson (their mean), rows (scored), total_rows
    (fed), seconds (predict loop), setup_seconds (import + constructor),
    ms_per_row, projected_minutes_1500_seq, zip_bytes, predictions (float64
    [rows, 2], file order) and, with an oracle, oracle_t0, oracle_t1,
    oracle_weighted_pearson and oracle_fraction (score / oracle score).
    ``oracle_path`` defaults to ``default_oracle_path(data_path)``.
    """
    zip_path, data_path = str(zip_path), str(data_path)
    if max_rows is not None and int(max_rows) <= 0:
        raise UserError(f"max_rows must be positive, got {max_rows}")
    keys, Y, total_rows = _read_targets(data_path, max_rows)
    oracle_path = str(oracle_path) if oracle_path is not None else default_oracle_path(data_path)
    oracle = None
    if oracle_path is not None:
        if not os.path.isfile(oracle_path):
            raise DataError(f"{oracle_path}: oracle file not found")
        oracle = _oracle_scores(oracle_path, keys, Y)

    with tempfile.TemporaryDirectory(prefix="lobsweep-score-", ignore_cleanup_errors=True) as work:
        solution_dir = os.path.join(work, "solution")
        os.makedirs(solution_dir)
        zip_bytes = _unpack(zip_path, solution_dir)
        cfg = {"solution_dir": solution_dir, "data_path": os.path.abspath(data_path),
               "feature_cols": list(FEATURE_COLS), "max_rows": max_rows,
               "pred_path": os.path.join(work, "pred.npy"), "result_path": os.path.join(work, "result.json")}
        run = _run_worker(cfg, work, total_rows, progress, timeout, os.path.basename(zip_path))
        P = np.load(cfg["pred_path"])
    if run["total_rows"] != total_rows or P.shape != Y.shape:
        raise UserError(f"scoring worker returned {P.shape[0]} predictions for {Y.shape[0]} scored rows")

    s = score(Y, P)
    ms_per_row = 1000.0 * run["seconds"] / max(total_rows, 1)
    result = {
        "t0": s["t0"], "t1": s["t1"], "weighted_pearson": s["mean"],
        "rows": int(Y.shape[0]), "total_rows": int(total_rows),
        "seconds": run["seconds"], "setup_seconds": run["setup_seconds"], "ms_per_row": ms_per_row,
        "projected_minutes_1500_seq": ms_per_row * TEST_SEQUENCES * SEQ_LEN / 60000.0,
        "zip_bytes": int(zip_bytes), "predictions": P,
    }
    if oracle is not None:
        result.update(oracle)
        ref = result["oracle_weighted_pearson"]
        result["oracle_fraction"] = s["mean"] / ref if ref > 0 else None
        result["oracle_path"] = oracle_path
    return result
