"""An environment whose path holds a space (a checkout in "My Projects/..." with its .venv inside).

Ray splits its worker command on whitespace, so from such an environment no
trial ever starts. The ``lobsweep`` command re-runs itself through a
whitespace-free link to the same environment; a library caller that starts
Ray from such a path gets one clear error instead of a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lobsweep.data.synth import write_dataset
from lobsweep.envlink import space_free_prefix
from lobsweep.errors import UserError


def spaced_env(tmp_path) -> str:
    """This test run's environment, reached through a path with a space (as a venv inside such a checkout)."""
    home = tmp_path / "My Projects" / "lob sweep"
    home.mkdir(parents=True)
    os.symlink(sys.prefix, home / ".venv")
    return str(home / ".venv")


def test_link_is_whitespace_free_and_reaches_the_same_environment(tmp_path):
    env = spaced_env(tmp_path)
    link = space_free_prefix(env)
    assert " " not in link and os.path.realpath(link) == os.path.realpath(env)
    assert space_free_prefix(env) == link                                   # stable, reused
    assert space_free_prefix(sys.prefix) == sys.prefix or " " in sys.prefix


def test_ray_from_a_spaced_environment_is_one_clear_error_not_a_hang(monkeypatch):
    from lobsweep.tuning.ray_setup import ray_session
    monkeypatch.setattr(sys, "prefix", "/home/me/My Projects/lob sweep/.venv")
    monkeypatch.setattr(sys, "executable", "/home/me/My Projects/lob sweep/.venv/bin/python")
    with pytest.raises(UserError, match="holds whitespace"):
        with ray_session():
            pass


@pytest.mark.slow
def test_a_sweep_runs_from_an_environment_whose_path_has_a_space(tmp_path):
    env = spaced_env(tmp_path)
    data = tmp_path / "data"
    write_dataset(str(data), n_train=8, n_valid=6, seed=4)
    run_dir = tmp_path / "runs"
    r = subprocess.run([os.path.join(env, "bin", "python"), "-P", "-c",
                        "import sys; from lobsweep.cli import main; sys.exit(main())",
                        "sweep", "--data", str(data), "--families", "gru", "--num-samples", "1", "--max-epochs", "1",
                        "--no-recipes", "--no-mlflow", "--run-dir", str(run_dir), "--name", "spaced", "--json"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "LOBSWEEP_ENV_LINKED": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["counts"]["gru"]["completed"] == 1
