"""Build onnxruntime step graphs for GRU groups: float32, or int8 dynamic-quantised matrices.

Package time only (not vendored into the zip): it needs the ``onnx`` package, which the
competition container lacks. ``lobsweep package --precision int8-ort`` carries the
quantised graphs' bytes in the zip, where engine_ort_run.py (vendored) runs them;
bench/inference_latency.py also times the float32 graph.

One ``GRUGroup`` of the numpy engine (M members, L layers, hidden H, F features; its
weights already stacked and in_proj folded, engine_rnn.py) becomes one graph run per
step:

    inputs   x [1, F], h [L, M, H]          outputs   y [M, 2], h_out [L, M, H]

Every matrix product is a 2-D MatMul with a constant weight: the first layer's input
weights of all members as one [F, M*3H] (all members read the same x), then one
[H, 3H] per member and layer for the recurrent and deeper input weights, since batched
3-D MatMuls took slow paths in onnxruntime (shared/TOOLING-FACTS.md). The gate
arithmetic runs on [M, 3H] for all members at once. ``quantize=True`` passes the graph
through ``onnxruntime.quantization.quantize_dynamic`` (int8 weights per output
channel, activations quantised per step), leaving the small head in float32.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

from .engine_ort_run import attach
from .engine_rnn import GRUGroup
from .engine_weights import SCALE_SUFFIX

OPSET = 17
IR_VERSION = 8      # what opset 17 needs; onnx's newest IR may be too new for the container's onnxruntime


class _Graph:
    """A tiny builder over onnx.helper: named constants and nodes, unique names."""

    def __init__(self):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}_{self.n}"

    def const(self, array: np.ndarray, stem: str = "c", exact: str | None = None) -> str:
        name = exact or self.name(stem)
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, stem: str | None = None, **attrs):
        outs = [self.name(stem or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, inputs, outs, name=self.name("n_" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def split(self, x: str, sizes: list[int], axis: int) -> list[str]:
        out = self.op("Split", [x, self.const(np.asarray(sizes, np.int64))], n_out=len(sizes), axis=axis)
        return out if len(sizes) > 1 else [out]


def _norm(g: _Graph, p: dict, u: str) -> str:
    """engine_ops.norm over [M, H]."""
    if p["kind"] == "none":
        return u
    if p["kind"] == "layer":
        c = g.op("Sub", [u, g.op("ReduceMean", [u], axes=[-1], keepdims=1)])
        var = g.op("ReduceMean", [g.op("Mul", [c, c])], axes=[-1], keepdims=1)
        x = g.op("Div", [c, g.op("Sqrt", [g.op("Add", [var, g.const(np.float32(1e-5))])])])
        return g.op("Add", [g.op("Mul", [x, g.const(p["g"])]), g.const(p["b"])])
    ms = g.op("ReduceMean", [g.op("Mul", [u, u])], axes=[-1], keepdims=1)
    x = g.op("Div", [u, g.op("Sqrt", [g.op("Add", [ms, g.const(np.float32(1e-6))])])])
    return g.op("Mul", [x, g.const(p["g"])])


def _batched_linear(g: _Graph, p: dict, x: str, M: int) -> str:
    """x [M, I] -> [M, O] through a 3-D MatMul (the small head; kept out of quantisation)."""
    x3 = g.op("Unsqueeze", [x, g.const(np.asarray([1], np.int64))])                   # [M, 1, I]
    wt = g.const(np.ascontiguousarray(p["w"].transpose(0, 2, 1)), "head_w")            # [M, I, O]
    y = g.op("Squeeze", [g.op("MatMul", [x3, wt], stem="head_mm"), g.const(np.asarray([1], np.int64))])
    return g.op("Add", [y, g.const(p["b"])]) if p["b"] is not None else y


def gru_group_model(group: GRUGroup):
    """The ONNX ModelProto of one step of ``group`` (inputs x, h; outputs y, h_out)."""
    from onnx import TensorProto, helper
    if type(group) is not GRUGroup:
        raise ValueError(f"engine_ort runs plain GRU groups only, not {type(group).__name__}")
    L, M, H = group.L, group.M, group.H
    F = group.inp["w"].shape[2]
    g = _Graph()
    w0 = group.inp["w"].reshape(M * 3 * H, F).T                                         # [F, M*3H]
    gi0 = g.op("Add", [g.op("MatMul", ["x", g.const(w0, "w_in")]), g.const(group.inp["b"].reshape(1, -1))])
    gi0 = g.op("Reshape", [gi0, g.const(np.asarray([M, 3 * H], np.int64))])
    hs = g.split("h", [1] * L, axis=0)
    below, outs = None, []
    for k in range(L):
        h_k = g.op("Reshape", [hs[k], g.const(np.asarray([M, H], np.int64))])
        rows = g.split(h_k, [1] * M, axis=0)                                           # M x [1, H]

        def per_member(inputs: list[str], w: np.ndarray, b: np.ndarray, param: str) -> str:
            # constant "m<i>:<param>" = member i's PyTorch [O, I] matrix ``param``, transposed (ship_graph's key)
            mm = [g.op("MatMul", [inputs[m], g.const(np.ascontiguousarray(w[m].T), exact=f"m{m}:{param}")])
                  for m in range(M)]
            return g.op("Add", [g.op("Concat", mm, axis=0) if M > 1 else mm[0], g.const(b)])

        gi = gi0 if k == 0 else per_member(below, group.w_ih[k]["w"], group.w_ih[k]["b"], f"rnn.weight_ih_l{k}")
        gh = per_member(rows, group.w_hh[k]["w"], group.w_hh[k]["b"], f"rnn.weight_hh_l{k}")
        gi_rz, gi_n = g.split(gi, [2 * H, H], axis=1)
        gh_rz, gh_n = g.split(gh, [2 * H, H], axis=1)
        r, z = g.split(g.op("Sigmoid", [g.op("Add", [gi_rz, gh_rz])]), [H, H], axis=1)
        n = g.op("Tanh", [g.op("Add", [gi_n, g.op("Mul", [r, gh_n])])])
        h_new = g.op("Add", [n, g.op("Mul", [z, g.op("Sub", [h_k, n])])])             # [M, H]
        outs.append(g.op("Unsqueeze", [h_new, g.const(np.asarray([0], np.int64))]))
        below = g.split(h_new, [1] * M, axis=0) if k + 1 < L else None
    g.nodes.append(helper.make_node("Concat", outs, ["h_out"], axis=0, name="h_out_concat") if L > 1 else
                   helper.make_node("Identity", outs, ["h_out"], name="h_out_id"))
    u = _norm(g, group.norm, h_new)
    if group.head["fc"] is not None:
        u = g.op("Relu", [_batched_linear(g, group.head["fc"], u, M)])
    y = _batched_linear(g, group.head["out"], u, M)
    g.nodes.append(helper.make_node("Identity", [y], ["y"], name="y_id"))
    graph = helper.make_graph(
        g.nodes, "gru_group_step",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, F]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [L, M, H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, 2]),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [L, M, H])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def model_bytes(model, quantize: bool) -> bytes:
    """The serialized step graph, through ``quantize_dynamic`` when ``quantize`` (int8 weights per output
    channel, activations quantised per step; the head stays float32). Needs ``onnx`` (package time)."""
    import onnx
    if not quantize:
        return model.SerializeToString()
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with tempfile.TemporaryDirectory(prefix="lobsweep-ort-") as d:
        src, dst = os.path.join(d, "f32.onnx"), os.path.join(d, "int8.onnx")
        onnx.save(model, src)
        head = [n.name for n in model.graph.node if any(o.startswith("head_mm") for o in n.output)]
        logging.disable(logging.WARNING)         # its advice to pre-process (shape inference) does not apply here
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=head)
        finally:
            logging.disable(logging.NOTSET)
        with open(dst, "rb") as fh:
            return fh.read()


def group_graphs(engine, quantize: bool = True) -> dict:
    """{member indices (tuple): step-graph bytes} for every group of ``engine`` that a graph can run:
    plain GRU groups whose members read one feature pipeline."""
    return {tuple(idx): model_bytes(gru_group_model(g), quantize)
            for g, idx, inp in zip(engine.groups, engine.group_members, engine.inputs)
            if type(g) is GRUGroup and isinstance(inp, tuple)}


def ship_graph(graph: bytes, stored: list[dict]) -> tuple[bytes, list[dict]]:
    """The quantised ``graph`` of a group without the int8 matrices its members' .npz already hold.

    ``stored``: each member's arrays as the zip stores them (engine_weights.encode, int8). Every
    per-member matrix ``m<i>:<param>`` that quantize_dynamic turned into int8 (zero point 0) becomes
    external data, and its scale the .npz's own ``q_scale``: the zip supplies ``stored[i][param].T``
    at load (engine_ort_run.session), so the graph computes with exactly the int8 weights numpy
    would decode, and the zip holds them once. Returns (bytes, [{"name", "member": i, "param"}]).
    The folded first-layer matrix and the float32 head stay inside the graph (a few % of the bytes).
    """
    import onnx
    from onnx import TensorProto, numpy_helper
    model = onnx.load_from_string(graph)
    inits = {t.name: t for t in model.graph.initializer}
    refs = []
    for name, t in inits.items():
        if not (name.startswith("m") and ":" in name and name.endswith("_quantized")):
            continue
        base = name[:-len("_quantized")]
        member, param = int(base[1:base.index(":")]), base[base.index(":") + 1:]
        q, s = stored[member].get(param), stored[member].get(param + SCALE_SUFFIX)
        zero = inits.get(base + "_zero_point")
        if (q is None or s is None or zero is None or numpy_helper.to_array(zero).any()
                or tuple(numpy_helper.to_array(t).shape) != q.T.shape or q.dtype != np.int8):
            continue                                    # not the npz's layout: keep it inside the graph
        inits[base + "_scale"].CopyFrom(numpy_helper.from_array(np.asarray(s, np.float32), base + "_scale"))
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "lsrt-npz"), ("offset", "0"), ("length", str(q.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        refs.append({"name": name, "member": member, "param": param})
    return model.SerializeToString(), refs


class ORTEngine:
    """A FusedEngine whose GRU groups step through onnxruntime (features and the combine stay numpy).

    The bench's view of both graphs (float32 or int8); what a zip of ``--precision int8-ort`` runs is
    ``assemble.engine_from_bundles(..., precision="int8-ort")``. Same interface as FusedEngine for the
    benches: ``reset``, ``features``, ``step``.
    """

    def __init__(self, engine, quantize: bool = False):
        for inp in engine.inputs:
            if not isinstance(inp, tuple):
                raise ValueError("engine_ort needs every group to read one feature pipeline")
        for g in engine.groups:
            if type(g) is not GRUGroup:
                raise ValueError(f"engine_ort runs plain GRU groups only, not {type(g).__name__}")
        self.engine, self.quantize = engine, quantize
        attach(engine, {idx: (graph, {}) for idx, graph in group_graphs(engine, quantize).items()})

    def reset(self) -> None:
        self.engine.reset()

    def features(self, row) -> np.ndarray:
        return self.engine.features(row)

    def step(self, row, need: bool = True) -> np.ndarray | None:
        return self.engine.step(row, need)
