"""prefect.yaml against a real Prefect server and process worker (slow: ~3 minutes).

The test starts ``prefect server start`` on a free 127.0.0.1 port with its own
PREFECT_HOME, creates the work pool, deploys everything in prefect.yaml with
``prefect --no-prompt deploy --all`` and starts a worker. Then:

1. ``prefect deployment run ensemble/default --param ... --watch`` on a pool of
   two tiny bundles exits 0 and leaves a submission zip;
2. a new bundle lands in the pool and the import event is emitted, exactly as
   ``lobsweep import-checkpoints`` sends it: the deployment's trigger starts an
   ensemble flow run whose candidates include the new bundle, and that run
   holds only the ensemble, package and score tasks (nothing upstream reran).

Only the processes started here are stopped, by their own process groups.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import torch

from lobsweep.data.synth import write_dataset
from lobsweep.training.member import train_member

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
EVENT, RESOURCE = "lobsweep.checkpoints.imported", "lobsweep.checkpoints"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, signals=(signal.SIGTERM, signal.SIGINT), wait: float = 20.0) -> None:
    """Signal the process group this test started, escalating, then kill it."""
    for sig in signals:
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def prefect(*args, env, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def tiny_bundle(data_dir: str, out: str, seed: int) -> str:
    torch.set_num_threads(1)
    return train_member(data_dir, "gru", out, hparams={"hidden": 8, "layers": 1, "head": "linear"},
                        train_cfg={"epochs": 1, "batch_size": 8, "device": "cpu"}, seed=seed,
                        prepare_kwargs={"max_train_seqs": 8}).path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A Prefect server, the pool, the deployments and a worker; yields (env, api url, run_dir, data_dir)."""
    tmp = tmp_path_factory.mktemp("deploy")
    run_dir, data_dir, logs = str(tmp / "runs"), str(tmp / "data"), tmp / "logs"
    logs.mkdir()
    write_dataset(data_dir, n_train=16, n_valid=12, seed=2)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "LOBSWEEP_RUN_DIR": run_dir, "MLFLOW_TRACKING_URI": f"sqlite:///{run_dir}/mlflow.db",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    started = []
    try:
        started.append(subprocess.Popen([os.path.join(BIN, "prefect"), "server", "start", "--host", "127.0.0.1",
                                         "--port", str(port)], env=env, cwd=str(tmp), start_new_session=True,
                                        stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT))
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert started[0].poll() is None, (logs / "server.log").read_text()[-2000:]
            assert time.time() < deadline, "the Prefect server was not healthy within 180 s"
            time.sleep(1)
        r = prefect("work-pool", "create", "lobsweep", "--type", "process", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        r = prefect("--no-prompt", "deploy", "--all", env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        started.append(subprocess.Popen([os.path.join(BIN, "prefect"), "worker", "start", "--pool", "lobsweep",
                                         "--type", "process"], env=env, cwd=str(tmp), start_new_session=True,
                                        stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT))
        yield env, api, run_dir, data_dir
    finally:
        if len(started) > 1:
            stop(started[1], signals=(signal.SIGINT, signal.SIGTERM))   # a worker ends on SIGINT
        stop(started[0])


def deployment_runs(api: str, name: str) -> list[dict]:
    dep = httpx.get(f"{api}/deployments/name/{name}", timeout=10).json()
    runs = httpx.post(f"{api}/flow_runs/filter", timeout=10,
                      json={"deployments": {"id": {"any_": [dep["id"]]}}, "sort": "START_TIME_DESC"}).json()
    return runs


def task_names(api: str, flow_run_id: str) -> set[str]:
    trs = httpx.post(f"{api}/task_runs/filter", timeout=10,
                     json={"flow_runs": {"id": {"any_": [flow_run_id]}}}).json()
    return {tr["name"].rsplit("-", 1)[0] for tr in trs}


def test_deployments_from_prefect_yaml_run_and_the_import_event_reruns_only_the_ensemble(stack):
    env, api, run_dir, data_dir = stack
    deps = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=10).json()}
    names = {f"{flows[d['flow_id']]}/{d['name']}" for d in deps}
    assert {"full-search/default", "ensemble/default"} <= names

    pool = os.path.join(run_dir, "checkpoints")
    for s in range(2):
        tiny_bundle(data_dir, os.path.join(pool, "rt-test", f"gru-s{s}"), seed=s)
    r = prefect("deployment", "run", "ensemble/default", "--param", f"checkpoints={pool}",
                "--param", f"data_dir={data_dir}", "--param", f"run_dir={run_dir}", "--watch",
                "--watch-timeout", "240", env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    zips = glob.glob(os.path.join(run_dir, "submissions", "*", "submission.zip"))
    assert len(zips) == 1
    first = deployment_runs(api, "ensemble/default")
    assert len(first) == 1 and first[0]["state_type"] == "COMPLETED"

    new = tiny_bundle(data_dir, os.path.join(pool, "imported", "gru-elsewhere"), seed=7)
    emit = ("from prefect.events import emit_event; import sys; "
            f"emit_event(event={EVENT!r}, resource={{'prefect.resource.id': {RESOURCE!r}}}, "
            "payload={'path': sys.argv[1], 'data_dir': sys.argv[2]})")
    r = subprocess.run([sys.executable, "-c", emit, pool, data_dir], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    deadline = time.time() + 240
    while True:
        runs = deployment_runs(api, "ensemble/default")
        if len(runs) > 1 and runs[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        assert time.time() < deadline, f"no triggered ensemble run finished within 240 s: {runs[:1]}"
        time.sleep(3)
    triggered = runs[0]
    assert triggered["state_type"] == "COMPLETED", triggered["state"]
    assert triggered["parameters"] == {"checkpoints": pool, "data_dir": data_dir}
    assert task_names(api, triggered["id"]) == {"ensemble", "package", "score"}
    specs = sorted(glob.glob(os.path.join(run_dir, "ensemble", "*", "ensemble.json")), key=os.path.getmtime)
    assert len(specs) == 2
    candidates = json.load(open(specs[-1]))["candidates"]
    assert new in candidates and len(candidates) == 3
    assert len(glob.glob(os.path.join(run_dir, "submissions", "*", "submission.zip"))) == 2
