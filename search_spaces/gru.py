"""Search space of the ``gru`` family: keys are ``GRUConfig`` fields."""

SPACE = {
    "hidden": {"type": "int", "low": 32, "high": 256, "log": True},
    "layers": {"type": "int", "low": 1, "high": 4, "log": False},   # 4 beat 2 on the real data
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "log": False},
    "input_proj": {"type": "choice", "values": [True, False]},
    "norm": {"type": "choice", "values": ["none", "layer", "rms"]},
    "head": {"type": "choice", "values": ["linear", "mlp"]},
    "head_hidden": {"type": "choice", "values": [32, 64, 128]},
}
