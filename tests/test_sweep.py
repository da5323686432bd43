"""The sweep driver: ASHA really prunes, NaN trials fail alone, resume after SIGKILL, budgets,
a multi-node cluster with fractional logical GPUs, and MLflow runs that lose nothing.

These sweeps run with ``recipes=False``: they test the driver on tiny trials, and the
full-size recipes (enqueued by default) are tested in test_sweep_recipes.py.

Slow tests share tiny synthetic data (24 fit / 12 valid sequences) and a tiny
GRU space; they share one local Ray session where they can (Ray takes 5-20 s
to start). The resume test runs its sweeps in subprocesses of their own, and
the cluster test, last, builds a two-node ``ray.cluster_utils.Cluster``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import torch

from lobsweep.cli import main
from lobsweep.errors import UserError
from lobsweep.tuning.experiment import complete_point
from lobsweep.tuning.leaderboard import VIEW_KEY_PREFIX, load_leaderboard, set_leaderboard_view
from lobsweep.tuning.ray_setup import parse_resources
from lobsweep.tuning.sweep import family_budget

TINY_TRAIN = {"crop_len": {"type": "choice", "values": [256]}, "batch_size": {"type": "choice", "values": [8]},
              "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}
TINY = {"model": {"hidden": {"type": "int", "low": 8, "high": 32, "log": True},
                  "layers": {"type": "int", "low": 1, "high": 2}}, "train": TINY_TRAIN}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from lobsweep.data.synth import write_dataset
    d = tmp_path_factory.mktemp("sweepdata")
    write_dataset(d, n_train=24, n_valid=12, seq_len=1000, seed=0)
    return str(d)


def _oracle_report_mean(data_dir: str) -> float:
    """The oracle's official score on the report sequences' scored rows, from the files themselves."""
    import pandas as pd
    from lobsweep.data.metric import score
    from lobsweep.data.splits import split_roles
    valid = pd.read_parquet(os.path.join(data_dir, "valid.parquet"), columns=["seq_ix", "step_in_seq",
                                                                              "need_prediction", "t0", "t1"])
    oracle = pd.read_parquet(os.path.join(data_dir, "oracle_valid.parquet"))
    rows = valid.merge(oracle, on=["seq_ix", "step_in_seq"], suffixes=("", "_oracle"))
    seqs = rows["seq_ix"].unique()
    _, report = split_roles(seqs)
    rows = rows[rows["need_prediction"] & rows["seq_ix"].isin(seqs[report])]
    return score(rows[["t0", "t1"]].to_numpy(), rows[["t0_oracle", "t1_oracle"]].to_numpy())["mean"]


# ---------------------------------------------------------------- fast: arguments, helpers
@pytest.fixture
def no_ray(monkeypatch):
    """Any attempt to start or join Ray fails the test."""
    import ray

    def refuse(*a, **k):
        raise AssertionError("Ray was started before the arguments were checked")
    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize("argv, message", [
    (["--families", "gru,nope"], "unknown model family 'nope'"),
    (["--families", "gru", "--resources", "cpu=1,tpu=1"], "unknown resource 'tpu'"),
    (["--families", "gru", "--resources", "cpu=one"], "cpu='one' is not a number"),
    (["--families", "gru", "--time-budget", "-5"], "--time-budget must be > 0"),
    (["--families", "gru", "--grace-period", "9", "--max-epochs", "4"], "--grace-period must be in [1, max"),
])
def test_bad_sweep_arguments_fail_in_one_line_before_ray(argv, message, data_dir, tmp_path, capsys, no_ray):
    rc = main(["sweep", "--data", data_dir, "--run-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "sweeps")


def test_missing_data_and_unknown_resume_fail_in_one_line(tmp_path, capsys, no_ray):
    assert main(["sweep", "--data", str(tmp_path / "none"), "--families", "gru", "--run-dir", str(tmp_path)]) == 2
    assert "no train.parquet" in capsys.readouterr().err
    assert main(["sweep", "--resume", "ghost", "--run-dir", str(tmp_path)]) == 2
    assert "no sweep named 'ghost'" in capsys.readouterr().err
    assert main(["leaderboard", "ghost", "--run-dir", str(tmp_path)]) == 2


def test_resources_parse_fractional_gpus_and_reject_nonsense():
    assert parse_resources("cpu=0.5,gpu=0.25") == {"cpu": 0.5, "gpu": 0.25}
    assert parse_resources(None) == {"cpu": 1.0, "gpu": 0.0}
    for bad in ("cpu=0", "gpu=-1", "cpu=1,gpu=1.5", "cpu", "cpu=nan"):
        with pytest.raises(UserError):
            parse_resources(bad)


def test_time_budget_is_shared_out_and_unused_time_passes_on():
    now = time.time()
    assert family_budget(None, now, 3) is None
    assert family_budget(90, now, 3) == pytest.approx(30, abs=0.5)
    assert family_budget(90, now - 30, 2) == pytest.approx(30, abs=0.5)    # first family used its 30 s
    assert family_budget(90, now - 10, 2) == pytest.approx(40, abs=0.5)    # it used 10: 20 s carried over


def test_points_to_evaluate_are_completed_inside_the_space():
    space = {"a": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
             "b": {"type": "int", "low": 2, "high": 6}, "c": {"type": "choice", "values": ["x", "y"]}}
    p = complete_point({"c": "y"}, space)
    assert p == {"a": pytest.approx(1e-3), "b": 4, "c": "y"}


def test_leaderboard_view_tag_is_the_json_the_mlflow_ui_reads(tmp_path):
    """Pins the share-key format against the installed UI bundle (see TOOLING-FACTS, Runs table)."""
    import mlflow
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("hpo")
    key = set_leaderboard_view(exp, metric="final_tune_mean", tracking_uri=uri)
    state = json.loads(client.get_experiment(exp).tags[VIEW_KEY_PREFIX + key])
    assert state["orderByKey"] == "metrics.`final_tune_mean`" and state["orderByAsc"] is False
    assert "metrics.`report_mean`" in state["selectedColumns"]            # report shown beside, not sorted on
    with pytest.raises(UserError, match="never by the report"):
        set_leaderboard_view(exp, metric="report_mean", tracking_uri=uri)
    ui = glob.glob(os.path.join(os.path.dirname(mlflow.__file__), "server/js/build/static/js/*.js"))
    text = "".join(open(f, errors="ignore").read() for f in ui)
    for needle in ("mlflow.sharedViewState.", "viewStateShareKey", "orderByKey", "selectedColumns"):
        assert needle in text, needle


def test_stage_leaderboard_ranks_by_tune_and_shows_report(tmp_path):
    """`lobsweep leaderboard --stage` orders by the tune score; report is a column, never the key."""
    import mlflow
    from lobsweep import tracking as trk
    run_dir = str(tmp_path)
    exp = trk.ensure_experiment("retrain", None, run_dir)
    runs = {"a": (0.30, 0.10), "b": (0.10, 0.40), "c": (0.20, 0.20), "no-tune": (None, 0.50)}   # (tune, report)
    for name, (tune, report) in runs.items():
        with mlflow.start_run(experiment_id=exp, run_name=name):
            mlflow.log_metrics({"report_mean": report, **({} if tune is None else {"tune_mean": tune})})
    rows = trk.stage_leaderboard("retrain", run_dir_=run_dir)
    assert [r["run"] for r in rows] == ["a", "c", "b", "no-tune"]
    assert [r["report_mean"] for r in rows] == [0.10, 0.20, 0.40, 0.50]


# ---------------------------------------------------------------- slow: real sweeps
def _child_script(data_dir: str, run_dir: str, resume: bool) -> str:
    return textwrap.dedent(f"""
        from lobsweep.tuning import run_sweep
        space = {{"gru": {TINY!r}}}
        run_sweep(None if {resume} else {data_dir!r}, None if {resume} else ["gru"], name="r", resume={resume},
                  run_dir={run_dir!r}, num_samples=6, max_epochs=4, grace_period=4, spaces=space,
                  max_concurrent=2, local_cpus=2, seed=3, recipes=False)
    """)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def short_tmp():
    """A short private dir under /tmp (Ray's socket paths must stay under 107 bytes)."""
    d = tempfile.mkdtemp(prefix="lst-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
def test_resume_after_sigkill_loses_no_finished_trial_and_reruns_none(data_dir, tmp_path, short_tmp, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", short_tmp)              # the killed driver's Ray files land here
    run_dir = str(tmp_path / "runs")
    sdir = os.path.join(run_dir, "sweeps", "r")
    first = subprocess.Popen([sys.executable, "-c", _child_script(data_dir, run_dir, False)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while first.poll() is None and time.time() < deadline and _n_terminated(f"{sdir}/ray/gru") < 2:
            time.sleep(0.3)
        os.kill(first.pid, signal.SIGKILL)                   # the driver only, mid-sweep
        first.wait()
    finally:
        _kill_group(first.pid)                               # what the dead driver's Ray left behind
    known = _ray_trial_states(f"{sdir}/ray/gru")            # what Ray had recorded when the driver died
    finished = {tid: os.stat(f"{sdir}/bundles/{tid}/spec.json").st_mtime_ns
                for tid, status in known.items() if status == "TERMINATED"}
    assert 2 <= len(finished) < 6                            # killed after two trials ended, before the sixth
    assert not os.path.exists(f"{sdir}/leaderboard.json")

    second = subprocess.run([sys.executable, "-c", _child_script(data_dir, run_dir, True)],
                            capture_output=True, text=True, start_new_session=True, timeout=400)
    assert second.returncode == 0, second.stderr[-2000:]
    records = json.load(open(f"{sdir}/families/gru.json"))
    ids = [r["trial_id"] for r in records]
    assert len(ids) == len(set(ids)) == 6                     # Optuna produced only the missing trials
    assert set(known) <= set(ids)                             # no trial Ray knew of was lost
    assert [(r["status"], r["epochs"]) for r in records] == [("completed", 4)] * 6, records
    for tid, mtime in finished.items():                       # finished trials were not trained again
        assert os.stat(f"{sdir}/bundles/{tid}/spec.json").st_mtime_ns == mtime
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    exp = client.get_experiment_by_name("hpo").experiment_id
    runs = [r for r in client.search_runs([exp], filter_string="tags.sweep = 'r'") if "ray_trial_id" in r.data.tags]
    kept = [r for r in runs if r.data.tags["trial_status"] != "abandoned"]
    assert sorted(r.data.tags["ray_trial_id"] for r in kept) == sorted(ids)   # one run per trial
    for r in runs:                                            # started, never recorded by Ray: closed
        if r not in kept:
            assert r.info.status == "KILLED" and r.data.tags["ray_trial_id"] not in ids, r
    for r in kept:
        if r.data.tags["ray_trial_id"] in finished:
            assert len(client.get_metric_history(r.info.run_id, "tune_mean")) == 4


def _n_terminated(experiment_dir: str) -> int:
    """How many trials Ray's newest snapshot records as finished (0 before the first snapshot)."""
    try:
        return sum(s == "TERMINATED" for s in _ray_trial_states(experiment_dir).values())
    except (IndexError, ValueError, OSError):      # no snapshot yet, or one being written
        return 0


def _ray_trial_states(experiment_dir: str) -> dict:
    """trial id -> status in the newest experiment-state snapshot Ray wrote."""
    path = sorted(glob.glob(os.path.join(experiment_dir, "experiment_state-*.json")))[-1]
    trials = (json.loads(t[0]) for t in json.load(open(path))["trial_data"])
    return {t["trial_id"]: t["status"] for t in trials}


@pytest.fixture(scope="module")
def ray_local():
    """One private local Ray for the in-process sweeps (4 logical CPUs on this 2-core box)."""
    from lobsweep.tuning.ray_setup import ray_session
    with ray_session(num_cpus=4) as ray:
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        yield ray


@pytest.mark.slow
def test_asha_prunes_nan_trial_fails_alone_and_mlflow_loses_nothing(ray_local, data_dir, tmp_path):
    from mlflow.tracking import MlflowClient
    from lobsweep.training.bundle import load_bundle
    from lobsweep.tuning import run_sweep
    run_dir, max_t = str(tmp_path / "runs"), 4
    out = run_sweep(data_dir, ["gru"], name="asha", run_dir=run_dir, num_samples=8, max_epochs=max_t,
                    grace_period=1, reduction_factor=3, spaces={"gru": TINY}, max_concurrent=4, seed=1,
                    points_to_evaluate=[{"train.lr": 1e6}], recipes=False)
    recs = out["records"]
    assert len(recs) == 8
    by_status = {s: [r for r in recs if r["status"].startswith(s)] for s in ("completed", "pruned", "failed")}
    assert len(by_status["failed"]) == 1 and by_status["failed"][0]["config"]["train.lr"] == 1e6
    assert by_status["pruned"], "ASHA stopped no trial early"
    assert all(r["epochs"] < max_t and r["status"] == f"pruned_at_epoch_{r['epochs']}" for r in by_status["pruned"])
    assert len(by_status["completed"]) >= 1 and all(r["epochs"] == max_t for r in by_status["completed"])
    assert sorted(os.listdir(f"{out['sweep_dir']}/bundles")) == sorted(r["trial_id"] for r in by_status["completed"])

    board = load_leaderboard(out["sweep_dir"])
    entries = board["families"]["gru"]
    assert 1 <= len(entries) <= 3 and board["counts"]["gru"]["total"] == 8
    assert [e["tune_score"] for e in entries] == sorted((e["tune_score"] for e in entries), reverse=True)
    best_completed = max(r["metrics"]["final_tune_mean"] for r in by_status["completed"])
    assert entries[0]["tune_score"] == pytest.approx(best_completed)
    for e in entries:
        b = load_bundle(e["bundle"])
        assert b.spec["metrics"]["report_mean"] == pytest.approx(e["report_score"])
        assert e["hparams"]["hidden"] == b.spec["config"]["hidden"]
        assert e["fraction_of_oracle"] == pytest.approx(e["report_score"] / _oracle_report_mean(data_dir))
    assert "gru" in out["table"] and f"{entries[0]['tune_score']:.4f}" in out["table"]

    client = MlflowClient(out["mlflow"]["tracking_uri"])
    parent = out["mlflow"]["parent_run_id"]
    children = client.search_runs([out["mlflow"]["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 8
    by_trial = {r["trial_id"]: r for r in recs}
    for run in children:
        rec = by_trial[run.data.tags["ray_trial_id"]]
        assert run.data.tags["trial_status"] == rec["status"] and run.info.status != "RUNNING"
        points = client.get_metric_history(run.info.run_id, "tune_mean")
        # every epoch a trial reported is one metric point; a diverged epoch has no score to log
        assert len(points) == rec["epochs"] - (rec["status"] == "failed"), rec["trial_id"]
        assert sorted(p.step for p in points) == list(range(1, len(points) + 1))
        if rec["status"] == "completed":
            assert {"report_mean", "final_tune_mean", "params_count", "train_seconds"} <= set(run.data.metrics)
            if "fraction_of_oracle" in rec["metrics"]:
                assert run.data.metrics["fraction_of_oracle"] == pytest.approx(rec["metrics"]["fraction_of_oracle"])
    assert "winning_bundle" in [a.path for a in client.list_artifacts(parent)]
    assert client.get_run(parent).data.tags["winner"] == board["overall"][0]["trial_id"]


@pytest.mark.slow
def test_time_budget_stops_cleanly_and_keeps_finished_trials(ray_local, data_dir, tmp_path):
    """A joint sweep (the family is a searched dimension) cut short by its time budget."""
    from mlflow.tracking import MlflowClient
    from lobsweep.tuning import run_sweep
    budget = 45.0
    out = run_sweep(data_dir, ["gru", "lstm"], name="budget", run_dir=str(tmp_path / "runs"), joint=True,
                    num_samples=1000, max_epochs=2, grace_period=2, time_budget_s=budget, max_concurrent=4,
                    spaces={"gru": TINY, "lstm": TINY}, recipes=False)
    recs = out["records"]
    assert out["budget_exhausted"]
    # every trial Ray started has its record (none lost at the cut), and no epoch started past the deadline:
    # the overrun is the last epochs in flight plus Ray's teardown
    trial_dirs = {d for d in os.listdir(os.path.join(out["sweep_dir"], "ray", "joint"))
                  if os.path.isdir(os.path.join(out["sweep_dir"], "ray", "joint", d))}
    assert trial_dirs == {r["trial_id"] for r in recs} and len(recs) >= 4, (trial_dirs, len(recs))
    assert out["seconds"] < budget + 30
    assert {r["family"] for r in recs} <= {"gru", "lstm"}
    done = [r for r in recs if r["status"] == "completed" or r["status"].startswith("stopped_at_epoch_")]
    assert done, "no trial finished inside the budget"
    assert all(r in done or r["status"].startswith("pruned") for r in recs)
    for r in done:
        assert os.path.exists(os.path.join(r["bundle"], "spec.json"))
    for r in recs:                      # a trial pruned by ASHA lost on merit: no bundle
        if r["status"].startswith("pruned"):
            assert r["bundle"] is None and not os.path.exists(os.path.join(out["sweep_dir"], "bundles",
                                                                           r["trial_id"], "spec.json"))
    board = load_leaderboard(out["leaderboard"])
    assert {e["trial_id"] for e in board["overall"]} <= {r["trial_id"] for r in done}
    client = MlflowClient(out["mlflow"]["tracking_uri"])
    runs = client.search_runs([out["mlflow"]["experiment_id"]], filter_string="tags.sweep = 'budget'")
    assert all(r.info.status != "RUNNING" for r in runs)


@pytest.mark.slow
def test_budgeted_trials_anneal_by_the_deadline_and_none_is_lost(ray_local, data_dir, tmp_path):
    """Trials far longer than the budget (1000 epochs, no pruning): each one's LR anneals by the
    experiment's deadline, and each ends with a bundle of its best weights, on the leaderboard."""
    from lobsweep.tuning import run_sweep
    from lobsweep.training.bundle import read_spec
    budget = 30.0
    space = {"model": {"hidden": {"type": "choice", "values": [48]}, "layers": {"type": "choice", "values": [2]}},
             "train": {"lr": {"type": "float", "low": 4e-3, "high": 5e-3}, "schedule": {"type": "choice",
                                                                                       "values": ["cosine"]}}}
    out = run_sweep(data_dir, ["gru"], name="anneal", run_dir=str(tmp_path / "runs"), num_samples=2,
                    max_epochs=1000, grace_period=1000, time_budget_s=budget, max_concurrent=2,
                    spaces={"gru": space}, recipes=False, train_fixed={"patience": 1000}, track=False)
    recs = out["records"]
    assert len(recs) == 2 and out["seconds"] < budget + 30      # one epoch in flight at the deadline, then teardown
    board = load_leaderboard(out["leaderboard"])
    assert {e["trial_id"] for e in board["overall"]} == {r["trial_id"] for r in recs}
    for r in recs:
        assert r["status"] == "completed" or r["status"].startswith("stopped_at_epoch_"), r["status"]
        assert 2 <= r["epochs"] < 1000                                         # cut by the budget, not the epochs
        spec = read_spec(r["bundle"])
        hist, first_lr = spec["history"], float(spec["train_config"]["lr"])
        assert hist[-1]["lr"] < 0.35 * first_lr, [h["lr"] for h in hist]     # annealed by time, not epochs
        assert hist[0]["lr"] > 0.7 * first_lr


@pytest.mark.slow
def test_a_tight_budget_still_gives_every_family_its_recipe_trial(ray_local, data_dir, tmp_path):
    """Joint study, recipes on, one slot, recipe trials far longer than the budget (200 epochs, no
    early stop): each family's first recipe trial anneals by its share (budget / 3 families) and
    ends there with its bundle, so every family has a trained recipe trial on the leaderboard."""
    from lobsweep.training.bundle import read_spec
    from lobsweep.tuning import run_sweep
    budget, fams, searched = 60.0, ["gru", "lstm", "ssm"], {"book": {"levels": 2}}
    out = run_sweep(data_dir, fams, name="cover", run_dir=str(tmp_path / "runs"), joint=True, num_samples=20,
                    max_epochs=200, grace_period=200, time_budget_s=budget, max_concurrent=1, recipes=True,
                    train_fixed={"patience": 1000}, track=False, features_spec=searched)
    recs = sorted(out["records"], key=lambda r: read_spec(r["bundle"])["created"] if r["bundle"] else "~")
    assert out["seconds"] < budget + 30
    trained = [r for r in recs if r["bundle"] and r.get("recipe")]
    assert {r["family"] for r in trained} == set(fams), [(r["family"], r["status"], r.get("recipe")) for r in recs]
    share = budget / len(fams)
    for r in trained[:2]:                      # the first two: ended by their share, annealed by it
        spec = read_spec(r["bundle"])
        hist, lr0 = spec["history"], float(spec["train_config"]["lr"])
        assert 1 <= r["epochs"] < 200 and sum(h["seconds"] for h in hist) <= share + 5, (r["status"], hist)
        assert hist[-1]["lr"] < 0.5 * lr0, [h["lr"] for h in hist]
    for r in trained:                          # the plain default on the plain inputs, the others searched
        want = {} if r["recipe"] == "plain-gru" else searched
        assert read_spec(r["bundle"])["features"]["spec"] == want, (r["recipe"], read_spec(r["bundle"])["features"])
    assert "plain-gru" in {r["recipe"] for r in trained}
    board = load_leaderboard(out["leaderboard"])
    assert {e["family"] for e in board["overall"]} == set(fams)


def _sweep_on(cluster, tmp: str, data_dir: str, tmp_path, live) -> dict:
    """Add the second node, check both listen on loopback, run 4 half-GPU trials, tear down."""
    import ray
    from lobsweep.tuning import run_sweep
    try:
        cluster.add_node(num_cpus=2, num_gpus=1, temp_dir=os.path.join(tmp, "ray"))
        assert cluster.address.startswith("127.0.0.1:"), cluster.address
        space = {**TINY, "train": {**TINY_TRAIN, "crop_len": {"type": "choice", "values": [512]}}}
        return run_sweep(data_dir, ["gru"], name="gpu", run_dir=str(tmp_path / "runs"), num_samples=4,
                         max_epochs=3, grace_period=3, ray_address=cluster.address, resources="cpu=0.5,gpu=0.5",
                         max_concurrent=4, callbacks=[live], spaces={"gru": space}, recipes=False)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_cluster_runs_four_half_gpu_trials_at_once_and_falls_back_to_cpu(data_dir, tmp_path, short_tmp,
                                                                         monkeypatch):
    """Two nodes on 127.0.0.1, one logical GPU each: 4 trials of gpu=0.5 share them concurrently."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.tune import Callback
    from lobsweep.tuning.ray_setup import loopback_only
    ray.shutdown()                                           # the shared local session, if any
    tmp = short_tmp
    os.makedirs(os.path.join(tmp, "ray"))
    monkeypatch.setenv("RAY_TMPDIR", tmp)                    # keeps Ray's cluster-address file private

    class Live(Callback):
        def __init__(self):
            self.events = []

        def on_trial_start(self, iteration, trials, trial, **info):
            self.events.append((time.time(), 1))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.events.append((time.time(), -1))

        def on_trial_error(self, iteration, trials, trial, **info):
            self.events.append((time.time(), -1))

    with loopback_only():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1,
                                                                "temp_dir": os.path.join(tmp, "ray")})
        out = _sweep_on(cluster, tmp, data_dir, tmp_path, live := Live())
    recs = out["records"]
    assert [r["status"] for r in recs] == ["completed"] * 4
    running, most = 0, 0
    for _, step in sorted(live.events):
        running += step
        most = max(most, running)
    assert most == 4
    assert len({r["node_id"] for r in recs}) == 2
    cuda = torch.cuda.is_available()            # a GPU host: the trials must really use the GPU Ray gave them
    for r in recs:
        assert r["gpu_ids"] != "" and r["cuda_visible_devices"] == r["gpu_ids"]
        log = open(os.path.join(r["path"], "stderr")).read()
        assert f"Ray GPU ids [{r['gpu_ids']}]" in log
        if cuda:
            assert r["device"].startswith("cuda"), r["device"]
            assert "CUDA is not available here" not in log
        else:
            assert r["device"] == "cpu" and "CUDA is not available here; training on CPU" in log
