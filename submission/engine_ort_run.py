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


def session(model_bytes: bytes):
    """An onnxruntime CPU session over serialized ONNX bytes, one thread, sequential (1 vCPU)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


class ORTGroup:
    """One GRU group stepped by an onnxruntime session; state h [L, M, H] float32."""

    def __init__(self, group, model_bytes: bytes):
        self.L, self.M, self.H = group.L, group.M, group.H
        self.nbytes = len(model_bytes)
        self.sess = session(model_bytes)
        self.h = np.zeros((self.L, self.M, self.H), np.float32)

    def reset(self) -> None:
        self.h = np.zeros((self.L, self.M, self.H), np.float32)

    def step(self, x: np.ndarray, need: bool) -> np.ndarray | None:
        y, self.h = self.sess.run(None, {"x": np.asarray(x, np.float32)[None], "h": self.h})
        return y if need else None

    def weight_bytes(self) -> int:
        return self.nbytes            # int8 matrices (+ scales and the float32 head): about a quarter of float32


def attach(engine, graphs: dict) -> list[str]:
    """Swap each group whose member indices key ``graphs`` (tuple -> ONNX bytes) for an ORTGroup.

    Returns one line per group saying which path steps it; without onnxruntime every group
    stays on numpy (the lines say so).
    """
    ort_ok = available()
    lines = []
    for i, (g, idx) in enumerate(zip(engine.groups, engine.group_members)):
        graph = graphs.get(tuple(idx))
        what = f"group {i} ({engine.families[i]} x{len(idx)})"
        if graph is not None and ort_ok:
            engine.groups[i] = ORTGroup(g, graph)
            lines.append(f"{what}: onnxruntime int8")
        elif graph is not None:
            lines.append(f"{what}: numpy float32 over int8 weights (onnxruntime not importable)")
        else:
            lines.append(f"{what}: numpy float32")
    engine.paths, engine.ort_graphs = lines, len(graphs)
    return lines
