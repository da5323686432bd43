"""Honest ensemble selection: pick a method on tune, report it on report.

Roles (see DESIGN.md, "Honest evaluation"): every weight and every choice
is fitted on the tune split; a method's tune score is cross-fitted over
sequence-grouped folds so that fitted methods do not get credit for fitting
noise. The report split is only scored, with a sequence bootstrap CI, and
decides nothing: not the method, not the fallback to uniform.

The fallback is decided on tune too. The reference is uniform, or the
*floor* when one is given and scores higher on tune: the floor is the
strongest default's members (the best recipe's seeds, retrain's
``floor.json``), averaged. The fitted method with the best cross-fitted tune
score is used only when its gain over the reference is larger than its
noise: the lower bound of a paired sequence-bootstrap 90% CI of (fitted -
reference) on the cross-fitted tune predictions must be above 0 (a
one-sided 5% test). Otherwise the reference is used. So on tune the
ensemble can match the floor or beat it, never be forced below it. Whatever is used is then
reported on report as it is; when a used fitted method scores below
uniform there, the report says so instead of switching.

Shapes: ``P[N, M, 2]`` member predictions, ``Y[N, 2]`` targets,
``groups[N]`` sequence ids, ``W[M, 2]`` weights, ``scale[2]`` post-scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np

from lobsweep.data.metric import score
from lobsweep.errors import UserError

from .bootstrap import bootstrap_ci_per_target, bootstrap_scores, member_scores
from .methods import (
    blend,
    check_costs,
    check_inputs,
    fit_post_scale,
    greedy_selection,
    top_members_within_budget,
    uniform_weights,
    weighted_blend,
)

METHODS = ("uniform", "greedy", "weighted")
GAIN_CI = 0.90              # two-sided level of the tune-gain CI; its lower bound must be > 0


def group_folds(groups, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id ``[N]`` per row; all rows of a sequence share one fold.

    Sequences are shuffled with ``seed`` and dealt into ``n_folds`` folds of
    near-equal sequence counts.
    """
    groups = np.asarray(groups).ravel()
    uniq, inv = np.unique(groups, return_inverse=True)
    if n_folds < 2:
        raise UserError(f"cross-fitting needs at least 2 folds, got n_folds={n_folds}")
    if uniq.size < n_folds:
        raise UserError(f"the tune split has {uniq.size} sequences, fewer than n_folds={n_folds}; "
                        "use fewer folds or a larger tune split")
    order = np.random.default_rng(seed).permutation(uniq.size)
    fold_of_group = np.empty(uniq.size, dtype=np.int64)
    for k, chunk in enumerate(np.array_split(order, n_folds)):
        fold_of_group[chunk] = k
    return fold_of_group[inv]


def _as_weights(fitted) -> tuple[np.ndarray, np.ndarray | None]:
    """A method returns ``W`` or ``(W, scale)``; normalise to the pair."""
    return (fitted[0], fitted[1]) if isinstance(fitted, tuple) else (fitted, None)


def _crossfit_pair(method_fn, P, Y, groups, n_folds, seed) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold blends ``[N, 2]`` without and with a post-scale fitted on
    each fold's training rows, from one pass over the folds."""
    folds = group_folds(groups, n_folds, seed)
    raw = np.empty((P.shape[0], 2))
    scaled = np.empty((P.shape[0], 2))
    for k in range(n_folds):
        test = folds == k
        W, scale = _as_weights(method_fn(P[~test], Y[~test]))
        fitted_train = blend(P[~test], W, scale)
        raw[test] = blend(P[test], W, scale)
        scaled[test] = raw[test] * fit_post_scale(fitted_train, Y[~test])
    return raw, scaled


def crossfit(method_fn, P, Y, groups, n_folds: int = 5, seed: int = 0, post_scale: bool = False) -> np.ndarray:
    """Out-of-fold blended predictions ``[N, 2]`` of ``method_fn``.

    ``method_fn(P_train, Y_train)`` returns ``W[M, 2]`` or ``(W, scale)``.
    Folds are sequence-grouped (``group_folds``), so no sequence is both
    fitted and predicted; with ``post_scale`` each fold also fits
    ``fit_post_scale`` on its own training rows.
    """
    P, Y = check_inputs(P, Y)
    raw, scaled = _crossfit_pair(method_fn, P, Y, groups, n_folds, seed)
    return scaled if post_scale else raw


