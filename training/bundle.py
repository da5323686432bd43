"""Checkpoint bundles: everything the ensemble and packaging stages need, nothing else.

A bundle is a directory:
    weights.pt      the model's state_dict (tensors only; loaded with weights_only=True)
    spec.json       family, config, feature pipeline (params + fitted stats), seed,
                    data fingerprints and split, training config, history, metrics
    valid_pred.npy  float32 [rows, 2]: predictions for every need-prediction row of the
                    valid file (tune and report roles), in file order
    tune_pred.npy   float32 [rows, 2], only with tune_from="train": predictions for the
                    need-prediction rows of the tune sequences carved out of train
                    (sequence order of ``split_roles``), which the ensemble selects on

A bagged member (``bagging.py``) holds K fold models' state_dicts in the one
``weights.pt`` under ``fold<k>.`` prefixes, plus ``oof_pred.npy`` and ``folds.npy``.

Bundles are written atomically (a temp dir renamed into place), so a crashed
run never leaves a half bundle that a later ensemble would pick up. Bundles
trained elsewhere are accepted when ``validate_bundle`` passes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError, read_json

FORMAT = "lobsweep.bundle/1"
REQUIRED_SPEC_KEYS = ("format", "family", "config", "features", "seed", "data", "metrics")


class BundleError(UserError):
    """A bundle is missing, malformed or does not match the data."""


@dataclass
class Bundle:
    path: str
    spec: dict
    valid_pred: np.ndarray

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @property
    def n_models(self) -> int:
        """1, or K for a bagged member (``bagging.py``)."""
        return int(self.spec.get("bag", {}).get("k", 1))

    def state_dict(self) -> dict:
        return load_weights(os.path.join(self.path, "weights.pt"))

    def state_dicts(self) -> list[dict]:
        """One state_dict per model: ``[state_dict()]``, or a bagged member's K fold sets."""
        if "bag" not in self.spec:
            return [self.state_dict()]
        return split_sets(self.state_dict(), self.n_models)

    def build_model(self, fold: int = 0):
        """The model with its weights (fold ``fold`` of a bagged member), in eval mode (float32, CPU)."""
        return self.build_models()[fold] if "bag" in self.spec else self.build_models()[0]

    def build_models(self) -> list:
        """Every model of the bundle, weights loaded, in eval mode."""
        from ..models import create_model
        out = []
        for sd in self.state_dicts():
            model = create_model(self.spec["family"], **self.spec["config"])
            model.load_state_dict(sd)
            out.append(model.eval())
        return out

    def pipeline(self):
        from ..features import FeaturePipeline
        return FeaturePipeline.from_json(json.dumps(self.spec["features"]))


