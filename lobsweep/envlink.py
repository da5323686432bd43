"""A whitespace-free path to this Python environment, because Ray needs one.

Ray's raylet receives the command that starts its worker processes as one
string (the interpreter, Ray's ``setup_worker.py`` and ``default_worker.py``,
all under this environment) and splits it on whitespace. In an environment
whose path holds a space (a checkout in ``My Projects/...`` with its ``.venv``
inside) no worker can start, and the first trial waits forever.

So ``lobsweep`` commands run through a symlink to the environment at a path
without whitespace, under the temp dir: ``reexec_if_needed`` re-executes the
command once through ``<link>/bin/python``, after which ``sys.executable`` and
Ray's own files are reached by paths Ray passes through intact. The link
points at the same environment, so the same packages (and the same editable
checkout) are used. ``python -m lobsweep.envlink`` prints the link, for
starting other tools (a Prefect worker) the same way.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile

ENV_FLAG = "LOBSWEEP_ENV_LINKED"
ENTRY = "import sys; from lobsweep.cli import main; sys.exit(main())"


def has_whitespace(path: str) -> bool:
    return any(c.isspace() for c in path)


def needs_link() -> bool:
    """True when Ray could not start workers from this interpreter's environment."""
    return has_whitespace(sys.prefix) or has_whitespace(sys.executable)


def space_free_prefix(prefix: str | None = None) -> str:
    """``prefix`` (default: this environment) itself, or a symlink to it at a path without whitespace."""
    prefix = prefix or sys.prefix
    if not has_whitespace(prefix):
        return prefix
    digest = hashlib.sha256(os.path.realpath(prefix).encode()).hexdigest()[:12]
    link = os.path.join(tempfile.gettempdir(), f"lobsweep-env-{digest}")
    if has_whitespace(link):
        from .errors import UserError
        raise UserError(f"the temp dir {tempfile.gettempdir()!r} holds whitespace; set TMPDIR to a folder without "
                        f"it (Ray cannot start workers from a path with spaces)")
    if not (os.path.islink(link) and os.path.realpath(link) == os.path.realpath(prefix)):
        tmp = f"{link}.{os.getpid()}"
        os.symlink(prefix, tmp)
        os.replace(tmp, link)                    # atomic: concurrent commands agree on one link
    return link


def reexec_if_needed(argv: list[str]) -> None:
    """Re-run this ``lobsweep`` command through the whitespace-free link when the environment needs one."""
    if not needs_link() or os.environ.get(ENV_FLAG):
        return
    exe = os.path.join(space_free_prefix(), "bin", os.path.basename(sys.executable))
    os.environ[ENV_FLAG] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    # -P: no current directory on sys.path (a checkout's own lobsweep/ folder must not shadow the install)
    os.execv(exe, [exe, "-P", "-c", ENTRY, *argv])


if __name__ == "__main__":
    print(space_free_prefix())