def budget_from_minutes(minutes: float = 60, n_seq: int = 1500, seq_len: int = 1000,
                        safety: float = 2.0, overhead_ms: float = 0.05) -> float:
    """Ensemble latency budget in ms per step.

    The scorer steps through every row (warm-up included), so the time per
    step is ``minutes / (n_seq * seq_len)``; divide by ``safety`` for a slower
    grader and subtract the per-step Python overhead of the submission loop.
    The defaults give 60 min / 1.5M steps / 2 - 0.05 = 1.15 ms.
    """
    if minutes <= 0 or n_seq <= 0 or seq_len <= 0 or safety <= 0 or overhead_ms < 0:
        raise UserError("budget_from_minutes needs positive minutes, n_seq, seq_len, safety "
                        "and a non-negative overhead")
    ms = minutes * 60_000.0 / (n_seq * seq_len) / safety - overhead_ms
    if ms <= 0:
        raise UserError(f"no time left per step: {minutes} min over {n_seq}x{seq_len} steps with "
                        f"safety {safety} is below the {overhead_ms} ms overhead")
    return float(ms)


@dataclass
class MethodResult:
    """One row of the report: a method fitted on tune, scored on report."""

    method: str
    weights: np.ndarray                 # [M, 2]
    scale: np.ndarray                   # [2], ones unless a cross-fitted post-scale helped
    tune_cv: dict                       # cross-fitted tune score {"t0", "t1", "mean"}
    report: dict                        # {"t0": (score, lo, hi), "t1": ..., "mean": ...}
    members: list[int]                  # distinct members with weight in either target
    cost: float | None                  # sum of their costs, None without costs
    tune_pred: np.ndarray | None = field(default=None, repr=False)   # [N_tune, 2] cross-fitted blend

    def row(self) -> dict:
        mean, lo, hi = self.report["mean"]
        return {"method": self.method, "t0": self.report["t0"][0], "t1": self.report["t1"][0],
                "mean": mean, "ci_lo": lo, "ci_hi": hi, "n_members": len(self.members),
                "cost": self.cost, "tune_cv_mean": self.tune_cv["mean"],
                "post_scale": bool(np.any(self.scale != 1.0))}


@dataclass
class EnsembleReport:
    """Every method on the report split, and the one to package.

    ``chosen`` is the method with the best cross-fitted tune score; ``used``
    is the method whose ``weights``/``scale`` are returned, equal to
    ``chosen`` unless its tune gain over uniform was within noise
    (``fell_back_to_uniform``; ``tune_gain`` holds the gain and its CI);
    ``reason`` says which happened, in words, and ``report_note`` says when
    the used fitted method scores below uniform on report (kept regardless).
    """

    chosen: str
    used: str
    fell_back_to_uniform: bool
    reason: str
    results: list[MethodResult]
    budget: float | None = None
    tune_gain: dict | None = None       # {"gain", "lo", "hi", "level"} of chosen - reference on tune
    report_note: str = ""
    reference: str = "uniform"          # what a fitted method had to beat: uniform, or the floor
    weights: np.ndarray = field(init=False)
    scale: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        used = self.result(self.used)
        self.weights, self.scale = used.weights, used.scale

    def result(self, method: str) -> MethodResult:
        return next(r for r in self.results if r.method == method)

    def table(self) -> list[dict]:
        """Rows (method, t0, t1, mean, ci_lo, ci_hi, n_members, cost, ...) for display."""
        return [r.row() for r in self.results]

    def to_dict(self) -> dict:
        """JSON-able summary: the decision, the table, and per method its
        weights, scale, members, cross-fitted tune score and report CIs."""
        return {"chosen": self.chosen, "used": self.used,
                "fell_back_to_uniform": self.fell_back_to_uniform, "reason": self.reason,
                "tune_gain": self.tune_gain, "report_note": self.report_note, "reference": self.reference,
                "budget": None if self.budget is None else float(self.budget), "table": self.table(),
                "methods": {r.method: {"weights": r.weights.tolist(), "scale": r.scale.tolist(),
                                       "members": r.members, "tune_cv": r.tune_cv,
                                       "report": {k: list(v) for k, v in r.report.items()}}
                            for r in self.results}}


