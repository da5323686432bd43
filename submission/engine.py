"""The fused streaming engine a submission runs: all members, one step per row, numpy only.

Vendored verbatim into the zip as package ``lsrt_engine`` (with engine_ops.py,
engine_rnn.py, engine_blocks.py and engine_weights.py), so it imports numpy and its siblings only;
the caller passes the feature pipelines in (``lsrt_features`` in the zip,
``lobsweep.features`` here).

One step, for a raw row [32]:
  1. each DISTINCT feature pipeline updates once; its float64 output lands in its
     slice of ``x`` [F_total] (float32), the concatenation of all pipelines' outputs;
  2. members with the same family and config form a group whose weights are stacked
     on a leading member axis, so each layer of the whole group is one numpy call
     (engine_rnn.py, engine_blocks.py); a group whose members share one pipeline reads
     its slice of ``x`` directly, otherwise it gathers [M, F] rows from ``x``;
  3. the prediction is sum_m weights[m, j] * y[m, j] * post_scale[j] (float64 [2]).

Why numpy and stacking (bench/inference_latency.py, one core): a step reads every
weight once, so its cost is the weight bytes over the cache bandwidth plus a fixed
count of numpy calls per group, while a loop over per-member torch modules pays
~10 us of dispatch per op per member. 10 default GRUs (6.7 MB float32): fused
0.39-0.45 ms/row, the same numpy unfused 0.74-0.78, the torch loop 1.6-2.2, and
streaming 6.7 MB once (the floor) 0.28-0.33 ms; torch.bmm (~3 ms) and an ONNX graph
of 3-D MatMuls (~2 ms) took slow paths (shared/TOOLING-FACTS.md).

NaN/inf rows: each pipeline repairs non-finite raw values (last finite value of the
column in the sequence, else 0) and clips its normalised output, so ``x`` is always
finite. A non-finite prediction could then only come from non-finite weights; it is
mapped to 0 (+-6 for infinities, the metric's clip) so the contract's (2,) finite
array always comes back.

Manifest (``model/manifest.json`` in the zip): ``{"format": FORMAT, "members":
[{"name", "family", "config", "pipeline": index, "file": "m000.npz", "precision"}],
"pipelines": [pipeline JSON strings], "weights": [[w_t0, w_t1], ...], "post_scale": [s0, s1]}``;
each member's .npz holds its state_dict as float32 arrays, or with its weight matrices
in float16 or int8 (engine_weights.py), decoded to float32 once at load. Precision
``int8-ort`` adds ``"ort": [{"file": "ort_g000.onnx", "members": [indices]}]``: GRU
groups stepped by onnxruntime int8 graphs when it imports (engine_ort_run.py), else
by numpy over the int8 weights; ``engine.paths`` says which, one line per group.
"""

from __future__ import annotations

import json
import os

import numpy as np

from . import engine_blocks, engine_rnn  # noqa: F401  (their @engine_block classes register in BLOCKS)
from .engine_ops import BLOCKS, DTYPE
from .engine_ort_run import attach, externals
from .engine_weights import decode

FORMAT = "lobsweep.submission/1"
VERSION = "numpy-fused/1"       # changes when the engine's cost model changes (cost.py caches by it)


