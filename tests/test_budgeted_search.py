"""The pieces of a budgeted full-search that decide where the time goes, on plain data:
the leaderboard keeps trials the budget cut and names the floor, retrain adopts trials and
sizes its seed jobs to the time left, the LR anneals by a wall-clock limit, and the presets
resolve as documented."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch

from lobsweep.errors import UserError
from lobsweep.flows import profiles
from lobsweep.tuning import retrain, retrain_plan
from lobsweep.training.trainer import TrainConfig, Trainer
from lobsweep.tuning.leaderboard import build_leaderboard, format_leaderboard


def _bundle(root, name, family="gru", tune=0.1, max_train_seqs=None, seed=0):
    """A directory that reads as a bundle spec (enough for the leaderboard and adoption)."""
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    spec = {"family": family, "config": {"hidden": 8}, "train_config": {"lr": 1e-3, "time_limit_s": 40.0},
            "features": {}, "seed": seed, "best_epoch": 3, "n_params": 10,
            "data": {"max_train_seqs": max_train_seqs},
            "metrics": {"tune_mean": tune, "report_mean": 0.0, "train_seconds": 60.0}}
    with open(os.path.join(d, "spec.json"), "w") as fh:
        json.dump(spec, fh)
    np.save(os.path.join(d, "valid_pred.npy"), np.zeros((4, 2), dtype=np.float32))
    return d


def _rec(root, tid, status, tune=None, family="gru", recipe=None):
    return {"trial_id": tid, "status": status, "epochs": 3, "family": family, "config": {},
            "bundle": _bundle(root, tid, family, tune) if tune is not None else None, "recipe": recipe}


@pytest.fixture
def board(tmp_path, monkeypatch):
    import lobsweep.training.bundle as bundle_mod
    monkeypatch.setattr(bundle_mod, "read_spec", lambda p: json.load(open(os.path.join(p, "spec.json"))))
    root = str(tmp_path / "trials")
    recs = [_rec(root, "a", "completed", 0.30, recipe="default-gru"),
            _rec(root, "b", "stopped_at_epoch_4", 0.35),                       # cut by the budget
            _rec(root, "c", "pruned_at_epoch_1"),
            _rec(root, "d", "completed", 0.20, family="lstm", recipe="default-lstm"),
            _rec(root, "e", "stopped_at_epoch_2", 0.25, family="lstm"),
            _rec(root, "f", "failed", family="lstm")]
    return build_leaderboard(recs, "s", top_k=1)


def test_leaderboard_keeps_budget_cut_trials_counts_them_and_names_the_floor(board):
    assert [e["trial_id"] for e in board["overall"]] == ["b", "e"]       # top 1 per family, cut ones included
    assert board["counts"]["gru"] == {"completed": 1, "stopped": 1, "failed": 0, "pruned": 1, "total": 3}
    assert board["counts"]["lstm"] == {"completed": 1, "stopped": 1, "failed": 1, "pruned": 0, "total": 3}
    assert board["floor"]["trial_id"] == "a" and board["floor"]["recipe"] == "default-gru"   # best recipe
    assert "3 started, 1 completed / 1 cut by the budget / 1 pruned" in format_leaderboard(board)


def test_retrain_entries_always_include_the_floor(board):
    per_family = retrain_plan.retrain_entries(board, top_k=1)
    assert [e["trial_id"] for _, e in per_family] == ["b", "e", "a"]
    adopt = retrain_plan.retrain_entries(board, top_k=1, adopt=True)             # the best overall, plus the floor
    assert [e["trial_id"] for _, e in adopt] == ["b", "a"]
    jobs = retrain_plan.plan_jobs(board, top_k=1, seeds=2, adopt=True)
    assert [(j["parent_trial"], j["floor"]) for j in jobs] == [("b", False), ("b", False), ("a", True), ("a", True)]
    assert all(j["train_config"]["time_limit_s"] == 0.0 for j in jobs)   # a trial's deadline is not a member's
    assert len({j["seed"] for j in jobs}) == 4


def test_seeds_start_floor_first_and_only_while_they_fit(board):
    jobs = retrain_plan.plan_jobs(board, top_k=1, seeds=3, adopt=True)          # parents trained 60 s each
    order = retrain.seed_order(jobs)
    assert [(j["parent_trial"], j["seed"] % 100) for j in order] == [("a", 0), ("b", 0), ("a", 1), ("b", 1),
                                                                     ("a", 2), ("b", 2)]
    job = order[2]
    assert not retrain.may_start(job, left_s=29.0)                              # under half of its parent's 60 s
    assert retrain.may_start(job, left_s=30.0)
    assert retrain.may_start(job, left_s=-5.0, needed=True)                     # an empty pool takes it anyway
    assert job["epoch_seconds"] == pytest.approx(60.0 / 3)                     # the parent: 60 s over 3 epochs
    short = {**job, "epoch_seconds": 4.0}
    assert retrain.may_start(short, left_s=5.0, first_wave=True)               # the first wave: far less than half
    assert not retrain.may_start(short, left_s=0.0, first_wave=True)
    long_epochs = {**job, "epoch_seconds": 25.0}                               # ... but one parent epoch must fit
    assert retrain.may_start(long_epochs, left_s=25.0, first_wave=True)
    assert not retrain.may_start(long_epochs, left_s=24.0, first_wave=True)
    one_epoch = {**job, "epoch_seconds": 60.0}                                 # a 1-epoch parent: never stricter
    assert retrain.may_start(one_epoch, left_s=30.0, first_wave=True)          # than the later seeds' half
    assert retrain.may_start({**job, "train_seconds": None}, left_s=1.0)
    assert not retrain.may_start({**job, "train_seconds": None}, left_s=0.0)   # never past the deadline


class _FakeRay:
    """Ray's remote / wait / get on a simulated clock: a task takes its parent trial's training
    time, cut at its deadline, plus 2 s of start-up; ``wait`` returns the first to end."""

    def __init__(self, clock):
        self.clock, self.ends, self.started = clock, {}, []

    def remote(self, **_):
        ray = self

        class _Task:
            @staticmethod
            def remote(job, *args):
                start = ray.clock[0]
                limit = job["deadline"] - start if job.get("deadline") else float("inf")
                ref = object()
                ray.ends[ref] = (start + min(float(job["train_seconds"]), max(limit, 1.0)) + 2.0,
                                 {"ok": True, "name": job["name"], "bundle": "/pool/" + job["name"],
                                  "metrics": {"tune_mean": 0.3}, "family": job["family"],
                                  "parent_trial": job["parent_trial"], "seed": job["seed"]})
                ray.started.append((start, job))
                return ref
        return lambda fn: _Task

    def wait(self, refs, num_returns=1):
        first = min(refs, key=lambda r: self.ends[r][0])
        self.clock[0] = max(self.clock[0], self.ends[first][0])
        return [first], [r for r in refs if r is not first]

    def get(self, ref):
        return self.ends[ref][1]


@pytest.fixture
def fake_stage(board, tmp_path, monkeypatch):
    """run_retrain with adoption and a time budget, on _FakeRay: the floor's parent (a) trained 20 s,
    the best config's (b) 300 s."""
    import contextlib
    import types
    import lobsweep.tuning.leaderboard as lb
    import lobsweep.tuning.ray_setup as rs
    import lobsweep.training.prepare as prep
    for e in [*board["overall"], board["floor"]]:
        e["train_seconds"] = 20.0 if e["trial_id"] == "a" else 300.0
    clock = [1000.0]
    fake = _FakeRay(clock)
    monkeypatch.setattr(retrain, "time", types.SimpleNamespace(time=lambda: clock[0], perf_counter=lambda: clock[0]))
    monkeypatch.setattr(lb, "load_leaderboard", lambda sweep, run_dir=None: board)
    monkeypatch.setattr(prep, "prepare", lambda *a, **k: None)
    monkeypatch.setattr(rs, "ray_session", contextlib.contextmanager(lambda *a, **k: (yield fake)))
    monkeypatch.setattr(rs, "default_concurrency", lambda res: 2)

    def run(budget_s: float) -> dict:
        return retrain.run_retrain("s", top_k=1, seeds=8, data_dir=str(tmp_path), run_dir=str(tmp_path / "runs"),
                                   name="rt", use_mlflow=False, adopt=True, time_budget_s=budget_s)
    return run, fake, clock


