"""Search space of the ``lstm`` family: keys are ``LSTMConfig`` fields.

Four gates instead of the GRU's three, so the width range stops a little lower
for a comparable parameter budget.
"""

SPACE = {
    "hidden": {"type": "int", "low": 32, "high": 224, "log": True},
    "layers": {"type": "int", "low": 1, "high": 4, "log": False},   # 4 beat 2 on the real data
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "log": False},
    "input_proj": {"type": "choice", "values": [True, False]},
    "norm": {"type": "choice", "values": ["none", "layer", "rms"]},
    "head": {"type": "choice", "values": ["linear", "mlp"]},
    "head_hidden": {"type": "choice", "values": [32, 64, 128]},
}
