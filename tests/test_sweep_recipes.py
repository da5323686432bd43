"""Recipes as a sweep's first trials, and ``sweep --extend``: properties of the real driver.

The recipes here are two tiny stand-ins monkeypatched into the registry of
recipes: the driver turns them into points in this process, so Ray's workers
never read the registry, and the test stays seconds per trial. The real
recipes are checked against the default spaces in test_search_spaces.py.
"""

from __future__ import annotations

import glob
import json
import os
import pickle

import pytest

from lobsweep.cli import main
from lobsweep.search_spaces import recipes as recipes_mod
from lobsweep.search_spaces.adapter import decode_value

TINY = {"model": {"hidden": {"type": "int", "low": 8, "high": 16, "log": True},
                  "layers": {"type": "int", "low": 1, "high": 2}},
        "train": {"crop_len": {"type": "choice", "values": [256]}, "batch_size": {"type": "choice", "values": [8]},
                  "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}}
STAND_INS = {
    "tiny-pearson": {"family": "gru", "about": "test", "features": {},
                     "model": {"hidden": 12, "layers": 2, "input_proj": False, "head": "linear"},
                     "train": {"loss": "pearson", "lr": 2e-2, "batch_size": 6, "schedule": "plateau",
                               "crop_len": 0, "ema_decay": 0.9}},
    "tiny-wmse": {"family": "gru", "about": "test", "features": {},
                  "model": {"hidden": 10, "layers": 1, "head": "linear"},
                  "train": {"loss": "wmse", "lr": 1e-2, "batch_size": 8, "crop_len": 256}},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from lobsweep.data.synth import write_dataset
    d = tmp_path_factory.mktemp("recipedata")
    write_dataset(d, n_train=24, n_valid=12, seq_len=1000, seed=0)
    return str(d)


@pytest.fixture(scope="module")
def ray_local():
    from lobsweep.tuning.ray_setup import ray_session
    with ray_session(num_cpus=2) as ray:
        yield ray


@pytest.fixture
def stand_ins(monkeypatch):
    monkeypatch.setattr(recipes_mod, "RECIPES", STAND_INS)


def _cfg(rec: dict) -> dict:
    return {k: decode_value(v) for k, v in rec["config"].items()}


def _study(sweep_dir: str, experiment: str):
    """The Optuna study of an experiment's searcher, as Ray saved it (under its ConcurrencyLimiter)."""
    state = sorted(glob.glob(os.path.join(sweep_dir, "ray", experiment, "searcher-state-*.pkl")))
    assert state, f"no saved searcher state for {experiment}"
    obj = pickle.load(open(state[-1], "rb"))
    while not hasattr(obj, "trials"):
        obj = obj["_ot_study"] if isinstance(obj, dict) and "_ot_study" in obj else (
            obj.get("searcher") if isinstance(obj, dict) else getattr(obj, "searcher", None) or obj._ot_study)
        assert obj is not None
    return obj


# ---------------------------------------------------------------- fast: bad arguments, nothing written
@pytest.mark.parametrize("argv, message", [
    (["--extend", "ghost"], "no sweep named 'ghost'"),
    (["--set-space", "model.layers=[1]", "--data", "x", "--families", "gru"], "--set-space only applies with"),
    (["--extend", "a", "--resume", "a"], "not both"),
])
def test_bad_extend_arguments_fail_in_one_line(argv, message, tmp_path, capsys):
    rc = main(["sweep", "--run-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "sweeps")


def test_set_space_parsing():
    from lobsweep.errors import UserError
    from lobsweep.tuning.sweep_extend import check_overrides, parse_set_space
    out = parse_set_space(["model.layers=[3,4]", "gru.train.lr=0.001",
                           'train.loss={"type": "choice", "values": ["pearson"]}'], ["gru", "lstm"])
    assert out["gru"]["model.layers"] == {"type": "choice", "values": [3, 4]} == out["lstm"]["model.layers"]
    assert out["gru"]["train.lr"] == {"type": "choice", "values": [0.001]} and "train.lr" not in out["lstm"]
    for bad in (["model.nope=[1]"], ["ssm.model.layers=[1]"], ["layers=[1]"], ["model.layers"]):
        with pytest.raises(UserError):
            check_overrides(parse_set_space(bad, ["gru", "lstm"]))


# ---------------------------------------------------------------- slow: the real driver
@pytest.mark.slow
def test_recipes_run_first_with_their_config_and_extend_warm_starts(ray_local, data_dir, tmp_path, stand_ins):
    from lobsweep.training.bundle import load_bundle
    from lobsweep.tuning import run_sweep
    from lobsweep.tuning.leaderboard import load_leaderboard
    run_dir = str(tmp_path / "runs")
    out = run_sweep(data_dir, ["gru"], name="rec", run_dir=run_dir, num_samples=4, max_epochs=3, grace_period=1,
                    reduction_factor=2, spaces={"gru": TINY}, max_concurrent=2, seed=0, track=False)
    recs = out["records"]
    assert len(recs) == 4
    # the recipes are the searcher's first trials, and each ran with its full config (the bundle says so)
    tagged = sorted((r for r in recs if r.get("recipe")), key=lambda r: r["recipe"])
    assert [r["recipe"] for r in tagged] == ["tiny-pearson", "tiny-wmse"]
    assert all(r["status"] == "completed" and r["epochs"] == 3 for r in tagged)     # ASHA never stops a recipe
    first = [{k: decode_value(v) for k, v in t.params.items()} for t in _study(out["sweep_dir"], "gru").trials[:2]]
    assert first == [{k: v for k, v in _cfg(r).items() if k != "family"} for r in tagged]   # in definition order
    for r in tagged:
        want = recipes_mod.get_recipe(r["recipe"])
        spec = load_bundle(r["bundle"]).spec
        assert {k: spec["config"][k] for k in want["model"]} == want["model"]
        got_train = {k: spec["train_config"][k] for k in want["train"] if k != "epochs"}
        assert got_train == {k: v for k, v in want["train"].items() if k != "epochs"}
    board = load_leaderboard(out["sweep_dir"])
    best_recipe = max(r["metrics"]["final_tune_mean"] for r in tagged)
    assert board["overall"][0]["tune_score"] >= best_recipe
    meta = json.load(open(os.path.join(out["sweep_dir"], "sweep.json")))
    assert [p["recipe"] for p in meta["recipe_points"]] == ["tiny-pearson", "tiny-wmse"]

    # extend: 3 more trials, layers fixed to 1; nothing reruns, the searcher knows the 4 trials that fit
    before = {r["trial_id"]: r["metrics"]["tune_mean"] for r in recs}
    ext = run_sweep(None, None, extend="rec", num_samples=3, set_space=["model.layers=[1]"], run_dir=run_dir)
    new = [r for r in ext["records"] if r["trial_id"] not in before]
    old = [r for r in ext["records"] if r["trial_id"] in before]
    assert len(new) == 3 and len(old) == 4 and len(ext["records"]) == 7
    assert {r["trial_id"]: r["metrics"]["tune_mean"] for r in old} == before
    assert all(_cfg(r)["model.layers"] == 1 and r["experiment"] == "gru.ext1" for r in new)
    assert len(glob.glob(os.path.join(out["sweep_dir"], "ray", "gru", "*", "result.json"))) == 4
    fits = sum(_cfg(r)["model.layers"] == 1 for r in recs)        # only these fit the narrowed space
    study = _study(out["sweep_dir"], "gru.ext1")
    assert len(study.trials) == fits + 3
    assert sorted(t.value for t in study.trials[:fits]) == sorted(
        r["metrics"]["tune_mean"] for r in recs if _cfg(r)["model.layers"] == 1)
    board2 = load_leaderboard(ext["sweep_dir"])
    assert board2["counts"]["gru"]["total"] == 7
    assert board2["overall"][0]["tune_score"] >= board["overall"][0]["tune_score"]
    rc = main(["sweep", "--extend", "rec", "--set-space", "model.heads=[2]", "--run-dir", run_dir])
    assert rc == 2                                      # gru has no heads field: refused, nothing appended
    assert len(json.load(open(os.path.join(out["sweep_dir"], "sweep.json")))["extensions"]) == 1


def test_asha_never_stops_a_recipe_trial_but_records_its_score():
    """The same poor score at rung 1: an ordinary trial is stopped, the recipe trial continues."""
    from types import SimpleNamespace
    from ray.tune.schedulers import TrialScheduler
    from lobsweep.tuning.recipe_points import KeepPointsASHA
    recipe = {"model.hidden": 12, "train.target_weights": [1.0, 0.5]}
    sched = KeepPointsASHA([recipe], time_attr="training_iteration", max_t=9, grace_period=1, reduction_factor=3)
    sched.set_search_properties("tune_mean", "max")
    trials = {name: SimpleNamespace(trial_id=name, config=cfg) for name, cfg in (
        ("good1", {"model.hidden": 40}), ("good2", {"model.hidden": 41}),
        ("plain", {"model.hidden": 12, "train.target_weights": "json:[1.0, 1.0]"}),
        ("recipe", {"model.hidden": 12, "train.target_weights": "json:[1.0, 0.5]", "family": "gru"}))}
    for t in trials.values():
        sched.on_trial_add(None, t)
    act = {n: sched.on_trial_result(None, t, {"training_iteration": 1, "tune_mean": s})
           for (n, t), s in zip(trials.items(), (0.30, 0.31, 0.01, 0.01))}
    assert act["plain"] == TrialScheduler.STOP and act["recipe"] == TrialScheduler.CONTINUE
    end = sched.on_trial_result(None, trials["recipe"], {"training_iteration": 9, "tune_mean": 0.02})
    assert end == TrialScheduler.STOP                   # at max_t a recipe ends like any trial


def test_while_a_family_waits_a_trial_past_its_share_is_cut_and_marked(tmp_path):
    """Coverage: a trial (kept or not) that trained its fair share while some family has no trial
    is stopped and marked as cut (so it keeps its bundle); once every family started, none is."""
    from types import SimpleNamespace
    from ray.tune.schedulers import TrialScheduler
    from lobsweep.tuning.recipe_points import KeepPointsASHA, cut_marker
    cut_dir = str(tmp_path / "cut")
    recipe = {"family": "gru", "model.hidden": 12}
    sched = KeepPointsASHA([recipe], coverage={"families": ["gru", "lstm", "ssm"], "share_s": 10.0,
                                               "cut_dir": cut_dir, "exempt": None},
                           time_attr="training_iteration", max_t=50, grace_period=50, reduction_factor=3)
    sched.set_search_properties("tune_mean", "max")
    kept = SimpleNamespace(trial_id="kept", config={"family": "gru", "model.hidden": 12})
    other = SimpleNamespace(trial_id="other", config={"family": "gru", "model.hidden": 30})
    for t in (kept, other):
        sched.on_trial_add(None, t)
    res = lambda it, s, **kw: {"training_iteration": it, "tune_mean": 0.3, "time_total_s": s, **kw}  # noqa: E731
    assert sched.on_trial_result(None, kept, res(1, 4.0)) == TrialScheduler.CONTINUE     # inside its share
    assert not os.path.exists(cut_marker(cut_dir, "kept"))
    assert sched.waiting_families() == ["lstm", "ssm"]
    assert sched.on_trial_result(None, kept, res(3, 10.5)) == TrialScheduler.STOP         # past it: cut
    assert "lstm, ssm" in open(cut_marker(cut_dir, "kept")).read()
    assert sched.on_trial_result(None, other, res(2, 12.0, done=True)) == TrialScheduler.CONTINUE  # finishing
    sched.on_trial_add(None, SimpleNamespace(trial_id="l", config={"family": "lstm"}))
    sched.on_trial_add(None, SimpleNamespace(trial_id="s", config={"family": "ssm"}))
    assert sched.waiting_families() == []
    assert sched.on_trial_result(None, other, res(5, 40.0)) == TrialScheduler.CONTINUE    # nobody waits
    assert not os.path.exists(cut_marker(cut_dir, "other"))
    floor = KeepPointsASHA([recipe], coverage={"families": ["gru", "lstm"], "share_s": 10.0, "cut_dir": cut_dir,
                                               "exempt": recipe},
                           time_attr="training_iteration", max_t=50, grace_period=50)
    floor.set_search_properties("tune_mean", "max")
    other2 = SimpleNamespace(trial_id="other2", config={"family": "gru", "model.hidden": 30})
    for t in (kept, other2):
        floor.on_trial_add(None, t)
    assert floor.on_trial_result(None, kept, res(3, 50.0)) == TrialScheduler.CONTINUE    # the floor keeps its slot
    assert floor.on_trial_result(None, other2, res(3, 50.0)) == TrialScheduler.STOP      # lstm still waits
    plain = KeepPointsASHA([recipe], time_attr="training_iteration", max_t=50, grace_period=50)
    plain.set_search_properties("tune_mean", "max")
    plain.on_trial_add(None, kept)
    assert plain.on_trial_result(None, kept, res(3, 1e6)) == TrialScheduler.CONTINUE      # no coverage: no cut


def test_the_floor_keeps_a_slot_and_the_other_families_share_the_time_left():
    """coverage_of: one recipe per family; with 2 slots the plain default keeps one and the other
    four rotate through the other, each ending by an equal share of the time left when it starts
    (trial_deadline); with 1 slot all rotate; nothing for per-family, unbudgeted or short studies."""
    from types import SimpleNamespace
    from lobsweep.search_spaces import sweep_space
    from lobsweep.tuning.recipe_points import matches, with_recipes
    from lobsweep.tuning.sweep import coverage_of
    from lobsweep.tuning.trial import trial_deadline
    fams = ["gru", "gru_attention", "lstm", "ssm", "transformer"]
    meta = {"name": "j", "families": fams, "joint": True}
    with_recipes(meta, {f: sweep_space(f) for f in fams})
    cov = coverage_of(meta, None, 300.0, 2, 64, "/x/cut")
    assert cov["families"] == fams and cov["exempt"]["family"] == "gru" and cov["round_slots"] == 1
    assert [p["family"] for p in cov["rounds"]] == fams[1:] and cov["share_s"] == pytest.approx(75.0)
    ctx = SimpleNamespace(deadline=1300.0, rounds=tuple(cov["rounds"]), round_slots=1)
    ends = [trial_deadline(dict(p), ctx, now=now) for p, now in zip(cov["rounds"], (1000.0, 1075.0, 1150.0, 1240.0))]
    assert ends == pytest.approx([1075.0, 1150.0, 1225.0, 1300.0])   # 300/4, 225/3, 150/2, the rest
    assert trial_deadline(dict(cov["exempt"]), ctx, now=1000.0) == 1300.0              # the floor: the deadline
    assert trial_deadline({"family": "lstm", "lstm.model.hidden": -1}, ctx, now=1000.0) == 1300.0  # sampled
    one = coverage_of(meta, None, 300.0, 1, 64, "/x/cut")
    assert one["exempt"] is None and len(one["rounds"]) == 5 and one["share_s"] == pytest.approx(60.0)
    assert matches(dict(one["rounds"][0]), cov["exempt"])
    four = coverage_of(meta, None, 300.0, 4, 64, "/x/cut")
    ctx4 = SimpleNamespace(deadline=1300.0, rounds=tuple(four["rounds"]), round_slots=3)
    assert trial_deadline(dict(four["rounds"][0]), ctx4, now=1000.0) == pytest.approx(1150.0)  # ceil(4/3) = 2
    assert trial_deadline(dict(four["rounds"][3]), ctx4, now=1150.0) == pytest.approx(1300.0)
    assert coverage_of(meta, "gru", 300.0, 2, 64, "/x") is None                      # per-family study
    assert coverage_of(meta, None, None, 2, 64, "/x") is None                        # no budget
    assert coverage_of(meta, None, 300.0, 2, 4, "/x") is None                        # fewer trials than families


def test_with_searched_features_the_plain_default_trains_on_plain_inputs_and_features_are_searched():
    """feature_sets: the features become a dimension {searched, plain}; the plain default recipe
    takes the plain inputs (the floor is then the default model itself), every other recipe the
    searched ones; a trial config picks its pipeline through the builder."""
    from lobsweep.search_spaces import FEATURES_KEY, sweep_space
    from lobsweep.tuning.recipe_points import with_recipes
    from lobsweep.tuning.sweep import feature_sets
    from lobsweep.tuning.trial import ModelTrialBuilder
    searched = {"book": {"levels": 2}}
    assert feature_sets({"recipes": True, "features_spec": None, "feature_dim": True}) is None
    assert feature_sets({"recipes": False, "features_spec": searched, "feature_dim": True}) is None
    assert feature_sets({"recipes": True, "features_spec": searched}) is None   # created before the dimension
    sets = feature_sets({"recipes": True, "features_spec": searched, "feature_dim": True})
    assert sets == {"searched": searched, "plain": {}}
    for joint in (True, False):
        fams = ["gru", "lstm"]
        spaces = {f: {**sweep_space(f), FEATURES_KEY: {"type": "choice", "values": list(sets)}} for f in fams}
        meta = {"name": "f", "families": fams, "joint": joint}
        with_recipes(meta, spaces)
        key = (lambda fam: f"{fam}.features") if joint else (lambda fam: "features")  # noqa: E731
        got = {p["recipe"]: p[key(p["family"])] for p in meta["recipe_points"]}
        assert got["plain-gru"] == "plain" and got["default-lstm"] == "searched" and got["default-gru"] == "searched"
    b = ModelTrialBuilder(data_dir="d", max_epochs=1, features_spec=searched, feature_sets=sets)
    assert b.features_for({"family": "gru", "gru.features": "plain"}, "gru") == {}
    assert b.features_for({"features": "searched"}, "lstm") == searched
    assert b.features_for({"family": "lstm"}, "lstm") == searched                 # no choice: the searched ones
    assert ModelTrialBuilder(data_dir="d", max_epochs=1, features_spec=searched).features_for(
        {"features": "plain"}, "gru") == searched                                   # not a dimension: as given


def test_a_reused_actor_keeps_both_feature_sets_prepared(monkeypatch):
    """Trials switching between the searched and the plain features do not prepare them again."""
    import lobsweep.tuning.trial as trial_mod
    calls = []
    monkeypatch.setattr(trial_mod, "prepare", lambda d, spec, **kw: calls.append(spec) or {"spec": spec},
                        raising=False)
    monkeypatch.setattr(trial_mod, "_PREPARED", {})
    for spec in ({"book": {}}, {}, {"book": {}}, {}, {"book": {}}):
        assert trial_mod.prepared("d", spec, None, None) == {"spec": spec}
    assert calls == [{"book": {}}, {}]
    trial_mod.prepared("other", {}, None, None)                       # a third: the oldest goes
    trial_mod.prepared("d", {}, None, None)
    trial_mod.prepared("d", {"book": {}}, None, None)
    assert calls == [{"book": {}}, {}, {}, {"book": {}}]


def test_a_cut_trial_keeps_its_bundle_under_its_own_id_when_ray_reuses_its_actor(tmp_path):
    """Ray names the next trial before it closes the old one on a reused actor (Trainable.reset):
    the cut trial's bundle must still be written as the cut trial's."""
    from types import SimpleNamespace
    from lobsweep.tuning.recipe_points import cut_marker
    from lobsweep.tuning.trial import SweepTrainable, TrialContext

    class Run:
        def finish(self, path):
            os.makedirs(path)
            open(os.path.join(path, "spec.json"), "w").write("{}")
            return {"bundle": path}

    cut_dir, bundles = str(tmp_path / "cut"), str(tmp_path / "bundles")
    os.makedirs(cut_dir)
    open(cut_marker(cut_dir, "a"), "w").write("cut\n")
    t = SweepTrainable.__new__(SweepTrainable)
    t._trial_info, t._iteration = SimpleNamespace(trial_id="a"), 3
    t.ctx = TrialContext(sweep="s", bundles_dir=bundles, cut_dir=cut_dir)
    t.run, t.status, t.final, t.last, t.tracker, t._tid = Run(), "running", None, {}, None, "a"
    t._trial_info = SimpleNamespace(trial_id="b")          # what Trainable.reset does before reset_config
    t._close()
    assert t.status == "stopped_at_epoch_3"
    assert os.listdir(bundles) == ["a"]


def test_joint_sweep_enqueues_recipes_through_the_define_by_run_space():
    """--joint: the searcher's first suggestions are the recipes, family included (no Ray run needed)."""
    from lobsweep.search_spaces import sweep_space
    from lobsweep.search_spaces.adapter import joint_define_by_run
    from lobsweep.search_spaces.recipes import fit_recipes
    from lobsweep.tuning.experiment import ExperimentSettings, make_searcher
    from lobsweep.tuning.recipe_points import matches
    spaces, points = {}, []
    for fam in ("gru", "lstm"):
        spaces[fam], pts, _ = fit_recipes(fam, sweep_space(fam), joint=True)
        points += pts
    keep = [{k: v for k, v in p.items() if k != "recipe"} for p in points]
    searcher = make_searcher(joint_define_by_run(spaces),
                             ExperimentSettings(num_samples=8, max_t=2, points_to_evaluate=keep))
    got = [searcher.suggest(f"t{i}") for i in range(len(keep) + 1)]
    for cfg, want in zip(got, keep):
        assert matches(cfg, want) and cfg["family"] == want["family"]
    assert not any(matches(got[-1], w) for w in keep)          # then the searcher samples on its own
