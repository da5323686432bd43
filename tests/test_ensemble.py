"""Properties of ensemble selection on synthetic members with a known truth.

Members are ``truth + level * (rho * shared + sqrt(1 - rho^2) * own)``: the
noise level orders their quality and ``shared`` makes their errors
correlated, as seeds of one family are. Targets are ``truth + noise`` with
t1 noisier than t0, as in the competition.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lobsweep.data.metric import score, weighted_pearson_1d
from lobsweep.ensemble import (
    BudgetError,
    blend,
    bootstrap_ci,
    bootstrap_ci_per_target,
    budget_from_minutes,
    column_scores,
    crossfit,
    fit_post_scale,
    greedy_selection,
    group_folds,
    member_scores,
    select_ensemble,
    uniform_weights,
    weighted_blend,
)
from lobsweep.ensemble.bootstrap import TargetMoments, _group_moments, _scores_from_moments, scaled_scores
from lobsweep.errors import UserError

LEVELS = (0.6, 1.0, 1.5, 2.0, 3.0, 4.0)


def make_case(seed, n_seq=40, seq_len=40, levels=LEVELS, rho=0.4, truth=None):
    """``P[N, M, 2]``, ``Y[N, 2]``, ``groups[N]`` (and the truth ``[N, 2]``)."""
    rng = np.random.default_rng(seed)
    n = n_seq * seq_len
    groups = np.repeat(rng.permutation(10 * n_seq)[:n_seq], seq_len)
    truth = rng.normal(size=(n, 2)) if truth is None else truth
    Y = truth + rng.normal(size=(n, 2)) * np.array([1.0, 3.0])
    shared = rng.normal(size=(n, 2))
    P = np.stack([truth + lv * (rho * shared + np.sqrt(1 - rho ** 2) * rng.normal(size=(n, 2)))
                  for lv in levels], axis=1)
    return P, Y, groups, truth


def assert_valid_weights(W, n_members):
    assert W.shape == (n_members, 2)
    assert np.all(W >= 0)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-9)


def distinct_cost(W, costs):
    return costs[W.max(axis=1) > 0].sum()


def test_uniform_weights_sum_to_one_and_respect_subset():
    assert_valid_weights(uniform_weights(5), 5)
    W = uniform_weights(5, subset=[1, 3])
    assert_valid_weights(W, 5)
    assert set(np.nonzero(W[:, 0])[0]) == {1, 3}


def test_column_scores_match_official_metric_including_clip():
    P, Y, _, _ = make_case(0, n_seq=5)
    P = P * np.array([1.0, 10.0])                       # t1 predictions reach the +-6 clip
    got = member_scores(P, Y)
    want = [[weighted_pearson_1d(Y[:, t], P[:, m, t]) for t in (0, 1)] for m in range(P.shape[1])]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert column_scores(Y[:, 0], np.zeros((len(Y), 1)))[0] == 0.0


def test_target_moments_score_and_gradient_are_exact_with_clipped_rows():
    P, Y, _, _ = make_case(1, n_seq=5)
    Pt = P[:, :4, 1] * 4.0                              # many rows leave +-6
    mom = TargetMoments(Y[:, 1], Pt)
    assert 0 < mom.rw.size < len(Y)
    A = np.random.default_rng(0).dirichlet(np.ones(4), size=6).T      # [4, 6] convex blends
    want = [weighted_pearson_1d(Y[:, 1], Pt @ A[:, j]) for j in range(6)]
    np.testing.assert_allclose(mom.score(A), want, atol=1e-10)
    np.testing.assert_allclose(mom.subset([0, 2]).score(np.array([0.3, 0.7])),
                               weighted_pearson_1d(Y[:, 1], Pt[:, [0, 2]] @ np.array([0.3, 0.7])), atol=1e-10)
    a, eps = A[:, 0], 1e-6
    direction = np.array([1.0, -1.0, 0.5, -0.5])        # keeps sum(a) == 1
    _, grad = mom.score_and_grad(a)
    numeric = (weighted_pearson_1d(Y[:, 1], Pt @ (a + eps * direction))
               - weighted_pearson_1d(Y[:, 1], Pt @ (a - eps * direction))) / (2 * eps)
    assert grad @ direction == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_scaled_scores_match_official_metric():
    P, Y, _, _ = make_case(2, n_seq=5)
    p = 3.0 * P[:, 0, 0]
    scales = np.array([-4.0, -1.0, 0.0, 0.01, 0.5, 1.0, 2.0, 30.0])
    want = [weighted_pearson_1d(Y[:, 0], s * p) for s in scales]
    np.testing.assert_allclose(scaled_scores(Y[:, 0], p, scales), want, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_tune_score_at_least_best_single(seed):
    P, Y, _, _ = make_case(seed)
    W = greedy_selection(P, Y, rounds=20)
    assert_valid_weights(W, P.shape[1])
    got = score(Y, blend(P, W))
    best = member_scores(P, Y).max(axis=0)
    assert got["t0"] >= best[0] - 1e-12 and got["t1"] >= best[1] - 1e-12


def test_weighted_blend_puts_more_weight_on_less_noisy_members():
    levels = np.array([0.5, 1.0, 2.0, 4.0])
    P, Y, _, _ = make_case(3, n_seq=60, levels=tuple(levels), rho=0.0)
    W = weighted_blend(P, Y, shrinkage=0.0)
    assert_valid_weights(W, 4)
    assert W[0, 0] > W[1, 0] > max(W[2, 0], W[3, 0])
    for t in (0, 1):
        assert W[0, t] > 0.5 and W[0, t] > W[1, t] > W[3, t]
    inverse_variance = levels ** -2 / (levels ** -2).sum()             # optimum for independent errors
    np.testing.assert_allclose(W[:, 0], inverse_variance, atol=0.1)


def test_weighted_blend_shrinkage_one_is_uniform_and_beats_uniform_when_fitted():
    P, Y, _, _ = make_case(4)
    np.testing.assert_allclose(weighted_blend(P, Y, shrinkage=1.0), uniform_weights(P.shape[1]))
    W = weighted_blend(P, Y, shrinkage=0.3)
    assert_valid_weights(W, P.shape[1])
    assert np.all(W >= 0.3 / P.shape[1] - 1e-12)
    assert score(Y, blend(P, W))["mean"] > score(Y, blend(P, uniform_weights(P.shape[1])))["mean"]


@pytest.mark.parametrize("method", [greedy_selection, weighted_blend])
def test_budget_limits_distinct_member_cost(method):
    P, Y, _, _ = make_case(5, levels=(1.0, 1.1, 1.2, 1.3, 1.4, 1.5), rho=0.0)
    costs = np.array([0.5, 0.4, 0.3, 0.3, 0.2, 0.2])
    tight = method(P, Y, costs=costs, budget=0.55)
    loose = method(P, Y, costs=costs, budget=10.0)
    for W in (tight, loose):
        assert_valid_weights(W, 6)
    n_tight = np.count_nonzero(tight.max(axis=1))
    n_loose = np.count_nonzero(loose.max(axis=1))
    assert distinct_cost(tight, costs) <= 0.55 + 1e-12
    assert n_loose >= n_tight and n_loose > 2
    with pytest.raises(BudgetError):
        method(P, Y, costs=costs, budget=0.1)


def test_post_scale_fixes_sign_and_clip_and_never_hurts():
    P, Y, _, truth = make_case(6)
    flipped = -truth * np.array([1.0, 50.0])            # wrong sign; t1 almost all clipped
    scale = fit_post_scale(flipped, Y)
    assert np.all(scale < 0) and abs(scale[1]) < 1
    assert score(Y, flipped * scale)["mean"] > score(Y, flipped)["mean"] + 0.5
    pred = blend(P, uniform_weights(P.shape[1]))
    assert score(Y, pred * fit_post_scale(pred, Y))["mean"] >= score(Y, pred)["mean"]


def test_group_folds_and_crossfit_never_split_a_sequence():
    P, Y, groups, _ = make_case(7, n_seq=23, seq_len=7)
    folds = group_folds(groups, n_folds=5, seed=1)
    for g in np.unique(groups):
        assert np.unique(folds[groups == g]).size == 1
    assert np.unique(folds).size == 5

    rows_per_group = {g: int((groups == g).sum()) for g in np.unique(groups)}
    tagged = P.copy()
    tagged[:, 0, 0] = groups                            # lets the spy see which rows it got
    held_out = []

    def spy(P_train, Y_train):
        ids, counts = np.unique(P_train[:, 0, 0], return_counts=True)
        assert all(rows_per_group[int(g)] == c for g, c in zip(ids, counts))
        held_out.append(set(rows_per_group) - set(int(g) for g in ids))
        return uniform_weights(P_train.shape[1])

    oof = crossfit(spy, tagged, Y, groups, n_folds=5, seed=1)
    assert oof.shape == Y.shape and len(held_out) == 5
    assert sum(len(h) for h in held_out) == len(rows_per_group)
    assert set().union(*held_out) == set(rows_per_group)
    with pytest.raises(UserError):
        group_folds(groups[:14], n_folds=5)


def test_crossfit_score_is_below_in_sample_score_for_fitted_weights():
    P, Y, groups, _ = make_case(8, n_seq=20, levels=(1.0,) * 8, rho=0.0)
    fit = lambda p, y: weighted_blend(p, y, shrinkage=0.0)
    in_sample = score(Y, blend(P, fit(P, Y)))["mean"]
    assert score(Y, crossfit(fit, P, Y, groups, n_folds=4))["mean"] < in_sample


def test_bootstrap_moments_are_exact_on_resampled_rows():
    P, Y, groups, _ = make_case(9, n_seq=8, seq_len=10)
    pred = 3.0 * P[:, 0]                                # some rows clipped
    uniq, inv = np.unique(groups, return_inverse=True)
    counts = np.random.default_rng(0).multinomial(uniq.size, np.full(uniq.size, 1 / uniq.size))
    rows = np.concatenate([np.nonzero(inv == g)[0] for g in range(uniq.size) for _ in range(counts[g])])
    for t in (0, 1):
        got = _scores_from_moments(counts @ _group_moments(Y[:, t], pred[:, t], inv, uniq.size))
        assert got == pytest.approx(weighted_pearson_1d(Y[rows, t], pred[rows, t]), abs=1e-10)


def test_bootstrap_ci_contains_point_and_widens_with_fewer_sequences():
    widths = []
    for n_seq in (80, 10):
        P, Y, groups, _ = make_case(10, n_seq=n_seq, seq_len=30)
        pred = blend(P, uniform_weights(P.shape[1]))
        point, lo, hi = bootstrap_ci(Y, pred, groups, n_boot=300, seed=0)
        assert point == pytest.approx(score(Y, pred)["mean"])
        assert lo < point < hi
        per = bootstrap_ci_per_target(Y, pred, groups, n_boot=300, seed=0)
        assert all(per[k][1] < per[k][0] < per[k][2] for k in ("t0", "t1"))
        widths.append(hi - lo)
    assert widths[1] > 1.3 * widths[0]


def test_select_ensemble_beats_best_single_on_a_realistic_case():
    levels = (1.0, 1.05, 1.1, 1.2, 1.3, 1.5, 2.0)        # seeds of similar quality
    P, Y, g, _ = make_case(11, levels=levels)
    P2, Y2, g2, _ = make_case(12, levels=levels)
    rep = select_ensemble(P, Y, g, P2, Y2, g2, seed=0, n_boot=100, options={"greedy": {"rounds": 20}})
    table = {row["method"]: row for row in rep.table()}
    assert set(table) == {"uniform", "greedy", "weighted", "best_single"}
    for row in table.values():
        assert row["ci_lo"] <= row["mean"] <= row["ci_hi"] and row["cost"] is None
    assert table[rep.used]["mean"] >= table["best_single"]["mean"]
    assert_valid_weights(rep.weights, len(levels))
    assert rep.scale.shape == (2,)
    assert rep.used == (rep.chosen if not rep.fell_back_to_uniform else "uniform")
    assert json.loads(json.dumps(rep.to_dict()))["used"] == rep.used


def test_fitted_method_kept_on_tune_even_when_worse_on_report():
    P, Y, g, truth = make_case(13, levels=(0.3, 2.0, 2.0, 2.0, 2.0))
    P2, Y2, g2, _ = make_case(14, levels=(0.3, 2.0, 2.0, 2.0, 2.0))
    P2[:, 0] = np.random.default_rng(0).normal(size=P2[:, 0].shape)   # member 0 stops working on report
    rep = select_ensemble(P, Y, g, P2, Y2, g2, methods=("greedy", "weighted"), n_boot=50)
    assert rep.chosen in ("greedy", "weighted") and rep.used == rep.chosen and not rep.fell_back_to_uniform
    assert rep.tune_gain["lo"] > 0 and rep.tune_gain["level"] == 0.90
    table = {r["method"]: r for r in rep.table()}
    assert table[rep.used]["mean"] < table["uniform"]["mean"]             # worse on report, and kept
    assert "below uniform" in rep.report_note and "tune" in rep.report_note


def test_fallback_to_uniform_exactly_when_the_tune_gain_is_within_noise():
    outcomes = set()
    for seed in range(6):                   # equal members on few sequences: gains are mostly noise
        P, Y, g, _ = make_case(100 + seed, n_seq=12, levels=(1.0, 1.0, 1.1, 1.2))
        P2, Y2, g2, _ = make_case(200 + seed, n_seq=12, levels=(1.0, 1.0, 1.1, 1.2))
        rep = select_ensemble(P, Y, g, P2, Y2, g2, n_boot=100, seed=seed)
        if rep.chosen == "uniform":
            assert rep.used == "uniform" and rep.tune_gain is None
            continue
        lo = rep.tune_gain["lo"]
        assert rep.fell_back_to_uniform == (lo <= 0)
        assert rep.used == ("uniform" if lo <= 0 else rep.chosen)
        outcomes.add(rep.fell_back_to_uniform)
        if rep.fell_back_to_uniform:
            assert "within noise" in rep.reason
            np.testing.assert_allclose(rep.weights, uniform_weights(4))
    assert True in outcomes


@pytest.mark.parametrize("case", [13, 21, 102])
def test_report_targets_decide_nothing(case):
    """Shuffle or perturb the report targets: every decision is bit-identical, only report numbers move."""
    levels = (0.3, 2.0, 2.0, 2.0, 2.0) if case == 13 else (1.0, 1.0, 1.1, 1.2)
    P, Y, g, _ = make_case(case, n_seq=40 if case != 102 else 12, levels=levels)
    P2, Y2, g2, _ = make_case(case + 1, levels=levels)
    rng = np.random.default_rng(case)
    Y_shuffled = Y2[rng.permutation(len(Y2))]
    Y_noised = Y2 + rng.normal(size=Y2.shape) * 5.0
    base = select_ensemble(P, Y, g, P2, Y2, g2, n_boot=60, seed=1)
    for Y_alt in (Y_shuffled, Y_noised, -Y2):
        alt = select_ensemble(P, Y, g, P2, Y_alt, g2, n_boot=60, seed=1)
        assert (alt.chosen, alt.used, alt.fell_back_to_uniform, alt.reason, alt.tune_gain) == \
            (base.chosen, base.used, base.fell_back_to_uniform, base.reason, base.tune_gain)
        assert np.array_equal(alt.weights, base.weights) and np.array_equal(alt.scale, base.scale)
        for a, b in zip(alt.results, base.results):
            assert a.members == b.members and a.tune_cv == b.tune_cv
            assert np.array_equal(a.weights, b.weights) and np.array_equal(a.scale, b.scale)
        assert alt.result(alt.used).report != base.result(base.used).report


def test_select_ensemble_under_budget_reports_costs_within_budget():
    P, Y, g, _ = make_case(15)
    P2, Y2, g2, _ = make_case(16)
    costs = np.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    rep = select_ensemble(P, Y, g, P2, Y2, g2, costs=costs, budget=0.8, n_boot=50,
                          options={"greedy": {"rounds": 10}})
    for row in rep.table():
        assert row["cost"] <= 0.8 + 1e-12
    assert distinct_cost(rep.weights, costs) <= 0.8 + 1e-12
    assert rep.to_dict()["budget"] == 0.8
    with pytest.raises(UserError):
        select_ensemble(P, Y, g, P2, Y2, g2, budget=1.0)
    with pytest.raises(UserError):
        select_ensemble(P, Y, g, P2, Y2, g2, methods=("stacking",))


def test_budget_from_minutes():
    assert budget_from_minutes() == pytest.approx(60 * 60_000 / 1_500_000 / 2.0 - 0.05)
    assert budget_from_minutes(minutes=120) > budget_from_minutes(minutes=60)
    with pytest.raises(UserError):
        budget_from_minutes(minutes=1, safety=100.0)


def test_floor_is_the_reference_when_it_beats_uniform_on_tune_and_nothing_used_is_below_it():
    """Two good members (the strongest default's seeds) among junk: uniform drags them down, the
    floor becomes what a fitted method must beat on tune, and the used ensemble never scores
    below the floor on tune."""
    levels = (0.8, 0.8, 4.0, 4.0, 4.0, 4.0)
    for seed in range(4):
        P, Y, g, _ = make_case(300 + seed, n_seq=16, levels=levels)
        P2, Y2, g2, _ = make_case(400 + seed, n_seq=16, levels=levels)
        rep = select_ensemble(P, Y, g, P2, Y2, g2, n_boot=100, seed=seed, floor=[0, 1])
        table = {r["method"]: r for r in rep.table()}
        assert table["floor"]["n_members"] == 2
        assert table["floor"]["tune_cv_mean"] > table["uniform"]["tune_cv_mean"]
        assert rep.reference == "floor"
        assert table[rep.used]["tune_cv_mean"] >= table["floor"]["tune_cv_mean"]
        if rep.used == "floor":
            np.testing.assert_allclose(rep.weights, uniform_weights(6, [0, 1]))
        else:                                       # a fitted method, and only with a gain over the floor
            assert rep.tune_gain["lo"] > 0 and "vs floor" in rep.reason


def test_floor_gives_way_to_uniform_when_uniform_is_better_on_tune():
    P, Y, g, _ = make_case(31, levels=(1.0, 1.0, 1.0, 1.0, 3.0))
    P2, Y2, g2, _ = make_case(32, levels=(1.0, 1.0, 1.0, 1.0, 3.0))
    rep = select_ensemble(P, Y, g, P2, Y2, g2, n_boot=50, floor=[4])        # the weak member as "floor"
    assert rep.reference == "uniform" and rep.used != "floor"
    with pytest.raises(UserError, match="floor members"):
        select_ensemble(P, Y, g, P2, Y2, g2, floor=[7])


def test_floor_decisions_ignore_the_report_targets():
    levels = (0.8, 0.8, 4.0, 4.0, 4.0)
    P, Y, g, _ = make_case(41, n_seq=16, levels=levels)
    P2, Y2, g2, _ = make_case(42, n_seq=16, levels=levels)
    base = select_ensemble(P, Y, g, P2, Y2, g2, n_boot=50, floor=[0, 1])
    alt = select_ensemble(P, Y, g, P2, -Y2, g2, n_boot=50, floor=[0, 1])
    assert (alt.used, alt.reference, alt.reason) == (base.used, base.reference, base.reason)
    assert np.array_equal(alt.weights, base.weights)
