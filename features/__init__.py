"""Causal feature builders and the FeaturePipeline (numpy + standard library only).

``FeaturePipeline.from_spec(spec).fit(X)`` then ``transform(X)`` in batch or
``init_state()`` / ``update(state, row)`` when streaming; see pipeline.py for
the spec format and the NaN/inf policy, base.py for the builder protocol.
This package is vendored verbatim into submission zips: keep it free of
anything but numpy, the standard library and relative imports.
"""

from .base import (
    EPS,
    RAW_COLUMNS,
    UNBOUNDED,
    FeatureBuilder,
    FeatureSpecError,
    create_builder,
    forward_fill,
    list_builders,
    register_builder,
)
from .pipeline import FeaturePipeline

__all__ = [
    "EPS", "RAW_COLUMNS", "UNBOUNDED", "FeatureBuilder", "FeatureSpecError", "FeaturePipeline",
    "create_builder", "list_builders", "register_builder", "forward_fill",
]
