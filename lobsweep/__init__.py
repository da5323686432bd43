"""lob-sweep: the modelling loop for online LOB sequence prediction.

The package maps the repository's top-level folders under one namespace:
``lobsweep.data`` -> data/, ``lobsweep.models`` -> models/, and so on
(see ``[tool.setuptools] package-dir`` in pyproject.toml).
"""

__version__ = "0.1.0"
