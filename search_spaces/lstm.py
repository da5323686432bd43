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


# lob-sweep's starting point for this family: recipe ``default-lstm`` (search_spaces/recipes.py adds
# the training options every default shares, DEFAULT_TRAIN, and z-normalised raw inputs).
DEFAULT = {
    "about": "lob-sweep's LSTM default: 3x80 (4 gates: about the 3x96 GRU's size), combo loss, cosine",
    "model": {"hidden": 80, "layers": 3, "input_proj": True, "norm": "none", "head": "linear"},
    "train": {},
}

# The ``smoke`` profile's space (flows/profiles.py): the whole chain in seconds.
SMOKE = {
    "hidden": {"type": "choice", "values": [16, 32]},
    "layers": {"type": "choice", "values": [1]},
    "head_hidden": {"type": "choice", "values": [16]},
}