class FusedEngine:
    """All members of a submission, stepped together.

    members:   [{"family": str, "config": dict, "pipeline": int}] in ensemble order
    params:    one state_dict per member (name -> array)
    pipelines: fitted feature pipelines (``init_state``, ``update``, ``n_features_out``)
    weights:   [M, 2] per-target member weights; post_scale: [2]
    fuse:      False gives every member its own group (the unfused reference in benches)
    """

    def __init__(self, members: list[dict], params: list[dict], pipelines: list, weights, post_scale=(1.0, 1.0),
                 fuse: bool = True):
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(members), 2) or len(params) != len(members):
            raise ValueError(f"{len(members)} members need {len(members)} params and weights [M, 2], "
                             f"got {len(params)} and {weights.shape}")
        self.pipelines = list(pipelines)
        widths = [int(p.n_features_out) for p in self.pipelines]
        bounds = np.concatenate([[0], np.cumsum(widths)]).astype(int)
        self.slices = [(int(bounds[i]), int(bounds[i + 1])) for i in range(len(widths))]
        self.x = np.zeros(int(bounds[-1]), DTYPE)
        self.post_scale = np.asarray(post_scale, dtype=np.float64).reshape(2)

        keyed: dict[str, list[int]] = {}
        for i, m in enumerate(members):
            if m["family"] not in BLOCKS:
                raise ValueError(f"model family {m['family']!r} has no streaming engine; known: {sorted(BLOCKS)}")
            n_in, width = int(m["config"]["n_features"]), widths[m["pipeline"]]
            if n_in != width:
                raise ValueError(f"member {i}: model reads {n_in} features, its pipeline makes {width}")
            key = json.dumps([m["family"], m["config"]] + ([] if fuse else [i]), sort_keys=True)
            keyed.setdefault(key, []).append(i)
        self.groups, self.inputs, self.group_weights = [], [], []
        for idx in keyed.values():
            first = members[idx[0]]
            self.groups.append(BLOCKS[first["family"]](first["config"], [params[i] for i in idx]))
            pipes = {members[i]["pipeline"] for i in idx}
            if len(pipes) == 1:
                self.inputs.append(self.slices[pipes.pop()])
            else:
                self.inputs.append(np.stack([np.arange(*self.slices[members[i]["pipeline"]]) for i in idx]))
            self.group_weights.append(weights[idx])
        self.families = [members[idx[0]]["family"] for idx in keyed.values()]
        self.group_members = [list(idx) for idx in keyed.values()]     # member indices of each group
        self.ort_graphs = 0              # groups stepped by onnxruntime graphs (engine_ort_run.attach)
        self.labels = [f"group {i} ({f} x{len(idx)})" for i, (f, idx) in enumerate(zip(self.families,
                                                                                     self.group_members))]
        self.paths = [f"{label}: numpy float32" for label in self.labels]  # what steps each group (engine_ort_run)
        self.reset()

    def reset(self) -> None:
        """Fresh state for a new sequence (pipelines and every member)."""
        self.states = [p.init_state() for p in self.pipelines]
        for g in self.groups:
            g.reset()

    def features(self, row) -> np.ndarray:
        """Update every distinct pipeline with raw row [32]; returns ``x`` [F_total] (float32)."""
        for i, (p, (lo, hi)) in enumerate(zip(self.pipelines, self.slices)):
            self.states[i], self.x[lo:hi] = p.update(self.states[i], row)
        return self.x

    def step_models(self, need: bool = True) -> np.ndarray | None:
        """Step every group on the current ``x``; the combined prediction float64 [2] if ``need``."""
        pred = np.zeros(2) if need else None
        for g, inp, w in zip(self.groups, self.inputs, self.group_weights):
            x = self.x[inp[0]:inp[1]] if isinstance(inp, tuple) else self.x[inp]
            y = g.step(x, need)
            if need:
                pred += (w * y).sum(0)
        if not need:
            return None
        pred *= self.post_scale
        if not np.isfinite(pred).all():
            pred = np.nan_to_num(pred, nan=0.0, posinf=6.0, neginf=-6.0)
        return pred

    def step(self, row, need: bool = True) -> np.ndarray | None:
        """One raw row [32] -> prediction float64 [2] (None when not ``need``; state still advances)."""
        self.features(row)
        return self.step_models(need)

    def weight_bytes(self) -> int:
        """Weight bytes one step reads, summed over groups (the memory-traffic floor)."""
        return int(sum(g.weight_bytes() for g in self.groups))


def load_member_params(path: str) -> dict:
    """A member's float32 state_dict from its .npz (compact weights decoded here, once)."""
    with np.load(path, allow_pickle=False) as z:
        return decode({k: z[k] for k in z.files})


def load_engine(directory: str, pipeline_from_json, fuse: bool = True) -> FusedEngine:
    """The engine described by ``directory/manifest.json`` (the zip's ``model/`` folder)."""
    with open(os.path.join(directory, "manifest.json")) as fh:
        manifest = json.load(fh)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{directory}: manifest format {manifest.get('format')!r} is not {FORMAT!r}")
    members = manifest["members"]
    params = [load_member_params(os.path.join(directory, m["file"])) for m in members]
    pipelines = [pipeline_from_json(s) for s in manifest["pipelines"]]
    engine = FusedEngine(members, params, pipelines, manifest["weights"], manifest["post_scale"], fuse=fuse)
    if manifest.get("ort") and fuse:        # int8-ort: GRU groups' graphs; their int8 matrices are in the .npz
        graphs = {}
        for g in manifest["ort"]:
            with open(os.path.join(directory, g["file"]), "rb") as fh:
                graph = fh.read()
            files = [os.path.join(directory, members[i]["file"]) for i in g["members"]]
            graphs[tuple(g["members"])] = (graph, externals(g.get("external", []), files))
        attach(engine, graphs)
    return engine
