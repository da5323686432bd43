"""Ray for sweeps: a private local instance, or the cluster named by an address.

Local runs start ``ray.init(address="local", ...)``: a fresh instance that never
picks up a stale cluster-address file, with no dashboard, and with Ray's
cluster mode off (``loopback_only``) so that every listener stays on
127.0.0.1 (see shared/TOOLING-FACTS.md). With ``--ray-address`` or
``RAY_ADDRESS`` the driver joins that cluster instead and leaves it running.
A Ray session that is already initialised in this process (a test fixture, a
notebook) is used as it is and not shut down.

Per-trial resources are written ``cpu=1,gpu=0.5`` on the command line and
travel as ``{"cpu": 1.0, "gpu": 0.5}``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
import tempfile

from ..errors import UserError

log = logging.getLogger("lobsweep.tuning")

RESOURCE_KEYS = ("cpu", "gpu")


def parse_resources(spec) -> dict:
    """``"cpu=1,gpu=0.5"`` or a dict -> ``{"cpu": 1.0, "gpu": 0.5}`` (UserError on anything else)."""
    if spec is None or spec == "":
        return {"cpu": 1.0, "gpu": 0.0}
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in str(spec).split(","):
            if "=" not in part:
                raise UserError(f"--resources expects key=value pairs like cpu=1,gpu=0.5, got {spec!r}")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    out = {"cpu": 1.0, "gpu": 0.0}
    for k, v in items:
        if k not in RESOURCE_KEYS:
            raise UserError(f"--resources: unknown resource {k!r}; use {' and '.join(RESOURCE_KEYS)} (e.g. cpu=1,gpu=0.5)")
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise UserError(f"--resources: {k}={v!r} is not a number") from None
        if not math.isfinite(x) or x < 0:
            raise UserError(f"--resources: {k} must be a finite number >= 0, got {v}")
        out[k] = x
    if out["cpu"] <= 0:
        raise UserError("--resources: cpu must be > 0 (fractions such as cpu=0.5 are allowed)")
    if out["gpu"] > 1 and not float(out["gpu"]).is_integer():
        raise UserError(f"--resources: gpu above 1 must be a whole number, got {out['gpu']}")
    return out


def tune_resources(resources: dict) -> dict:
    """Our resource dict -> the form ``tune.with_resources`` takes."""
    return {"cpu": float(resources["cpu"]), "gpu": float(resources.get("gpu", 0.0))}


def cluster_address(explicit: str | None = None) -> str | None:
    """The cluster to join: ``--ray-address``, else ``$RAY_ADDRESS``, else None (start a local one)."""
    return explicit or os.environ.get("RAY_ADDRESS") or None


def _short_temp_dir() -> str:
    """A fresh, short Ray temp dir under $RAY_TMPDIR or /tmp.

    Ray puts AF_UNIX sockets under its temp dir and their paths are limited to
    107 bytes, so it never lives inside a user's run folder (which may be
    arbitrarily deep): every stage creates its own folders itself.
    """
    root = os.environ.get("RAY_TMPDIR") or ("/tmp" if os.path.isdir("/tmp") else None)
    return tempfile.mkdtemp(prefix="lsray-", dir=root)


def _keep_logs(tmp: str, log_dir: str | None) -> None:
    """Copy the Ray session's logs into ``log_dir/ray-logs`` (best effort: logs never fail a stage)."""
    if not log_dir:
        return
    src = os.path.join(tmp, "session_latest", "logs")
    if os.path.isdir(src):
        shutil.copytree(src, os.path.join(log_dir, "ray-logs"), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.sock", "*.pid"), ignore_dangling_symlinks=True)


@contextlib.contextmanager
def loopback_only():
    """Keep a local Ray on 127.0.0.1 (head, nodes, workers and this driver).

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when ``ray`` is first
    imported: the environment variable reaches the processes Ray starts, and
    the already-imported constant is switched for this process while the
    block runs (a later join of a remote cluster needs it back).
    """
    import ray._private.ray_constants as rc
    old_env, old_flag = os.environ.get(rc.ENABLE_RAY_CLUSTERS_ENV_VAR), rc.ENABLE_RAY_CLUSTER
    os.environ[rc.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    rc.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        rc.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(rc.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[rc.ENABLE_RAY_CLUSTERS_ENV_VAR] = old_env


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
                log_dir: str | None = None):
    """Yield with Ray initialised; shut down on exit only what was started here.

    ``address``: join that cluster (or ``$RAY_ADDRESS``); otherwise a private
    local instance with ``num_cpus`` / ``num_gpus`` (logical GPUs are allowed
    on a machine without any) in a fresh short temp dir, whose logs are copied
    to ``log_dir`` (a folder of the calling stage) when the session ends.
    """
    import ray
    if ray.is_initialized():
        yield ray
        return
    address = cluster_address(address)
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
        try:
            yield ray
        finally:
            ray.shutdown()
        return
    from ..envlink import needs_link, space_free_prefix
    if needs_link():            # a local instance starts its workers from this environment's paths
        raise UserError(f"Ray cannot start its workers from an environment whose path holds whitespace "
                        f"({sys.prefix}); run this through the `lobsweep` command, or start the process with "
                        f"{space_free_prefix()}/bin/python")
    tmp = _short_temp_dir()
    try:
        with loopback_only():
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                     _temp_dir=tmp, log_to_driver=True, configure_logging=False)
            try:
                yield ray
            finally:
                ray.shutdown()
                try:
                    _keep_logs(tmp, log_dir)
                except OSError as exc:
                    log.warning("could not keep Ray's logs in %s: %s", log_dir, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cluster_capacity() -> dict:
    """Total CPUs and GPUs of the Ray cluster this process is connected to."""
    import ray
    res = ray.cluster_resources()
    return {"cpu": float(res.get("CPU", 0.0)), "gpu": float(res.get("GPU", 0.0))}


def default_concurrency(resources: dict) -> int:
    """How many trials of ``resources`` fit the connected cluster at once (at least 1)."""
    cap = cluster_capacity()
    n = cap["cpu"] / max(resources["cpu"], 1e-9)
    if resources.get("gpu"):
        n = min(n, cap["gpu"] / resources["gpu"])
    return max(1, int(math.floor(n + 1e-9)))


def check_fits(resources: dict) -> None:
    """UserError when one trial asks for more than the cluster has (it would wait forever)."""
    cap = cluster_capacity()
    for k in RESOURCE_KEYS:
        if resources.get(k, 0) > cap[k] + 1e-9:
            raise UserError(f"each trial asks for {k}={resources[k]:g} but the Ray cluster has only {cap[k]:g}; "
                            f"lower --resources or join a bigger cluster with --ray-address")


def trial_placement() -> dict:
    """Inside a trial: the GPU ids Ray assigned, CUDA_VISIBLE_DEVICES and the node id."""
    import ray
    ctx = ray.get_runtime_context()
    return {"gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "node_id": ctx.get_node_id()}