def _best_single(P, Y, costs, budget) -> np.ndarray:
    """One-hot ``W`` on the best affordable member by mean score on (P, Y)."""
    s = member_scores(P, Y).mean(axis=1)
    if budget is not None:
        s = np.where(costs <= budget, s, -np.inf)
    return uniform_weights(P.shape[1], [int(np.argmax(s))])


def _method_fns(n_members, costs, budget, options, floor=None) -> dict:
    """Method name -> ``fn(P, Y) -> W`` with the budget and options bound."""
    opts = {k: dict(v) for k, v in (options or {}).items()}
    if set(opts) - {"greedy", "weighted"}:
        raise UserError(f"options are for 'greedy' and 'weighted' only, got {sorted(opts)}")

    def uniform(P, Y):
        return uniform_weights(n_members, top_members_within_budget(P, Y, costs=costs, budget=budget))

    fns = {"uniform": uniform,
           "greedy": partial(greedy_selection, costs=costs, budget=budget, **opts.get("greedy", {})),
            "weighted": partial(weighted_blend, costs=costs, budget=budget, **opts.get("weighted", {})),
           "best_single": partial(_best_single, costs=costs, budget=budget)}
    if floor:
        fns["floor"] = lambda P, Y: uniform_weights(n_members, list(floor))
    return fns


def _evaluate(name, fn, P_tune, Y_tune, g_tune, P_rep, Y_rep, g_rep, costs, *,
              allow_scale, n_folds, n_boot, seed) -> MethodResult:
    """Cross-fit ``fn`` on tune (with and without post-scale), fit it on all
    of tune, and score it on report with a sequence-bootstrap CI."""
    raw, scaled = _crossfit_pair(fn, P_tune, Y_tune, g_tune, n_folds, seed)
    cv_raw, cv_scaled = score(Y_tune, raw), score(Y_tune, scaled)
    W, own = _as_weights(fn(P_tune, Y_tune))
    scale = np.ones(2) if own is None else np.asarray(own, dtype=np.float64)
    use_scale = allow_scale and cv_scaled["mean"] > cv_raw["mean"]
    if use_scale:
        scale = scale * fit_post_scale(blend(P_tune, W, scale), Y_tune)
    rep = bootstrap_ci_per_target(Y_rep, blend(P_rep, W, scale), g_rep, n_boot=n_boot, seed=seed)
    members = [int(m) for m in np.nonzero(W.max(axis=1) > 0)[0]]
    cost = None if costs is None else float(costs[members].sum())
    return MethodResult(name, W, scale, cv_scaled if use_scale else cv_raw, rep, members, cost,
                        scaled if use_scale else raw)


def tune_gain(Y, pred, pred_ref, groups, n_boot: int = 200, seed: int = 0, level: float = GAIN_CI) -> dict:
    """Gain in mean score of ``pred`` over ``pred_ref`` (both ``[N, 2]``) on
    the same rows, with a paired sequence-bootstrap CI: both are scored on
    the same resampled sequences (one seed gives one draw of counts).
    ``pred_ref`` may be a list: the gain is then over the mean of their scores."""
    refs = pred_ref if isinstance(pred_ref, list) else [pred_ref]
    point = score(Y, pred)["mean"] - float(np.mean([score(Y, r)["mean"] for r in refs]))
    diff = (bootstrap_scores(Y, pred, groups, n_boot, seed)[:, 2]
            - np.mean([bootstrap_scores(Y, r, groups, n_boot, seed)[:, 2] for r in refs], axis=0))
    a = (1.0 - level) / 2
    return {"gain": float(point), "lo": float(np.quantile(diff, a)), "hi": float(np.quantile(diff, 1 - a)),
            "level": level}


