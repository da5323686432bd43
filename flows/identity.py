"""Cheap identities of the files a stage reads, for the task cache keys.

Prefect's ``INPUTS`` cache policy hashes a task's arguments, and a path alone
does not change when the file behind it does. So every stage task also takes
the identity of what it reads: (size, mtime in ns) of each data file, or of
the three files that define each checkpoint bundle. Rewriting a file (even
with the same bytes) gives a new identity, so that stage and every stage
after it run again; reading files never does. No file is hashed: the real
train set is gigabytes.
"""

from __future__ import annotations

import hashlib
import json
import os

DATA_FILES = ("train.parquet", "valid.parquet", "oracle_valid.parquet")
BUNDLE_FILES = ("spec.json", "weights.pt", "valid_pred.npy")   # not latency.json: the ensemble stage adds it


def file_identity(path: str) -> list | None:
    """[size, mtime_ns] of a file, or None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def data_identity(data_dir: str) -> dict:
    """{"dir": absolute path, file name: [size, mtime_ns] or None} for the contract files of ``data_dir``."""
    data_dir = os.path.abspath(data_dir)
    return {"dir": data_dir, **{name: file_identity(os.path.join(data_dir, name)) for name in DATA_FILES}}


def bundles_identity(root: str) -> dict:
    """{bundle path relative to ``root``: {file: [size, mtime_ns]}} for every bundle under ``root``."""
    from ..training.bundle import find_bundles
    root = os.path.abspath(root)
    return {os.path.relpath(b, root): {f: file_identity(os.path.join(b, f)) for f in BUNDLE_FILES}
            for b in find_bundles(root)}


def digest(*parts) -> str:
    """A short stable hex digest of JSON-able parts (names of stage outputs are derived from it)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_digest(path: str) -> str:
    """sha256 of a small file's bytes (specs, leaderboards, zips)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
