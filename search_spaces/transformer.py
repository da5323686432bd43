"""Search space of the ``transformer`` family: keys are ``TransformerConfig`` fields.

``hidden`` must be divisible by ``heads`` (multiples of 16 against divisors of
16). The receptive field is layers * (window - 1) + 1, so the window range
together with 1-4 layers spans about 16 to 500 steps of history.
"""

SPACE = {
    "hidden": {"type": "choice", "values": [32, 48, 64, 96, 128]},
    "layers": {"type": "int", "low": 1, "high": 4, "log": False},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "log": False},
    "window": {"type": "int", "low": 16, "high": 128, "log": True},
    "heads": {"type": "choice", "values": [1, 2, 4, 8]},
    "mlp_ratio": {"type": "choice", "values": [2, 4]},
    "norm": {"type": "choice", "values": ["layer", "rms"]},
    "head": {"type": "choice", "values": ["linear", "mlp"]},
    "head_hidden": {"type": "choice", "values": [32, 64, 128]},
}
