"""The feature search space: plain data over which builders are on and their key parameters.

Dimensions use the format of search_spaces/common.py (``{"type": "choice",
"values": [...]}``); ``search_spaces.adapter`` turns them into Optuna or Ray
Tune objects. Keys are ``"<group>"`` (is the builder on?) and
``"<group>.<parameter>"`` (a parameter of that builder, see features/), plus
the final stage's ``"normalize.method"`` (global z-scores, per-sequence
warm-up statistics, or raw values), ``"normalize.robust"`` and
``"normalize.drop_raw"`` (derived columns only; ignored when no group is on,
since nothing would be left). ``spec_from_config`` maps a sampled config to a
``FeaturePipeline`` spec::

    {"book": true, "book.levels": 1, "temporal": true, "temporal.inputs": ["mid", "imb0"], ...}
    -> {"book": {"levels": 1, ...}, "temporal": {"inputs": ["mid", "imb0"], ...}, "normalize": {...}}

Columns that temporal inputs and interaction pairs name come from small
menus. A menu entry made by a builder that is off is dropped, so a group's
switch always means what it says (book off: no book-derived column anywhere);
temporal inputs left empty fall back to the best quotes ``p0``, ``p6``, and
interactions left without a pair are off. Only level-0 book columns appear in
the menus, so they exist for every ``book.levels``.
"""

from __future__ import annotations

import copy

import numpy as np

from ..search_spaces.adapter import decode_value

GROUPS = ("book", "trade", "temporal", "interactions")

# Derived column -> the builder that makes it; raw columns (p0, v0, ...) need none.
MADE_BY = {"mid": "book", "microprice": "book", "spread0": "book", "imb0": "book", "log_bid_depth": "book",
           "trade_signed": "trade", "trade_count": "trade", "vwap_dist": "trade"}
TEMPORAL_FALLBACK = ["p0", "p6"]          # best bid and ask: always present

SPACE = {
    "book": {"type": "choice", "values": [True, False]},
    "book.levels": {"type": "choice", "values": [1, 3, 6]},
    "book.log_volumes": {"type": "choice", "values": [True, False]},
    "trade": {"type": "choice", "values": [True, False]},
    # None: no trade_intensity column; otherwise the half-life of its EMA in steps
    "trade.intensity_halflife": {"type": "choice", "values": [None, 10, 50]},
    "temporal": {"type": "choice", "values": [True, False]},
    "temporal.inputs": {"type": "choice", "values": [
        ["mid", "microprice"], ["mid", "imb0"], ["mid", "imb0", "trade_signed"],
        ["mid", "imb0", "trade_signed", "spread0"]]},
    "temporal.deltas": {"type": "choice", "values": [[], [1], [1, 10]]},
    "temporal.windows": {"type": "choice", "values": [[], [20], [10, 50]]},
    # never empty, so a temporal block always has at least one statistic
    "temporal.ema_halflives": {"type": "choice", "values": [[4, 16, 64], [5, 30, 150], [8, 64], [2, 8, 32, 128]]},
    "temporal.relative": {"type": "choice", "values": [True, False]},
    "interactions": {"type": "choice", "values": [True, False]},
    "interactions.pairs": {"type": "choice", "values": [
        [["imb0", "spread0"], ["trade_signed", "spread0"]],          # pressure scaled by the spread regime
        [["spread0", "mid"], ["v0", "p0"], ["v6", "p6"]],             # spread x price, volume x price (the seed's)
        [["imb0", "trade_signed"]],
        [["imb0", "spread0"], ["trade_signed", "spread0"], ["spread0", "mid"], ["v0", "p0"]]]},
    "normalize.robust": {"type": "choice", "values": [False, True]},
    "normalize.method": {"type": "choice", "values": ["global", "warmup", "none"]},
    "normalize.drop_raw": {"type": "choice", "values": [False, True]},
}

RAW_SPEC: dict = {}               # the 32 raw columns, z-normalised: the baseline every search reports


def _available(column: str, on: set[str]) -> bool:
    return MADE_BY.get(column) is None or MADE_BY[column] in on


def spec_from_config(config: dict) -> dict:
    """A sampled config (keys of ``SPACE``; others ignored, missing ones off) -> a FeaturePipeline spec.

    Values may still be adapter-encoded (``"json:[...]"``); they are decoded here.
    """
    c = {k: decode_value(v) for k, v in config.items() if k in SPACE}
    on = {g for g in GROUPS if c.get(g) is True}
    spec: dict = {}
    if "book" in on:
        spec["book"] = {k: c[f"book.{k}"] for k in ("levels", "log_volumes") if f"book.{k}" in c}
    if "trade" in on:
        spec["trade"] = {"intensity_halflife": c.get("trade.intensity_halflife")}
    if "temporal" in on:
        params = {k: list(c[f"temporal.{k}"]) if isinstance(c.get(f"temporal.{k}"), (list, tuple))
                  else c[f"temporal.{k}"]
                  for k in ("inputs", "deltas", "windows", "ema_halflives", "relative") if f"temporal.{k}" in c}
        inputs = [x for x in params.get("inputs", []) if _available(x, on)]
        params["inputs"] = inputs or list(TEMPORAL_FALLBACK)
        spec["temporal"] = params
    if "interactions" in on:
        pairs = [list(p) for p in c.get("interactions.pairs", []) if all(_available(x, on) for x in p)]
        if pairs:
            spec["interactions"] = {"pairs": pairs}
    spec["normalize"] = {"robust": bool(c.get("normalize.robust", False)),
                         "method": c.get("normalize.method", "global")}
    if c.get("normalize.drop_raw") is True and groups_on(spec):
        spec["normalize"]["drop_raw"] = True
    return spec


def groups_on(spec: dict) -> list[str]:
    """The appending builders a spec turns on, in pipeline order (``[]`` for raw features only)."""
    return [g for g in GROUPS if spec.get(g) is not None]


def describe(spec: dict) -> str:
    """One short line for logs: ``raw+book+temporal(mid,imb0)``."""
    norm = spec.get("normalize") or {}
    parts = [] if norm.get("drop_raw") else ["raw"]
    for g in groups_on(spec):
        parts.append(f"temporal({','.join(spec['temporal']['inputs'])})" if g == "temporal" else g)
    if norm.get("robust"):
        parts.append("robust")
    if norm.get("method", "global") != "global":
        parts.append(f"norm={norm['method']}")
    return "+".join(parts)


def sample_config(rng: np.random.Generator, space: dict | None = None) -> dict:
    """One uniform random config of a choice-only space (tests, and a look at what the space holds)."""
    space = SPACE if space is None else space
    return {k: copy.deepcopy(d["values"][int(rng.integers(len(d["values"])))]) for k, d in space.items()}


def all_on_config() -> dict:
    """Every group on, each parameter at its first menu value: a reasonable first candidate."""
    cfg = {k: copy.deepcopy(d["values"][0]) for k, d in SPACE.items()}
    cfg.update({g: True for g in GROUPS})
    return cfg
