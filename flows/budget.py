"""One wall-clock budget for a whole full-search, shared out over its stages.

``--time-budget 5m`` is the interface (as in AutoGluon's ``time_limit`` or
FLAML's ``time_budget``). A ``Plan`` splits it by shares that are printed at the
start and recorded in MLflow:

    finish (ensemble, package, score, MLflow): 5% of the budget, at least 30 s
    the rest: feature-search 15 : hpo 45 : retrain 35 (adopt: 15 : 60 : 20)

Finishing does not grow with the budget (it is bounded by the report split and
the member count), so it is a reserve, not a share of what is left: at 5
minutes it keeps 30 s (it used 9 to 24 s in the bench and the demo), at
20 minutes 60 s. The training stages' shares are re-applied to the time
actually left, less that reserve, each time a stage starts (``allot``), so
whatever a stage did not use passes to the stages after it (a search that
stagnates hands its time to retraining, which fills it with seeds), and a stage
that overran takes it from them. The training stages stop at their allotment.
The end-to-end overrun is bounded by one epoch of the slowest trial still
running when a deadline passes plus finishing beyond its reserve, which is
what ``TOLERANCE`` states.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from ..errors import UserError
from ..progress import clock

SHARES = {"feature-search": 0.15, "hpo": 0.45, "retrain": 0.35, "finish": 0.05}
# when retrain adopts the sweep's best trials as members (the budgeted presets), the trials are
# where the members are trained, so the HPO takes most of what retraining from scratch needed
ADOPT_SHARES = {"feature-search": 0.15, "hpo": 0.60, "retrain": 0.20, "finish": 0.05}
FINISH = "finish"
FINISH_MIN_S = 30.0         # the finishing reserve is FINISH's share of the budget, at least this
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

    def reserve(self) -> float:
        """Seconds kept for finishing: its share of the budget, at least ``FINISH_MIN_S``."""
        if FINISH not in self.shares:
            return 0.0
        total = sum(self.shares.values())
        return min(self.total_s, max(self.total_s * self.shares[FINISH] / total, FINISH_MIN_S))

    def planned(self) -> dict:
        """What each stage would get if every stage spent exactly its plan: the finishing reserve,
        and the training stages' shares of the rest."""
        reserve = self.reserve()
        train = sum(sh for st, sh in self.shares.items() if st != FINISH)
        return {st: (reserve if st == FINISH else (self.total_s - reserve) * sh / train)
                for st, sh in self.shares.items()}

    def left(self) -> float:
        return self.total_s - (time.time() - self.started)

    def allot(self, stage: str) -> float:
        """Seconds for ``stage`` now: finishing gets all that is left; a training stage gets its
        share, among the training stages not yet run, of the time left less the finishing reserve."""
        pending = [st for st in self.shares if st not in self.spent and st != stage]
        if stage == FINISH:
            seconds = max(self.left(), 1.0)
        else:
            reserve = self.reserve() if FINISH in pending else 0.0
            train = [st for st in pending if st != FINISH]
            weight = self.shares[stage] / (self.shares[stage] + sum(self.shares[st] for st in train))
            seconds = max((self.left() - reserve) * weight, 1.0)
        self.allotted[stage] = seconds
        return seconds

    def done(self, stage: str, seconds: float) -> None:
        self.spent[stage] = float(seconds)

    def skip(self, stage: str) -> None:
        """A stage that will not run (feature search off): its share goes to the others."""
        self.spent[stage] = 0.0
        self.allotted[stage] = 0.0

    def header(self) -> str:
        parts = ", ".join(f"{st} {100 * s / self.total_s:.0f}% ({clock(s)})" for st, s in self.planned().items())
        return (f"time budget {clock(self.total_s)} (ends within +{100 * TOLERANCE:.0f}%): {parts}; "
                f"what a stage leaves passes on")

    def table(self) -> str:
        rows = [f"{'stage':<16}{'planned':>9}{'allotted':>10}{'spent':>8}"]
        for st, p in self.planned().items():
            a, s = self.allotted.get(st), self.spent.get(st)
            rows.append(f"{st:<16}{clock(p):>9}{clock(a) if a is not None else '-':>10}"
                        f"{clock(s) if s is not None else '-':>8}")
        rows.append(f"{'total':<16}{clock(self.total_s):>9}{'':>10}{clock(time.time() - self.started):>8}")
        return "\n".join(rows)

    def record(self) -> dict:
        return {"total_s": self.total_s, "tolerance": TOLERANCE, "shares": self.shares, "reserve_s": self.reserve(),
                "planned_s": self.planned(),
                "allotted_s": self.allotted, "spent_s": self.spent, "elapsed_s": time.time() - self.started}
