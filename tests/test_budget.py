"""The wall-clock budget plan: parsing, shares, what a stage leaves passing on."""

from __future__ import annotations

import pytest

from lobsweep.errors import UserError
from lobsweep.flows.budget import SHARES, Plan, parse_duration


@pytest.mark.parametrize("text, seconds", [("300", 300), ("90s", 90), ("5m", 300), ("2h", 7200), ("1.5m", 90),
                                           (45, 45), (None, None)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 parsecs", "-5m", "0", "m", "", float("inf"), True])
def test_bad_durations_are_one_line_user_errors(bad):
    with pytest.raises(UserError, match="--time-budget"):
        parse_duration(bad)


def test_shares_are_reapplied_to_the_time_left():
    plan = Plan(1000.0)
    fs = plan.allot("feature-search")
    assert fs == pytest.approx(1000 * SHARES["feature-search"], rel=1e-3)
    plan.done("feature-search", 50.0)                   # used 50 of its 150 s
    plan.started -= 50.0                                 # ... and 50 s went by
    hpo = plan.allot("hpo")
    rest = SHARES["hpo"] + SHARES["retrain"] + SHARES["finish"]
    assert hpo == pytest.approx(950 * SHARES["hpo"] / rest, rel=1e-3)
    assert hpo > 1000 * SHARES["hpo"]                    # the unused 100 s partly passed on
    plan.done("hpo", hpo + 200)                          # an overrun is taken from the later stages
    plan.started -= hpo + 200
    rt = plan.allot("retrain")
    assert rt == pytest.approx(plan.left() * SHARES["retrain"] / (SHARES["retrain"] + SHARES["finish"]), rel=1e-3)
    assert rt < 1000 * SHARES["retrain"]
    assert {"feature-search", "hpo", "retrain"} <= set(plan.record()["allotted_s"])


def test_a_skipped_stage_gives_its_share_to_the_others():
    plan = Plan(600.0)
    plan.skip("feature-search")
    hpo = plan.allot("hpo")
    assert hpo == pytest.approx(600 * SHARES["hpo"] / (1 - SHARES["feature-search"]), rel=1e-3)
    assert "feature-search" in plan.table() and "time budget 10:00" in plan.header()
