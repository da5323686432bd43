"""k-fold bagged members: K models per config and seed over all labelled data but report.

The pool is the train file plus the valid file's tune role (DESIGN.md,
"Honest evaluation", k-fold bagging); the report role stays out of it, so its
score stays honest. A final fit (``final=True``) puts report in the pool too,
and then nothing it outputs is an honest score.

    pool sequences  = train (file order) + valid tune role (+ report if final)
    folds[P]        = fold of each pool sequence: sequence-grouped, dealt per
                      source file so every fold holds train and valid sequences
    model k         fits on folds != k and early-stops on fold k
    oof_pred        [pool rows, 2]  model k's predictions on fold k, for every k
    valid_pred      [valid rows, 2] the K models' average on the whole valid file
                    (what the packaged engine computes; report rows are honest)

One bagged member is one bundle (``bundle.py``): ``weights.pt`` holds the K
state_dicts under ``fold<k>.`` prefixes (one file, loaded with
``weights_only=True``), ``oof_pred.npy``, ``folds.npy`` and ``spec["bag"]``
(K, final, fold seed, the pool's definition and a digest of the folds). The
feature pipeline is fitted once, on the train file, as for plain members.
Shapes: ``P`` pool sequences, ``T`` steps, ``F`` features.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..data.metric import score
from ..data.splits import sequence_roles
from ..errors import UserError
from .bundle import Bundle, BundleError, load_bundle, save_bundle
from .member import build_spec, model_config_dict
from .prepare import Prepared, oracle_scores, prepare
from .trainer import Split, TrainConfig, fit, predict, set_seed

NO_HONEST_SCORE = "final fit: the report split was in the pool; no honest score exists for this member"


def assign_folds(sources: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold ``[P]`` of each pool sequence, stratified by ``sources[P]`` (0 = train, 1 = valid).

    Each source's sequences are shuffled with ``seed`` and dealt round-robin,
    continuing where the previous source stopped, so fold sizes differ by at
    most one and every fold holds sequences of every source.
    """
    sources = np.asarray(sources)
    if k < 2:
        raise UserError(f"--folds must be >= 2, got {k}")
    rng = np.random.default_rng(seed)
    folds = np.empty(sources.shape[0], dtype=np.int64)
    start = 0
    for s in np.unique(sources):
        idx = np.flatnonzero(sources == s)
        if idx.size < k:
            raise UserError(f"--folds {k}: the pool's {'valid' if s else 'train'} part has only {idx.size} "
                            "sequences; every fold needs one of each file, so use fewer folds")
        folds[rng.permutation(idx)] = (start + np.arange(idx.size)) % k
        start = (start + idx.size) % k
    return folds


def folds_digest(folds: np.ndarray) -> str:
    return hashlib.blake2b(np.asarray(folds, dtype=np.int64).tobytes(), digest_size=10).hexdigest()


def pool_sequences(train, valid, pool: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train indices, valid indices in the pool, valid report indices) for a pool definition.

    ``train``/``valid`` need only ``n_seq`` and ``seq_ix``. With ``pool["final"]`` the
    report indices are in the pool too (and are not an honest report).
    """
    roles = sequence_roles(pool["split"], valid.seq_ix, train.seq_ix)
    valid_pool = np.sort(np.concatenate([roles.tune, roles.report])) if pool["final"] else roles.tune
    return roles.fit, valid_pool, roles.report


def _pool(prep: Prepared, final: bool) -> tuple[Split, np.ndarray, np.ndarray]:
    """The pool's arrays, its per-sequence source (0 train, 1 valid) and the valid indices in it."""
    valid_pool = np.sort(np.concatenate([prep.tune_idx, prep.report_idx])) if final else prep.tune_idx
    X = np.concatenate([np.asarray(prep.fit.X), np.asarray(prep.valid_X[valid_pool])])      # [P, T, F]
    Y = np.concatenate([np.asarray(prep.fit.Y), prep.valid_Y[valid_pool]])                  # [P, T, 2]
    mask = np.concatenate([prep.fit.mask, prep.valid_mask[valid_pool]])                     # [P, T]
    sources = np.repeat([0, 1], [len(prep.fit), valid_pool.size])
    return Split(X, Y, mask), sources, valid_pool


def _subset(s: Split, keep: np.ndarray) -> Split:
    return Split(s.X[keep], s.Y[keep], s.mask[keep])


