"""The dimensions a search space is written in: ``float``, ``int`` and ``choice``, and their check.

Plain data, imported by the spaces (``__init__``) and by the adapter that
turns them into Optuna or Ray Tune objects.
"""

from __future__ import annotations

import math
import numbers

from ..errors import UserError

DIM_TYPES = ("float", "int", "choice")


class SpaceError(UserError):
    """A search space names an unknown field or holds a malformed dimension."""


def check_dim(name: str, dim) -> None:
    """One dimension must be well formed: known type, finite ordered bounds, non-empty choices."""
    def bad(msg):
        raise SpaceError(f"search dimension {name!r}: {msg}")
    if not isinstance(dim, dict) or dim.get("type") not in DIM_TYPES:
        bad(f"must be a dict with type in {DIM_TYPES}, got {dim!r}")
    if dim["type"] == "choice":
        if not isinstance(dim.get("values"), (list, tuple)) or not dim["values"]:
            bad("a choice needs a non-empty 'values' list")
        return
    lo, hi = dim.get("low"), dim.get("high")
    if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in (lo, hi)) or lo > hi:
        bad(f"needs finite low <= high, got low={lo!r} high={hi!r}")
    if dim["type"] == "int" and not (float(lo).is_integer() and float(hi).is_integer()):
        bad("an int range needs integer bounds")
    if dim.get("log") and lo <= 0:
        bad("a log-scale range needs low > 0")
