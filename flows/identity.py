"""Cheap identities of the files a stage reads, for the task cache keys.

Prefect's ``INPUTS`` cache policy hashes a task's arguments, and a path alone
does not change when the file behind it does. So every stage task also takes
the identity of what it reads: (size, mtime in ns) of each data file, or of
the three files that define each checkpoint bundle. Rewriting a file (even
with the same bytes) gives a new identity, so that stage and every stage
after it run again; reading files never does. No file is hashed: the real
train set is gigabytes.

Every stage also keys on the library that computes it: ``library_digest`` is
the package version plus a hash of every source file of the installed
``lobsweep`` tree, so an upgrade or an edit of, say, the trainer reruns the
stages instead of serving results the old code made.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
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


def library_roots() -> dict:
    """{package name: folder} for ``lobsweep`` and every subpackage, as imported in this process."""
    import lobsweep
    names = ["lobsweep", *(f"lobsweep.{n}" for n in lobsweep.SUBPACKAGES)]
    return {n: list(importlib.util.find_spec(n).submodule_search_locations)[0] for n in names}


@functools.lru_cache(maxsize=1)
def library_digest() -> str:
    """Version + sha256 over the (relative name, bytes) of every source file of the library tree.

    Computed once per process (about 150 files); the checkout's location does not enter it.
    """
    import lobsweep
    h = hashlib.sha256(lobsweep.__version__.encode())
    for name, root in sorted(library_roots().items()):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
            for f in sorted(filenames):
                if f.endswith((".pyc", ".pyo")):
                    continue
                path = os.path.join(dirpath, f)
                h.update(f"{name}/{os.path.relpath(path, root)}".encode())
                with open(path, "rb") as fh:
                    h.update(hashlib.sha256(fh.read()).digest())
    return f"{lobsweep.__version__}-{h.hexdigest()[:16]}"