def test_seeds_fill_the_stage_and_none_starts_past_its_deadline(fake_stage):
    run, fake, clock = fake_stage
    t0 = clock[0]
    out = run(200.0)
    deadline = t0 + retrain.DEADLINE_FRACTION * 200.0
    started = [(t - t0, j["parent_trial"], j["seed"] % 100) for t, j in fake.started]
    assert all(j["deadline"] == deadline for _, j in fake.started)              # each anneals by the stage's end
    assert all(t < deadline - t0 for t, _, _ in started)
    # b's seed 1 no longer fits at 44 s (136 s left < half of 300 s); a's seeds go on filling the time
    assert [(p, s) for _, p, s in started] == [("a", 0), ("b", 0), ("a", 1)] + [("a", s) for s in range(2, 8)]
    assert clock[0] - t0 <= 200.0                                               # the stage ends inside its share
    trained = [r for r in out["results"] if not r.get("adopted")]
    assert len(trained) == 9 and len(out["bundles"]) == 9 + 3                   # and every family's top trial


def test_a_short_stage_starts_one_wave_and_nothing_after_it(fake_stage):
    """9 s to the deadline: under half of even the 20 s parent, so only the first wave may start (each
    seed annealing by the deadline): a's seed, whose parent's epochs took 6.7 s, not b's (100 s
    epochs, which would end far past it); nothing starts after it."""
    run, fake, clock = fake_stage
    t0 = clock[0]
    out = run(10.0)
    assert [(t - t0, j["parent_trial"], j["seed"] % 100) for t, j in fake.started] == [(0.0, "a", 0)]
    assert len(out["results"]) == 3 + 1 and clock[0] - t0 > 9.0       # the wave ended past the deadline
    assert all(j["deadline"] == t0 + 9.0 for _, j in fake.started)


