"""lob-sweep: the modelling loop for online LOB sequence prediction.

The package maps the repository's top-level folders under one namespace:
``lobsweep.data`` -> data/, ``lobsweep.models`` -> models/, and so on
(see ``[tool.setuptools] package-dir`` in pyproject.toml).
"""

__version__ = "0.1.0"

# The subpackages mapped from top-level folders, lowest layer first (the stage cache keys on
# their source: flows/identity.py ``library_digest``; a test checks this against pyproject.toml).
SUBPACKAGES = ("data", "features", "models", "search_spaces", "training", "tuning", "ensemble", "submission",
               "flows")
