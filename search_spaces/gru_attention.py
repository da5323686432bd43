"""Search space of the ``gru_attention`` family: keys are ``GRUAttentionConfig`` fields.

``hidden`` must be divisible by ``heads``: every width listed is a multiple of
16 and every head count divides 16, so any pair is valid.
"""

SPACE = {
    "hidden": {"type": "choice", "values": [32, 48, 64, 96, 128, 192]},
    "layers": {"type": "int", "low": 1, "high": 3, "log": False},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "log": False},
    "input_proj": {"type": "choice", "values": [True, False]},
    "window": {"type": "int", "low": 16, "high": 128, "log": True},
    "heads": {"type": "choice", "values": [1, 2, 4, 8]},
    "norm": {"type": "choice", "values": ["none", "layer", "rms"]},
    "head": {"type": "choice", "values": ["linear", "mlp"]},
    "head_hidden": {"type": "choice", "values": [32, 64, 128]},
}