def test_adopt_copies_whole_fit_trials_and_writes_the_floor(board, tmp_path):
    pool = str(tmp_path / "pool")
    os.makedirs(pool)
    adopted = retrain.adopt_trials(board, top_k=1, out_root=pool)
    assert sorted(r["name"] for r in adopted) == ["gru-a-trial", "gru-b-trial", "lstm-e-trial"]
    for r in adopted:
        assert os.path.isfile(os.path.join(r["bundle"], "spec.json")) and r["bundle"].startswith(pool)
    names = retrain.write_floor(pool, board, adopted + [{"ok": True, "name": "gru-a-s0", "parent_trial": "a"}])
    assert names == ["gru-a-s0", "gru-a-trial"]
    assert json.load(open(os.path.join(pool, retrain.FLOOR_FILE)))["recipe"] == "default-gru"
    again = retrain.adopt_trials(board, top_k=1, out_root=pool)             # a rerun finds them in place
    assert sorted(r["name"] for r in again) == sorted(r["name"] for r in adopted)


def test_adopt_leaves_out_trials_of_a_subsampled_sweep(board, tmp_path, capsys):
    _bundle(os.path.dirname(board["overall"][0]["bundle"]), "b", tune=0.35, max_train_seqs=16)
    pool = str(tmp_path / "pool")
    os.makedirs(pool)
    names = [r["name"] for r in retrain.adopt_trials(board, top_k=1, out_root=pool)]
    assert "gru-b-trial" not in names and "not adopted" in capsys.readouterr().out


def _split(n, t=64, f=4, seed=0):
    from lobsweep.training.trainer import Split
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, t, f)).astype(np.float32)
    Y = rng.normal(size=(n, t, 2)).astype(np.float32)
    return Split(X, Y, np.ones((n, t), dtype=bool))


