"""A budgeted search that stops improving stops starting trials and hands its time on (tuning/stagnation.py)."""

from __future__ import annotations

import os

import pytest
from ray.tune.search import Searcher

from lobsweep.errors import UserError
from lobsweep.tuning.stagnation import StagnationStop, read_events, stagnated


@pytest.mark.parametrize("history, now, expected", [
    ([(5.0, 0.30)], 49.0, False),                     # under half of the 100 s budget: never
    ([(5.0, 0.30)], 60.0, True),                      # the best from 5 s, none better in the last 30 s
    ([(5.0, 0.30), (25.0, 0.31)], 60.0, True),        # it rose before the window (the last 30 s)
    ([(5.0, 0.30), (40.0, 0.31)], 70.0, False),       # it rose by 0.01 inside the last 35 s
    ([(5.0, 0.30), (40.0, 0.3005)], 70.0, True),      # by less than min_delta
    ([(45.0, 0.30)], 60.0, False),                    # the first result came inside the window
    ([], 90.0, False),                                # nothing reported yet
])
def test_stagnation_rule(history, now, expected):
    assert stagnated(history, now, budget_s=100.0, after=0.5, min_delta=1e-3) is expected


class _Counter(Searcher):
    """A searcher that suggests {"i": n} for ever."""

    def __init__(self):
        super().__init__(metric="tune_mean", mode="max")
        self.n = 0

    def suggest(self, trial_id):
        self.n += 1
        return {"i": self.n}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass

    def save(self, path):
        with open(path, "w") as fh:
            fh.write(str(self.n))

    def restore(self, path):
        self.n = int(open(path).read())


def test_the_wrapper_finishes_only_after_the_points_and_keeps_finishing(monkeypatch, tmp_path):
    import lobsweep.tuning.stagnation as mod
    clock = [1000.0]
    monkeypatch.setattr(mod.time, "time", lambda: clock[0])
    path = str(tmp_path / "stall.json")
    s = StagnationStop(_Counter(), max_concurrent=2, budget_s=100.0, after=0.5, n_points=3, events_path=path)
    assert s.suggest("a") == {"i": 1}
    s.on_trial_result("a", {"tune_mean": 0.3})
    s.on_trial_complete("a", {"tune_mean": 0.3})
    clock[0] += 80.0                                   # stalled, but two recipe points are still to come
    assert s.suggest("b") == {"i": 2} and s.suggest("c") == {"i": 3}
    s.on_trial_complete("b", {"tune_mean": 0.2})
    assert read_events(path) is None
    assert s.suggest("d") == Searcher.FINISHED         # every point suggested, and stalled since 0:00
    events = read_events(path)
    assert events["best"] == pytest.approx(0.3) and events["stagnated_at_s"] == pytest.approx(80.0)
    s.on_trial_result("c", {"tune_mean": 0.9})         # a running trial may still improve; no new ones start
    assert s.suggest("e") == Searcher.FINISHED


def test_a_rising_search_goes_on_and_a_restored_one_restarts_its_clock(monkeypatch, tmp_path):
    """Both ways Tune stores a search (pickled with the Tuner, and get_state in its experiment
    checkpoint) keep the clock as the time gone, so an hour's pause before a resume is not counted."""
    import pickle
    from ray.tune.search import SearchGenerator
    import lobsweep.tuning.stagnation as mod
    clock = [1000.0]
    monkeypatch.setattr(mod.time, "time", lambda: clock[0])
    s = StagnationStop(_Counter(), max_concurrent=4, budget_s=100.0, after=0.5)
    for k in range(9):                                 # a new best every 10 s
        tid = f"t{k}"
        assert s.suggest(tid) not in (None, Searcher.FINISHED)
        s.on_trial_result(tid, {"tune_mean": 0.1 + 0.01 * k})
        s.on_trial_complete(tid, {"tune_mean": 0.1 + 0.01 * k})
        clock[0] += 10.0
    assert not s.finished
    pickled = pickle.dumps(s)
    SearchGenerator(s).save_to_dir(str(tmp_path), "x")
    clock[0] += 3600.0                                 # restored an hour later: 90 s had gone, not 3690
    back = pickle.loads(pickled)
    assert clock[0] - back.started == pytest.approx(90.0)
    fresh = StagnationStop(_Counter(), max_concurrent=4, budget_s=100.0, after=0.5)
    SearchGenerator(fresh).restore_from_dir(str(tmp_path))
    assert clock[0] - fresh.started == pytest.approx(90.0) and fresh.searcher.n == 9
    assert fresh.suggest("next") not in (None, Searcher.FINISHED)     # the search goes on where it was
    assert len(fresh.history) == 9


@pytest.mark.parametrize("bad", [1.5, -0.1, 1.0])
def test_stagnation_is_checked_as_a_fraction(bad, tmp_path):
    from lobsweep.flows.profiles import resolve
    with pytest.raises(UserError, match="stagnation must be a fraction"):
        resolve("demo", run_dir=str(tmp_path / "runs"), stagnation=bad)
    assert resolve("demo", run_dir=str(tmp_path / "runs"), stagnation=0).hpo["stagnation"] == 0


@pytest.mark.slow
def test_a_stalled_sweep_ends_early_with_every_trial_recorded(tmp_path):
    """Real Ray, real trials: every trial is the same tiny model with the same seed, so the best
    never rises after the first. The sweep stops starting trials soon after half its budget,
    instead of running to the end, and loses none of the trials it started."""
    from lobsweep.data.synth import write_dataset
    from lobsweep.tuning.ray_setup import ray_session
    from lobsweep.tuning.sweep import run_sweep
    data = str(tmp_path / "data")
    write_dataset(data, n_train=16, n_valid=8, seq_len=1000, seed=0)
    same = {"model": {"hidden": {"type": "choice", "values": [8]}, "layers": {"type": "choice", "values": [1]}},
            "train": {"crop_len": {"type": "choice", "values": [256]}, "batch_size": {"type": "choice", "values": [8]},
                      "lr": {"type": "choice", "values": [3e-3]}}}
    budget = 60.0
    with ray_session(num_cpus=2):
        out = run_sweep(data, ["gru"], name="stall", run_dir=str(tmp_path / "runs"), num_samples=1000, max_epochs=1,
                        grace_period=1, time_budget_s=budget, max_concurrent=2, spaces={"gru": same},
                        recipes=False, track=False, stagnation=0.5)
    (group, ev), = out["stagnated"].items()
    assert os.path.isfile(os.path.join(out["sweep_dir"], "families", f"{group}.stagnation.json"))
    assert budget * 0.5 <= ev["stagnated_at_s"] < budget * 0.75, ev
    assert out["seconds"] < budget * 0.75 + 15, out["seconds"]       # the running trials end, then teardown
    assert not out["budget_exhausted"]
    recs = out["records"]
    assert len(recs) >= 3 and all(r["status"] == "completed" for r in recs), [r["status"] for r in recs]
    ray_dir = os.path.join(out["sweep_dir"], "ray", group)
    started = {d for d in os.listdir(ray_dir) if os.path.isdir(os.path.join(ray_dir, d))}
    assert started == {r["trial_id"] for r in recs}
