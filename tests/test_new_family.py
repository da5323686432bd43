"""A sixth model family is three files: its model, its engine block and its search space.

A copy of the library gets a toy family (an EMA of projected inputs, then a
linear head) written into exactly those three places: a new
``models/toy.py``, a block appended to ``submission/engine_blocks.py``, and a
new ``search_spaces/toy.py``. Nothing else is edited. In that copy the family
is listed, has a tiny config, a sweep space, a default recipe and a smoke
space, trains, and ships in a zip that streams its batch predictions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from lobsweep.flows import identity

MODEL = '''"""Toy family (a test fixture): h_t = decay h_{t-1} + (1 - decay) W x_t, y_t = head(h_t)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .registry import register_model


@dataclass
class ToyConfig:
    n_features: int = 32
    hidden: int = 16
    decay: float = 0.9


@register_model("toy")
class ToyModel(nn.Module):
    Config = ToyConfig
    TINY = dict(hidden=4)

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.n_features, config.hidden)
        self.head = nn.Linear(config.hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, a = self.proj(x), self.config.decay
        h, out = torch.zeros_like(u[:, 0]), []
        for t in range(u.shape[1]):
            h = a * h + (1 - a) * u[:, t]
            out.append(h)
        return self.head(torch.stack(out, 1))
'''

BLOCK = '''


@engine_block("toy")
class ToyGroup:
    """The toy family of tests/test_new_family.py: an EMA of W x, then a linear head."""

    def __init__(self, config: dict, params: list[dict]):
        self.a, self.H = float(config["decay"]), int(config["hidden"])
        self.proj, self.out = stacked_linear(params, "proj"), stacked_linear(params, "head")
        self.M = len(params)
        self.reset()

    def reset(self) -> None:
        self.h = np.zeros((self.M, self.H), dtype=DTYPE)

    def step(self, x: np.ndarray, need: bool) -> np.ndarray | None:
        self.h = self.a * self.h + (1 - self.a) * linear(self.proj, x)
        return linear(self.out, self.h) if need else None

    def weight_bytes(self) -> int:
        return int(self.proj["w"].nbytes + self.out["w"].nbytes)
'''

SPACE = '''"""Search space of the toy family (tests/test_new_family.py)."""

SPACE = {"hidden": {"type": "int", "low": 4, "high": 16, "log": True},
         "decay": {"type": "float", "low": 0.5, "high": 0.99, "log": False}}
DEFAULT = {"about": "the toy default", "model": {"hidden": 8, "decay": 0.8}, "train": {}}
SMOKE = {"hidden": {"type": "choice", "values": [4]}}
'''

CHECK = r'''
import sys
import numpy as np
from lobsweep.data.synth import write_dataset
from lobsweep.flows.profiles import SMOKE_SPACES
from lobsweep.models import create_model, list_models, tiny_hparams
from lobsweep.search_spaces import sweep_space
from lobsweep.search_spaces.recipes import get_recipe, list_recipes
from lobsweep.submission.assemble import offline_predictions
from lobsweep.submission.engine_ops import BLOCKS
from lobsweep.submission.package import package
from lobsweep.submission.scorer import score_zip
from lobsweep.training.member import train_member

data, out = sys.argv[1], sys.argv[2]
assert "toy" in list_models() and "toy" in BLOCKS and "toy" in SMOKE_SPACES, list_models()
assert tiny_hparams("toy") == {"hidden": 4}
assert "model.decay" in sweep_space("toy")
assert list_recipes("toy") == ["default-toy"] and get_recipe("default-toy")["model"]["decay"] == 0.8
write_dataset(data, n_train=8, n_valid=4, seed=0)
b = train_member(data, "toy", out + "/toy", hparams=tiny_hparams("toy"),
                 train_cfg={"epochs": 1, "batch_size": 4, "device": "cpu"}, seed=0)
package([b.path], out + "/toy.zip")
P = score_zip(out + "/toy.zip", data + "/valid.parquet", progress=False)["predictions"]
print("max |zip - batch|", float(np.abs(P - offline_predictions([b.path])).max()))
'''


def test_a_sixth_family_is_its_model_file_engine_block_and_search_space(tmp_path):
    root = tmp_path / "lib"
    for name, src in identity.library_roots().items():
        shutil.copytree(src, root / name.replace(".", os.sep), ignore=shutil.ignore_patterns("__pycache__"))
    lib = root / "lobsweep"
    (lib / "models" / "toy.py").write_text(MODEL)
    with open(lib / "submission" / "engine_blocks.py", "a") as fh:
        fh.write(BLOCK)
    (lib / "search_spaces" / "toy.py").write_text(SPACE)
    env = {**os.environ, "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path / "data"), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    diff = float(res.stdout.strip().rsplit(" ", 1)[1])
    assert diff <= 1e-4, res.stdout