def test_cosine_with_a_time_limit_anneals_by_the_clock():
    """The LR factor follows the larger of step progress and clock progress, to the 0.02 floor."""
    from lobsweep.models import create_model
    model = create_model("gru", n_features=4, hidden=8, layers=1)
    cfg = TrainConfig(epochs=10_000, lr=1e-2, batch_size=4, time_limit_s=100.0, device="cpu")
    tr = Trainer(model, cfg, _split(16), _split(8, seed=1), None, seed=0)
    assert isinstance(tr.sched, torch.optim.lr_scheduler.LambdaLR)
    total = tr.steps_per_epoch * cfg.epochs
    factor = tr._timed_cosine(total)
    now = time.perf_counter()
    for elapsed, want in ((0.0, 1.0), (50.0, 0.51), (75.0, 0.02 + 0.98 * 0.5 * (1 + np.cos(0.75 * np.pi))),
                          (250.0, 0.02)):
        tr.started = now - elapsed
        assert factor(0) == pytest.approx(want, abs=2e-3), elapsed
    tr.started = time.perf_counter()
    assert factor(total) == pytest.approx(0.02) and factor(total // 2) == pytest.approx(0.51, abs=1e-3)
    plain = Trainer(model, TrainConfig(epochs=3, device="cpu"), _split(16), _split(8, seed=1), None, seed=0)
    assert isinstance(plain.sched, torch.optim.lr_scheduler.CosineAnnealingLR)      # no limit: by steps


def test_presets_resolve_as_documented():
    demo = profiles.resolve("demo")
    assert demo.time_budget_s == 300 and demo.hpo["joint"] and demo.hpo["recipes"] and demo.retrain["adopt"]
    assert "spaces" not in demo.hpo and demo.hpo["max_train_seqs"] is None and demo.hpo["train_fixed"] == {}
    assert profiles.resolve("demo", time_budget="20m").time_budget_s == 1200
    smoke = profiles.resolve("smoke")
    assert smoke.time_budget_s is None and not smoke.hpo["joint"] and "spaces" in smoke.hpo
    full = profiles.resolve("full")
    assert not full.hpo["joint"] and profiles.resolve("full", time_budget="2h").hpo["joint"]
    with pytest.raises(UserError, match="time-budget"):
        profiles.resolve("demo", time_budget="soon")


def test_a_joint_study_starts_with_the_plain_default_and_keeps_only_it_from_pruning():
    from lobsweep.search_spaces import sweep_space
    from lobsweep.tuning.recipe_points import recipe_values, with_recipes
    fams = ["gru", "gru_attention", "lstm", "ssm", "transformer"]
    meta = {"name": "j", "families": fams, "joint": True}
    with_recipes(meta, {f: sweep_space(f) for f in fams})
    order = [p["recipe"] for p in meta["recipe_points"]]
    assert order[0] == "plain-gru"
    assert [p["family"] for p in meta["recipe_points"][:5]] == fams          # one recipe per family first
    assert set(order[1:6]) == {f"default-{f}" for f in fams}                # every family's default next
    assert set(order[6:]) == {"organiser-baseline", "vanilla-gru-3x64", "pearson-gru-4x128"}
    kept = recipe_values(meta, None)
    assert len(kept) == 1 and kept[0]["family"] == "gru"
    per_family = {"name": "p", "families": fams, "joint": False}
    with_recipes(per_family, {f: sweep_space(f) for f in fams})
    assert len(recipe_values(per_family, "gru")) == 5                     # per family: every recipe kept


def test_a_trial_cut_before_its_report_is_named_by_the_epochs_its_bundle_holds(tmp_path):
    """The budget can stop a trial after it finished an epoch (and wrote its bundle) but before
    Ray recorded that epoch's report: the record counts the bundle's epochs, not Ray's."""
    from types import SimpleNamespace
    from lobsweep.tuning.experiment import trial_records
    bundles = tmp_path / "bundles"
    path = _bundle(str(bundles), "t1")
    spec = json.load(open(os.path.join(path, "spec.json")))
    from lobsweep.training.bundle import FORMAT
    json.dump({**spec, "format": FORMAT, "history": [{"epoch": 1}, {"epoch": 2}]},
              open(os.path.join(path, "spec.json"), "w"))
    cut = SimpleNamespace(metrics={"trial_id": "t1", "trial_status": "running", "epoch": 0}, error=None,
                          config={}, path=str(tmp_path / "t1"))
    pruned = SimpleNamespace(metrics={"trial_id": "t2", "trial_status": "running", "epoch": 1}, error=None,
                             config={}, path=str(tmp_path / "t2"))
    a, b = trial_records([cut, pruned], bundles_dir=str(bundles))
    assert (a["status"], a["epochs"], a["bundle"]) == ("stopped_at_epoch_2", 2, path)
    assert (b["status"], b["epochs"], b["bundle"]) == ("pruned_at_epoch_1", 1, None)   # no bundle: ASHA's cut
