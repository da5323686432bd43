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


# lob-sweep's starting point for this family: recipe ``default-transformer`` (search_spaces/recipes.py adds
# the training options every default shares, DEFAULT_TRAIN, and z-normalised raw inputs).
DEFAULT = {
    "about": "lob-sweep's windowed transformer default: 3 layers of 64, 64-step windows (190-step field)",
    "model": {"hidden": 64, "layers": 3, "window": 64, "heads": 4,
              "mlp_ratio": 4, "norm": "layer", "head": "mlp", "head_hidden": 64},
    "train": {"lr": 0.001},
}

# The ``smoke`` profile's space (flows/profiles.py): the whole chain in seconds.
SMOKE = {
    "hidden": {"type": "choice", "values": [16, 32]},
    "layers": {"type": "choice", "values": [1, 2]},
    "heads": {"type": "choice", "values": [2]},
    "window": {"type": "choice", "values": [16, 32]},
    "mlp_ratio": {"type": "choice", "values": [2]},
    "head_hidden": {"type": "choice", "values": [16]},
}
