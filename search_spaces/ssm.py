"""Search space of the ``ssm`` family: keys are ``SSMConfig`` fields.

``expand * hidden`` must be divisible by ``heads``: every width listed is a
multiple of 16 and every head count divides 16, so any combination is valid.
"""

SPACE = {
    "hidden": {"type": "choice", "values": [32, 48, 64, 96, 128]},
    "layers": {"type": "int", "low": 1, "high": 4, "log": False},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "log": False},
    "d_state": {"type": "int", "low": 4, "high": 32, "log": True},
    "heads": {"type": "choice", "values": [1, 2, 4, 8]},
    "expand": {"type": "choice", "values": [1, 2]},
    "d_conv": {"type": "choice", "values": [2, 3, 4]},
    "norm": {"type": "choice", "values": ["none", "layer", "rms"]},
    "head": {"type": "choice", "values": ["linear", "mlp"]},
    "head_hidden": {"type": "choice", "values": [32, 64, 128]},
}


# lob-sweep's starting point for this family: recipe ``default-ssm`` (search_spaces/recipes.py adds
# the training options every default shares, DEFAULT_TRAIN, and z-normalised raw inputs).
DEFAULT = {
    "about": "lob-sweep's SSM default: 4 layers of 64, d_state 16, 8 heads, combo loss, cosine",
    "model": {"hidden": 64, "layers": 4, "d_state": 16, "expand": 2,
              "d_conv": 4, "heads": 8, "norm": "rms", "head": "linear"},
    "train": {},
}

# The ``smoke`` profile's space (flows/profiles.py): the whole chain in seconds.
SMOKE = {
    "hidden": {"type": "choice", "values": [16, 32]},
    "layers": {"type": "choice", "values": [1, 2]},
    "d_state": {"type": "choice", "values": [4, 8]},
    "heads": {"type": "choice", "values": [2]},
    "head_hidden": {"type": "choice", "values": [16]},
}