def train_bagged_member(data_dir: str, family: str, out_dir: str, *, k: int = 5, final: bool = False,
                        hparams: dict | None = None, train_cfg: dict | TrainConfig | None = None,
                        features_spec: dict | None = None, seed: int = 0, fold_seed: int = 0,
                        prepare_kwargs: dict | None = None, extra_spec: dict | None = None) -> Bundle:
    """Train K fold models of one config and seed and write them as one bagged member bundle."""
    from ..models import count_params, create_model
    cfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig.from_dict(train_cfg)
    kw = dict(prepare_kwargs or {})
    if kw.get("tune_from", "valid") != "valid" or kw.get("max_train_seqs"):
        raise UserError("bagging pools all of train with the valid tune role: drop --tune-from/--max-train-seqs")
    prep = prepare(data_dir, features_spec, **kw)
    pool, sources, valid_pool = _pool(prep, final)
    folds = assign_folds(sources, k, fold_seed)
    oof = np.zeros(pool.Y.shape, dtype=np.float32)                                         # [P, T, 2]
    valid_avg = np.zeros(prep.valid_Y.shape, dtype=np.float64)                              # [Nv, T, 2]
    sets, fold_info = {}, []
    for j in range(k):
        held = folds == j
        set_seed(seed + 7919 * j)
        model = create_model(family, **{**(hparams or {}), "n_features": prep.pipeline.n_features_out})
        res = fit(model, cfg, _subset(pool, ~held), _subset(pool, held), None, seed=seed + 7919 * j)
        model = model.cpu().eval()
        oof[held] = predict(model, pool.X[held], cfg.eval_batch_size, "cpu")
        valid_avg += predict(model, prep.valid_X, cfg.eval_batch_size, "cpu") / k
        sets.update({f"fold{j}.{n}": v.detach().cpu() for n, v in model.state_dict().items()})
        fold_info.append({"fold": j, "best_epoch": res.best_epoch, "held_out_mean": res.tune["mean"],
                          "n_fit": int((~held).sum()), "n_held_out": int(held.sum()), "seconds": res.seconds})
        res_last = res
    metrics = _bag_metrics(prep, pool, oof, valid_avg, final, count_params(model) * k,
                           sum(f["seconds"] for f in fold_info))
    bag = {"k": int(k), "final": bool(final), "fold_seed": int(fold_seed), "folds_digest": folds_digest(folds),
           "folds": fold_info, "pool": {"split": prep.info["split"], "final": bool(final),
                                        "train_fingerprint": prep.info["train_fingerprint"],
                                        "valid_fingerprint": prep.info["valid_fingerprint"],
                                        "n_train": int(len(prep.fit)), "n_valid": int(valid_pool.size)}}
    extra = {**(extra_spec or {}), "bag": bag, **({"note": NO_HONEST_SCORE} if final else {})}
    spec = build_spec(family, model, model_config_dict(model), cfg, prep, seed, res_last, metrics, extra)
    save_bundle(out_dir, model, spec, valid_avg[prep.valid_mask].astype(np.float32),
                arrays={"oof_pred": oof[pool.mask], "folds": folds}, state_dict=sets)
    return load_bundle(out_dir)


def _bag_metrics(prep, pool, oof, valid_avg, final, n_params, seconds) -> dict:
    """``tune_*`` are the out-of-fold scores over the pool (what selection and leaderboards rank
    on); ``report_*`` the K-average on the report role, left out of a final fit's metrics."""
    m = {f"tune_{t}": float(v) for t, v in score(pool.Y[pool.mask], oof[pool.mask]).items()}
    m["oof_mean"] = m["tune_mean"]
    if not final:
        rep = prep.report_idx
        r = score(prep.valid_Y[rep][prep.valid_mask[rep]], valid_avg[rep][prep.valid_mask[rep]])
        m.update({f"report_{t}": float(v) for t, v in r.items()})
        o = oracle_scores(prep)
        if o and o.get("report", {}).get("mean", 0) > 0:
            m["fraction_of_oracle"] = m["report_mean"] / o["report"]["mean"]
    m.update(params_count=float(n_params), train_seconds=float(seconds))
    return m


def load_folds(path: str) -> np.ndarray:
    """``folds.npy`` of a bagged member, checked against its spec's digest."""
    from .bundle import read_spec
    spec = read_spec(path)
    f = os.path.join(path, "folds.npy")
    if not os.path.exists(f):
        raise BundleError(f"{path}: bagged member without folds.npy")
    folds = np.load(f, allow_pickle=False)
    if folds.ndim != 1 or folds_digest(folds) != spec["bag"].get("folds_digest"):
        raise BundleError(f"{path}: folds.npy does not match the digest in spec.json")
    return folds


def check_fold_assignment(path: str, train, valid) -> None:
    """A bagged member trained elsewhere fits this pool when it was trained on these files and its
    folds are the ones this data, split and fold seed give; otherwise BundleError says what differs."""
    spec = load_bundle(path).spec
    bag, pool = spec["bag"], spec["bag"]["pool"]
    if pool.get("train_fingerprint") != train.fingerprint:
        raise BundleError(f"{path}: its pool used train data {str(pool.get('train_fingerprint'))[:12]}, "
                          f"not this train file ({train.fingerprint[:12]})")
    folds = load_folds(path)
    _, valid_pool, _ = pool_sequences(train, valid, pool)
    n_train = train.n_seq
    if pool["n_train"] != n_train or pool["n_valid"] != valid_pool.size or folds.size != n_train + valid_pool.size:
        raise BundleError(f"{path}: its pool has {pool['n_train']} train + {pool['n_valid']} valid sequences; "
                          f"this data gives {n_train} + {valid_pool.size}")
    expected = assign_folds(np.repeat([0, 1], [n_train, valid_pool.size]), int(bag["k"]), int(bag["fold_seed"]))
    if not np.array_equal(folds, expected):
        moved = int((folds != expected).sum())
        raise BundleError(f"{path}: fold assignment does not match this pool ({moved} sequences in other folds "
                          f"than K={bag['k']}, fold seed {bag['fold_seed']} give here)")
