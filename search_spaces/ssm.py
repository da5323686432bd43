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
