"""One wall-clock budget for a whole full-search, shared out over its stages.

``--time-budget 5m`` is the interface (as in AutoGluon's ``time_limit`` or
FLAML's ``time_budget``). A ``Plan`` splits it by shares that are printed at the
start and recorded in MLflow:

    feature-search 15%   hpo 45%   retrain 30%   finish 10% (ensemble, package, score, MLflow)

Shares are re-applied to the time actually left each time a stage starts
(``allot``), so whatever a stage did not use passes to the stages after it,
and a stage that overran takes it from them. The stages that train
(feature search, HPO, retrain) stop at their allotment; finishing is short and
bounded by the size of the report split. The end-to-end overrun is bounded by
one epoch of the slowest trial still running when a deadline passes plus the
finishing stages, which is what ``TOLERANCE`` states.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from ..errors import UserError

SHARES = {"feature-search": 0.15, "hpo": 0.45, "retrain": 0.30, "finish": 0.10}
# when retrain adopts the sweep's best trials as members (the budgeted presets), the trials are
# where the members are trained, so the HPO takes most of what retraining from scratch needed
ADOPT_SHARES = {"feature-search": 0.15, "hpo": 0.60, "retrain": 0.15, "finish": 0.10}
TOLERANCE = 0.15            # documented overrun: the run ends within budget * (1 + TOLERANCE)
_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")


def parse_duration(value) -> float | None:
    """``"5m"``, ``"90s"``, ``"2h"``, ``"300"`` or a number of seconds -> seconds (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise UserError(f"--time-budget must look like 300, 90s, 5m or 2h, got {value!r}")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or ""]
    if not seconds > 0 or seconds == float("inf"):
        raise UserError(f"--time-budget must be a positive duration, got {value!r}")
    return seconds


@dataclass
class Plan:
    """The budget, the shares, and per stage what was allotted and spent (seconds)."""

    total_s: float
    shares: dict = field(default_factory=lambda: dict(SHARES))
    started: float = field(default_factory=time.time)
    allotted: dict = field(default_factory=dict)
    spent: dict = field(default_factory=dict)

    def planned(self) -> dict:
        """What each stage would get if every stage spent exactly its share."""
        total = sum(self.shares.values())
        return {st: self.total_s * sh / total for st, sh in self.shares.items()}

    def left(self) -> float:
        return self.total_s - (time.time() - self.started)

    def allot(self, stage: str) -> float:
        """Seconds for ``stage`` now: its share of the time left among the stages not yet run."""
        pending = [st for st in self.shares if st not in self.spent and st != stage]
        weight = self.shares[stage] / (self.shares[stage] + sum(self.shares[st] for st in pending))
        seconds = max(self.left() * weight, 1.0)
        self.allotted[stage] = seconds
        return seconds

    def done(self, stage: str, seconds: float) -> None:
        self.spent[stage] = float(seconds)

    def skip(self, stage: str) -> None:
        """A stage that will not run (feature search off): its share goes to the others."""
        self.spent[stage] = 0.0
        self.allotted[stage] = 0.0

    def header(self) -> str:
        parts = ", ".join(f"{st} {100 * sh / sum(self.shares.values()):.0f}% ({_mmss(s)})"
                          for (st, sh), s in zip(self.shares.items(), self.planned().values()))
        return (f"time budget {_mmss(self.total_s)} (ends within +{100 * TOLERANCE:.0f}%): {parts}; "
                f"what a stage leaves passes on")

    def table(self) -> str:
        rows = [f"{'stage':<16}{'planned':>9}{'allotted':>10}{'spent':>8}"]
        for st, p in self.planned().items():
            a, s = self.allotted.get(st), self.spent.get(st)
            rows.append(f"{st:<16}{_mmss(p):>9}{_mmss(a) if a is not None else '-':>10}"
                        f"{_mmss(s) if s is not None else '-':>8}")
        rows.append(f"{'total':<16}{_mmss(self.total_s):>9}{'':>10}{_mmss(time.time() - self.started):>8}")
        return "\n".join(rows)

    def record(self) -> dict:
        return {"total_s": self.total_s, "tolerance": TOLERANCE, "shares": self.shares, "planned_s": self.planned(),
                "allotted_s": self.allotted, "spent_s": self.spent, "elapsed_s": time.time() - self.started}


def _mmss(seconds: float) -> str:
    s = int(round(max(seconds, 0)))
    return f"{s // 60}:{s % 60:02d}"
