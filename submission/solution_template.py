"""lob-sweep submission: a fused numpy ensemble of streaming sequence models.

Written into the zip as ``solution.py`` by lobsweep's packager, beside
``lsrt_engine/`` (the engine), ``lsrt_features/`` (the feature pipelines) and
``model/`` (manifest.json and one .npz per member: float32 arrays, or float16 /
int8 weight matrices decoded to float32 at load; with ``int8-ort``, also
onnxruntime int8 graphs of the GRU groups). It imports numpy and those two
folders only, plus onnxruntime for an int8-ort zip (numpy alone if it cannot).

Contract: ``PredictionModel().predict(data_point)`` gets the rows in file order.
State resets when ``seq_ix`` changes; every row advances the state, warm-up rows
(``need_prediction`` False) return None, the others a finite float64 array of shape
(2,). Non-finite raw values are replaced by the last finite value of their column in
the sequence (0 before any), see lsrt_engine/engine.py.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from lsrt_engine import load_engine  # noqa: E402
from lsrt_features import FeaturePipeline  # noqa: E402


class PredictionModel:
    def __init__(self):
        self.engine = load_engine(os.path.join(_HERE, "model"), FeaturePipeline.from_json)
        self.seq_ix = None
        if self.engine.ort_graphs:           # int8-ort: say which path steps each group (onnxruntime or numpy)
            print("lsrt_engine: " + "; ".join(self.engine.paths), file=sys.stderr, flush=True)

    def predict(self, data_point):
        if data_point.seq_ix != self.seq_ix:
            self.seq_ix = data_point.seq_ix
            self.engine.reset()
        need = bool(data_point.need_prediction)
        out = self.engine.step(data_point.state, need)
        return out if need else None
