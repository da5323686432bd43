"""The wall-clock budget plan: parsing, shares, what a stage leaves passing on."""

from __future__ import annotations

import pytest

from lobsweep.errors import UserError
from lobsweep.flows.budget import FINISH_MIN_S, SHARES, Plan, parse_duration


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
    reserve = plan.reserve()
    assert reserve == pytest.approx(max(1000 * SHARES["finish"], FINISH_MIN_S))
    train = SHARES["feature-search"] + SHARES["hpo"] + SHARES["retrain"]
    fs = plan.allot("feature-search")
    assert fs == pytest.approx((1000 - reserve) * SHARES["feature-search"] / train, rel=1e-3)
    plan.done("feature-search", 50.0)                   # used 50 of its ~143 s
    plan.started -= 50.0                                 # ... and 50 s went by
    hpo = plan.allot("hpo")
    assert hpo == pytest.approx((950 - reserve) * SHARES["hpo"] / (SHARES["hpo"] + SHARES["retrain"]), rel=1e-3)
    assert hpo > plan.planned()["hpo"]                   # the unused time passed on
    plan.done("hpo", hpo + 200)                          # an overrun is taken from the later stages
    plan.started -= hpo + 200
    rt = plan.allot("retrain")
    assert rt == pytest.approx(plan.left() - reserve, rel=1e-3)   # the last training stage: all but the reserve
    assert rt < plan.planned()["retrain"]
    plan.done("retrain", rt)
    plan.started -= rt
    assert plan.allot("finish") == pytest.approx(reserve, rel=1e-3)
    assert {"feature-search", "hpo", "retrain", "finish"} <= set(plan.record()["allotted_s"])


@pytest.mark.parametrize("total, finish", [(300.0, FINISH_MIN_S), (1200.0, 60.0), (7200.0, 360.0)])
def test_finishing_is_a_reserve_that_does_not_grow_with_what_is_left(total, finish):
    """Finishing keeps its share of the budget (at least 30 s); what training stages leave goes to
    the next training stage, not into a finishing share that it would not use."""
    plan = Plan(total)
    assert plan.reserve() == pytest.approx(finish)
    assert sum(plan.planned().values()) == pytest.approx(total)
    plan.done("feature-search", 0.0)
    plan.done("hpo", 0.0)                                # both ended at once: everything is left
    assert plan.allot("retrain") == pytest.approx(total - finish, rel=1e-3)


def test_a_skipped_stage_gives_its_share_to_the_others():
    plan = Plan(600.0)
    plan.skip("feature-search")
    hpo = plan.allot("hpo")
    assert hpo == pytest.approx((600 - plan.reserve()) * SHARES["hpo"] / (SHARES["hpo"] + SHARES["retrain"]),
                                rel=1e-3)
    assert "feature-search" in plan.table() and "time budget 10:00" in plan.header()