def load_weights(path: str) -> dict:
    """A state_dict, never unpickling arbitrary objects."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled code; a truncated file fails too
        raise BundleError(f"{path}: weights not loadable with weights_only=True ({type(exc).__name__})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BundleError(f"{path}: weights.pt must hold a state_dict of tensors")
    return sd


def save_bundle(out_dir: str, model, spec: dict, valid_pred: np.ndarray,
                arrays: dict[str, np.ndarray] | None = None, state_dict: dict | None = None) -> str:
    """Write a bundle atomically; an existing bundle at ``out_dir`` is replaced.

    ``arrays`` adds named float32 prediction arrays (``<name>.npy``);
    ``state_dict`` replaces ``model.state_dict()`` (a bagged member's K sets).
    """
    spec = {"format": FORMAT, **spec}
    missing = [k for k in REQUIRED_SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"bundle spec lacks {missing}")
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".bundle-", dir=parent)
    try:
        sd = model.state_dict() if state_dict is None else state_dict
        torch.save({k: v.detach().cpu() for k, v in sd.items()}, os.path.join(tmp, "weights.pt"))
        with open(os.path.join(tmp, "spec.json"), "w") as f:
            json.dump(spec, f, indent=1, default=_json_default)
        np.save(os.path.join(tmp, "valid_pred.npy"), np.asarray(valid_pred, dtype=np.float32))
        for name, arr in (arrays or {}).items():
            np.save(os.path.join(tmp, name + ".npy"), np.asarray(arr))
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_spec(path: str) -> dict:
    spec_path = os.path.join(path, "spec.json")
    if not os.path.isdir(path):
        raise BundleError(f"{path}: not a bundle directory")
    if not os.path.exists(spec_path):
        raise BundleError(f"{path}: no spec.json")
    spec = read_json(spec_path, BundleError)
    if not isinstance(spec, dict):
        raise BundleError(f"{spec_path}: must hold a JSON object")
    missing = [k for k in REQUIRED_SPEC_KEYS if k not in spec]
    if missing:
        raise BundleError(f"{spec_path}: missing key '{missing[0]}'")
    if spec["format"] != FORMAT:
        raise BundleError(f"{spec_path}: format '{spec['format']}' is not {FORMAT}")
    return spec


def load_pred(path: str, name: str = "valid_pred") -> np.ndarray:
    """A bundle's prediction array ``<name>.npy``, checked to be finite ``[rows, 2]``."""
    pred_path = os.path.join(path, name + ".npy")
    if not os.path.exists(pred_path):
        raise BundleError(f"{path}: no {name}.npy")
    try:
        pred = np.load(pred_path, allow_pickle=False)
    except ValueError:
        raise BundleError(f"{pred_path}: not a plain numeric .npy array") from None
    if pred.ndim != 2 or pred.shape[1] != 2 or not np.isfinite(pred).all():
        raise BundleError(f"{pred_path}: must be a finite float array [rows, 2], got shape {pred.shape}")
    return pred


def load_bundle(path: str) -> Bundle:
    spec = read_spec(path)
    return Bundle(path=os.path.abspath(path), spec=spec, valid_pred=load_pred(path))


def validate_bundle(path: str, valid_fingerprint: str | None = None, n_valid_rows: int | None = None) -> Bundle:
    """Full check of a bundle, possibly trained elsewhere: spec, weights, predictions, data match.

    Builds the model from spec and loads the weights into it (weights_only), so a
    bundle that passes here can be ensembled and packaged.
    """
    b = load_bundle(path)
    if valid_fingerprint and b.spec["data"].get("valid_fingerprint") != valid_fingerprint:
        raise BundleError(f"{path}: trained against valid data {str(b.spec['data'].get('valid_fingerprint'))[:12]}, "
                          f"not this valid file ({valid_fingerprint[:12]})")
    if n_valid_rows is not None and b.valid_pred.shape[0] != n_valid_rows:
        raise BundleError(f"{path}: valid_pred has {b.valid_pred.shape[0]} rows; the valid file has {n_valid_rows}")
    try:
        b.build_models()
        b.pipeline()
    except UserError as exc:
        raise BundleError(f"{path}: {exc}") from None
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise BundleError(f"{path}: weights do not fit the spec's model ({str(exc).splitlines()[0][:160]})") from None
    return b


def find_bundles(root: str) -> list[str]:
    """Every bundle directory (holding spec.json) under ``root``, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "spec.json" in filenames:
            found.append(dirpath)
            dirnames[:] = []
    return found


def split_sets(state_dict: dict, k: int) -> list[dict]:
    """A bagged member's ``fold<j>.``-prefixed state_dict -> K plain state_dicts."""
    out = [{} for _ in range(k)]
    for name, v in state_dict.items():
        head, _, rest = name.partition(".")
        j = int(head[4:]) if head.startswith("fold") and head[4:].isdigit() else -1
        if not 0 <= j < k or not rest:
            raise BundleError(f"weights.pt: key '{name}' is not fold0..fold{k - 1}.<parameter>")
        out[j][rest] = v
    if any(not sd for sd in out):
        raise BundleError(f"weights.pt: a bagged member of K={k} lacks fold {[j for j in range(k) if not out[j]][0]}")
    return out
