"""Run GRU groups through prebuilt onnxruntime int8 step graphs (precision ``int8-ort``).

Vendored into the zip (package ``lsrt_engine``): numpy, onnxruntime (imported lazily)
and relative imports only; the container has onnxruntime but not ``onnx``, so the
graphs are built and quantised at package time (engine_ort.py) and travel as
serialized bytes (``model/ort_g000.onnx`` ...), loaded here with
``onnxruntime.InferenceSession(bytes)``: one thread, sequential.

One graph steps one ``GRUGroup`` of M members (L layers, hidden H, F features):

    inputs   x [1, F], h [L, M, H]          outputs   y [M, 2], h_out [L, M, H]

``attach`` swaps the engine's groups that have a graph for ``ORTGroup``s, which keep
the numpy group's interface (``reset``, ``step``, ``weight_bytes``) so FusedEngine's
combine is unchanged. Without onnxruntime the groups stay the numpy ones, over the
int8 weights the zip also stores, decoded to float32 (what ``--precision int8`` runs).
"""

from __future__ import annotations

import numpy as np


def available() -> bool:
    """True when onnxruntime imports here (the container has it; a stripped environment may not)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def session(model_bytes: bytes, externals: dict | None = None):
    """An onnxruntime CPU session over serialized ONNX bytes, one thread, sequential (1 vCPU).

    ``externals``: {initializer name: OrtValue} for the int8 matrices the graph leaves external
    (engine_ort.ship_graph); the caller keeps the OrtValues alive as long as the session.
    """
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if externals:
        opts.add_external_initializers(list(externals), list(externals.values()))
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


class ORTGroup:
    """One GRU group stepped by an onnxruntime session; state h [L, M, H] float32.

    ``externals``: {initializer name: int8 array} the graph leaves external (the members' .npz matrices).
    """

    def __init__(self, group, model_bytes: bytes, externals: dict | None = None):
        import onnxruntime as ort
        self.L, self.M, self.H = group.L, group.M, group.H
        externals = externals or {}
        self.values = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for k, a in externals.items()}
        self.nbytes = len(model_bytes) + sum(a.nbytes for a in externals.values())
        self.sess = session(model_bytes, self.values)
        self.h = np.zeros((self.L, self.M, self.H), np.float32)

    def reset(self) -> None:
        self.h = np.zeros((self.L, self.M, self.H), np.float32)

    def step(self, x: np.ndarray, need: bool) -> np.ndarray | None:
        y, self.h = self.sess.run(None, {"x": np.asarray(x, np.float32)[None], "h": self.h})
        return y if need else None

    def weight_bytes(self) -> int:
        return self.nbytes            # int8 matrices (+ scales and the float32 head): about a quarter of float32


def attach(engine, graphs: dict) -> list[str]:
    """Swap each group whose member indices key ``graphs`` (tuple -> (ONNX bytes, externals)) for an ORTGroup.

    Returns one line per group saying which path steps it; without onnxruntime, or when its
    session cannot be made (an older onnxruntime), a group stays on numpy (the line says why).
    """
    ort_ok = available()
    lines, n = list(engine.paths), 0                 # groups without a graph keep their numpy line
    for i, (g, idx) in enumerate(zip(engine.groups, engine.group_members)):
        graph = graphs.get(tuple(idx))
        if graph is None:
            continue
        n += 1
        what = engine.labels[i]
        if not ort_ok:
            lines[i] = f"{what}: numpy float32 over int8 weights (onnxruntime not importable)"
            continue
        try:
            engine.groups[i] = ORTGroup(g, *graph)
            lines[i] = f"{what}: onnxruntime int8"
        except Exception as exc:     # noqa: BLE001 - any session failure leaves the numpy path, said in the line
            lines[i] = (f"{what}: numpy float32 over int8 weights (onnxruntime session failed: "
                        f"{str(exc).splitlines()[0][:160]})")
    engine.paths, engine.ort_graphs = lines, n       # ort_graphs: groups that ship a graph
    return lines


def externals(refs: list[dict], stored: list) -> dict:
    """{initializer name: int8 [I, O]} for a graph's external ``refs`` ({"name", "member", "param"}, member
    local to the group): ``stored[member][param].T``; ``stored`` holds arrays as stored, or .npz paths."""
    out, cache = {}, {}
    for r in refs:
        src = stored[r["member"]]
        if isinstance(src, str):
            if src not in cache:
                with np.load(src, allow_pickle=False) as z:
                    cache[src] = {k: z[k] for k in z.files}
            src = cache[src]
        out[r["name"]] = np.ascontiguousarray(src[r["param"]].T)
    return out