def select_ensemble(P_tune, Y_tune, groups_tune, P_report, Y_report, groups_report, *,
                    costs=None, budget=None, methods=METHODS, seed=0, n_folds=5, n_boot=200,
                    options=None, floor=None) -> EnsembleReport:
    """Fit every method on tune, choose by cross-fitted tune score, report all.

    ``methods`` picks from ("uniform", "greedy", "weighted"); uniform is always
    included as the reference. ``options`` passes keyword arguments per method,
    e.g. ``{"greedy": {"rounds": 30}, "weighted": {"shrinkage": 0.5}}``. The
    best single member (chosen on tune) is reported beside them as
    "best_single" but is not a candidate. A post-scale is used by a fitted
    method only when it raises that method's cross-fitted tune score. The
    best fitted method replaces uniform only when its tune gain clears its
    noise (``tune_gain``, lower 90% bound > 0). ``floor`` (member indices)
    adds the "floor" row, their plain average, which becomes the reference in
    place of uniform when it scores higher on tune. Nothing here reads the
    report arrays except to score the finished choices.
    """
    P_tune, Y_tune = check_inputs(P_tune, Y_tune)
    P_report, Y_report = check_inputs(P_report, Y_report)
    if P_tune.shape[1] != P_report.shape[1]:
        raise UserError(f"tune has {P_tune.shape[1]} members but report has {P_report.shape[1]}")
    costs = check_costs(costs, budget, P_tune.shape[1])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown ensemble method(s) {unknown}; choose from {list(METHODS)}")
    names = ["uniform"] + [m for m in dict.fromkeys(methods) if m != "uniform"]
    floor = sorted({int(i) for i in floor or []})
    if floor and (min(floor) < 0 or max(floor) >= P_tune.shape[1]):
        raise UserError(f"floor members {floor} are not all among the {P_tune.shape[1]} members")
    if floor and costs is not None and budget is not None and costs[floor].sum() > budget:
        floor = []                      # a floor the latency budget cannot hold is no option
    if floor:
        names.append("floor")
    fns = _method_fns(P_tune.shape[1], costs, budget, options, floor)
    data = (P_tune, Y_tune, groups_tune, P_report, Y_report, groups_report, costs)
    results = [_evaluate(n, fns[n], *data, allow_scale=n not in ("uniform", "floor"), n_folds=n_folds,
                         n_boot=n_boot, seed=seed) for n in names + ["best_single"]]

    candidates = [r for r in results if r.method in names]
    best = max(candidates, key=lambda r: r.tune_cv["mean"])
    return _decide(best, results, Y_tune, groups_tune, n_boot, seed, budget)


def _decide(best: MethodResult, results: list[MethodResult], Y_tune, groups_tune, n_boot, seed,
            budget) -> EnsembleReport:
    """The reference (uniform, or the floor when it is higher on tune) or the best fitted method,
    from tune alone; report only described."""
    uni = results[0]
    ref = uni
    floor = next((r for r in results if r.method == "floor"), None)
    if floor is not None and floor.tune_cv["mean"] > uni.tune_cv["mean"]:
        ref = floor
    r_cv = ref.tune_cv["mean"]
    gain = None
    if best.method in ("uniform", "floor") or best is ref:
        used, fell_back = ref.method, False
        reason = f"{ref.method} had the best cross-fitted tune score ({r_cv:.4f})"
        if ref is floor:
            reason += f", above uniform's {uni.tune_cv['mean']:.4f}"
    else:
        gain = tune_gain(Y_tune, best.tune_pred, ref.tune_pred, groups_tune, n_boot, seed)
        ci = f"{100 * gain['level']:.0f}% CI [{gain['lo']:+.4f}, {gain['hi']:+.4f}]"
        if gain["lo"] > 0:
            used, fell_back = best.method, False
            reason = (f"{best.method} had the best cross-fitted tune score ({best.tune_cv['mean']:.4f} vs "
                      f"{ref.method} {r_cv:.4f}); its gain {gain['gain']:+.4f} on tune ({ci}) is above its noise")
        else:
            used, fell_back = ref.method, True
            reason = (f"{best.method} had the best cross-fitted tune score ({best.tune_cv['mean']:.4f} vs "
                      f"{ref.method} {r_cv:.4f}) but its gain {gain['gain']:+.4f} on tune ({ci}) is within noise, "
                      f"so the {'uniform average' if ref is uni else 'floor (the strongest default)'} is used")
    note = ""
    used_rep = next(r for r in results if r.method == used).report["mean"][0]
    if used != ref.method and used_rep < ref.report["mean"][0]:
        note = (f"{used} scores {used_rep:.4f} on report, below {ref.method}'s {ref.report['mean'][0]:.4f}; "
                "kept because the choice is made on tune, never on report")
    return EnsembleReport(best.method, used, fell_back and used == "uniform", reason, results, budget=budget,
                          tune_gain=gain, report_note=note, reference=ref.method)
