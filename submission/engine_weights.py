"""Compact weight storage for the submission zip: float32, float16, or int8 per output row.

Vendored verbatim into the zip (package ``lsrt_engine``): numpy only. The packager
``encode``s each member's state_dict into the arrays of its ``m000.npz``; the zip's
engine ``decode``s them back to float32 once, at load, so every step computes in
float32 exactly as it does for a float32 zip (only the stored values differ).

Only weight matrices are compressed: 2-D arrays whose last name part starts with
``weight`` (``head.out.weight``, ``rnn.weight_hh_l0``; PyTorch's [O, I] layout).
Biases, norm gains, conv kernels and other small arrays stay float32: they are a few
KB per member and some (norm gains, decay rates) are the most sensitive.

int8 is symmetric per output row: ``q [O, I] = round(w / s)`` clipped to +-127 with
``s [O] = max_i |w[o, i]| / 127`` (float32, stored as ``<name>.q_scale``), so
``w ~= q * s[:, None]``; the error per value is at most s / 2. A row of zeros keeps
s = 1 (all q = 0). A large outlier in a row raises s and flattens the rest of the
row towards 0: that member then fails the packager's score gate (precision.py).
``int8-ort`` stores the same int8 arrays: the numpy path of a zip whose GRU groups
normally step through onnxruntime graphs (engine_ort_run.py).
"""

from __future__ import annotations

import numpy as np

PRECISIONS = ("float32", "float16", "int8", "int8-ort")     # int8-ort stores int8 (+ onnx graphs)
SCALE_SUFFIX = ".q_scale"
_F16_MAX = float(np.finfo(np.float16).max)


def compressible(name: str, array: np.ndarray) -> bool:
    """True for the arrays a compact mode stores compressed: 2-D weight matrices."""
    return array.ndim == 2 and name.rsplit(".", 1)[-1].startswith("weight") and min(array.shape) > 1


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [O, I] float -> (q int8 [O, I], s float32 [O]) with w ~= q * s[:, None]."""
    w = np.asarray(w, dtype=np.float64)
    s = np.abs(w).max(axis=1) / 127.0
    s = np.where(s > 0, s, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / s[:, None].astype(np.float64)), -127, 127).astype(np.int8)
    return q, s


def encode(arrays: dict, precision: str) -> dict:
    """A state_dict (name -> float array) as the arrays to store for ``precision``.

    Raises ValueError for an unknown precision or a weight that does not fit it
    (non-finite, or beyond float16's range).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    out = {}
    for name, a in arrays.items():
        a = np.asarray(a, dtype=np.float32)
        if precision == "float32" or not compressible(name, a):
            out[name] = a
            continue
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds non-finite values")
        if precision == "float16":
            if np.abs(a).max() > _F16_MAX:
                raise ValueError(f"{name} holds values beyond float16's range ({_F16_MAX:g})")
            out[name] = a.astype(np.float16)
        else:                                   # int8, and int8-ort's numpy fallback
            out[name], out[name + SCALE_SUFFIX] = quantize_rows(a)
    return out


def decode(stored: dict) -> dict:
    """The float32 state_dict of arrays ``encode`` stored (any precision; float32 passes through)."""
    out = {}
    for name, a in stored.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = stored.get(name + SCALE_SUFFIX)
        if scale is not None:
            out[name] = a.astype(np.float32) * np.asarray(scale, dtype=np.float32)[:, None]
        else:
            out[name] = np.asarray(a, dtype=np.float32)
    return out


def round_trip(arrays: dict, precision: str) -> dict:
    """``decode(encode(arrays, precision))``: the float32 weights a zip of that precision computes with."""
    return decode(encode(arrays, precision))
