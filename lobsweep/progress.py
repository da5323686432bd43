"""Progress a person can read: one live line per stage, and the libraries' own output in a log file.

Ray, Tune, Optuna and Prefect write boxes, status tables, checkpoint notices
and trial logs to the process's stdout and stderr. ``quiet_libraries(log)``
points file descriptors 1 and 2 (so also every child process and Ray's
log forwarding) at ``log`` for the duration of the block, and keeps the
real terminal for progress only. With ``verbose`` nothing is redirected.

``Stage`` draws one line per stage::

    [hpo] 7/15 trials: 2 running, 3 done, 2 pruned, 0 failed | best tune 0.3121 | 1:12 elapsed, 2:48 left

On a terminal the line is redrawn in place (at most a few times a second) and
ends with a newline when the stage closes; when the output is not a terminal
(CI logs, a file) each event prints one line instead, so nothing depends on
carriage returns.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

_console = None                 # the real terminal while quiet_libraries() is active
_lock = threading.Lock()
REDRAW_S = 0.25


def console():
    """Where progress goes: the terminal saved by ``quiet_libraries``, else stdout."""
    return _console if _console is not None else sys.stdout


def say(msg: str) -> None:
    """One line of progress or report."""
    with _lock:
        out = console()
        out.write(msg + "\n")
        out.flush()


@contextlib.contextmanager
def quiet_libraries(log_path: str, verbose: bool = False):
    """Send fd 1 and 2 to ``log_path`` for the block; progress keeps the terminal. Yields the log path."""
    global _console
    if verbose or _console is not None:
        yield None
        return
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _console = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield log_path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        _console.close()
        _console = None


def clock(seconds: float) -> str:
    """Seconds as m:ss (h:mm:ss from an hour)."""
    s = int(round(max(seconds, 0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Stage:
    """One stage's progress line: counts, the best score so far, elapsed and budget left."""

    def __init__(self, name: str, unit: str = "trials", total: int | None = None, budget_s: float | None = None,
                 score_label: str = "best tune"):
        self.name, self.unit, self.total, self.budget_s, self.score_label = name, unit, total, budget_s, score_label
        self.counts: dict[str, int] = {}
        self.best: float | None = None
        self.extra = ""
        self.started = time.time()
        self._drawn = 0.0
        self._live = console().isatty()

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def score(self, value: float | None) -> None:
        if value is not None and value == value and (self.best is None or value > self.best):
            self.best = float(value)

    def line(self) -> str:
        done = sum(v for k, v in self.counts.items() if k != "running")
        head = f"[{self.name}] {done}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"
        parts = [head + (": " + ", ".join(f"{v} {k}" for k, v in self.counts.items()) if self.counts else "")]
        if self.best is not None:
            parts.append(f"{self.score_label} {self.best:.4f}")
        if self.extra:
            parts.append(self.extra)
        elapsed = time.time() - self.started
        when = f"{clock(elapsed)} elapsed"
        if self.budget_s:
            when += f", {clock(self.budget_s - elapsed)} left"
        parts.append(when)
        return " | ".join(parts)

    def tick(self) -> None:
        """Numbers moved but nothing happened worth a line: redraw on a terminal, stay silent elsewhere."""
        if self._live:
            self.event()

    def event(self, note: str | None = None) -> None:
        """Something happened: redraw the live line, or print one line when not on a terminal."""
        with _lock:
            out = console()
            if self._live:
                now = time.time()
                if now - self._drawn < REDRAW_S and note is None:
                    return
                self._drawn = now
                out.write("\r\033[K" + self.line())
            else:
                out.write(self.line() + (f" ({note})" if note else "") + "\n")
            out.flush()

    def close(self, summary: str | None = None) -> None:
        with _lock:
            out = console()
            if self._live:
                out.write("\r\033[K")
            out.write((summary or self.line()) + "\n")
            out.flush()
