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


# lob-sweep's starting point for this family: recipe ``default-gru_attention`` (search_spaces/recipes.py adds
# the training options every default shares, DEFAULT_TRAIN, and z-normalised raw inputs).
DEFAULT = {
    "about": "lob-sweep's GRU+attention default: 2x64 GRU, 4 heads over a 64-step window, combo loss",
    "model": {"hidden": 64, "layers": 2, "window": 64, "heads": 4,
              "norm": "layer", "head": "mlp", "head_hidden": 64},
    "train": {},
}

# The ``smoke`` profile's space (flows/profiles.py): the whole chain in seconds.
SMOKE = {
    "hidden": {"type": "choice", "values": [16, 32]},
    "layers": {"type": "choice", "values": [1]},
    "heads": {"type": "choice", "values": [2]},
    "window": {"type": "choice", "values": [16, 32]},
    "head_hidden": {"type": "choice", "values": [16]},
}
