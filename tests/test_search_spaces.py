"""Search spaces: real fields only, every sample trains, log scales sample log-uniformly.

Parametrized over ``list_models()``, so a family registered tomorrow must
bring a space that passes the same checks.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import optuna
import pytest
import torch
from scipy import stats

from lobsweep.errors import UserError
from lobsweep.models import create_model, get_config_class, list_models
from lobsweep.search_spaces import (
    SpaceError,
    common_space,
    family_space,
    list_spaces,
    split_config,
    sweep_space,
)
from lobsweep.search_spaces.adapter import decode_value, joint_define_by_run, to_optuna, to_tune
from lobsweep.training.trainer import Split, TrainConfig, Trainer

optuna.logging.set_verbosity(optuna.logging.WARNING)
FAMILIES = list_models()


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _random_configs(space: dict, n: int, seed: int) -> list[dict]:
    """``n`` configs drawn through the Optuna adapter with a random sampler."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    dists = to_optuna(space)
    return [study.ask(dists).params for _ in range(n)]


def test_every_family_has_a_space():
    assert list_spaces() == FAMILIES
    for fam in FAMILIES:
        assert family_space(fam), fam


@pytest.mark.parametrize("family", FAMILIES)
def test_every_key_is_a_real_config_field(family):
    space = family_space(family)
    assert set(space) <= _fields(get_config_class(family)) - {"n_features"}
    assert set(common_space()) <= _fields(TrainConfig)
    flat = sweep_space(family)
    assert {k.split(".", 1)[0] for k in flat} == {"model", "train"}


def test_architecture_and_window_dimensions_are_searched():
    """Layers, width, window, heads, d_state and the crop length all vary somewhere."""
    searched = {k for fam in FAMILIES for k in family_space(fam)}
    assert {"layers", "hidden", "window", "heads", "d_state"} <= searched
    crop = common_space()["crop_len"]["values"]
    assert 0 in crop and len(crop) > 1


@pytest.mark.parametrize("family", FAMILIES)
def test_sampled_configs_build_and_take_a_training_step(family):
    """Three random samples of the full sweep space: model + TrainConfig + one optimiser step."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    T, F = 600, 32
    X = rng.standard_normal((3, T, F)).astype(np.float32)
    Y = rng.standard_normal((3, T, 2)).astype(np.float32)
    mask = np.zeros((3, T), dtype=bool)
    mask[:, 99:] = True
    for config in _random_configs(sweep_space(family), 3, seed=1):
        fam, hp, train = split_config({**config, "family": family})
        train["swa_epochs"] = min(int(train.get("swa_epochs", 0)), 1)         # capped at the budget, as sweeps do
        cfg = TrainConfig.from_dict({**train, "epochs": 1, "batch_size": 16})   # one batch = one step
        model = create_model(fam, **hp, n_features=F)
        before = [p.detach().clone() for p in model.parameters()]
        trainer = Trainer(model, cfg, Split(X[:2], Y[:2], mask[:2]), Split(X[2:], Y[2:], mask[2:]), seed=0)
        rec = trainer.run_epoch()
        assert np.isfinite(rec["train_loss"]) and np.isfinite(rec["tune_mean"]), (config, rec)
        changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
        assert changed > 0, config


@pytest.mark.parametrize("family", [f for f in FAMILIES if "heads" in family_space(f)])
def test_every_width_and_head_count_combination_is_valid(family):
    space = family_space(family)
    expand = space.get("expand", {"values": [None]})["values"]
    x = torch.randn(1, 12, 32)
    for hidden, heads, ex in itertools.product(space["hidden"]["values"], space["heads"]["values"], expand):
        model = create_model(family, hidden=hidden, heads=heads, layers=1, **({"expand": ex} if ex else {}))
        assert (model.config.hidden, model.config.heads) == (hidden, heads)
        with torch.no_grad():
            y = model(x)
        assert y.shape == (1, 12, 2) and torch.isfinite(y).all(), (family, hidden, heads, ex)


def _log_uniform_ks(values: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """KS p-values of log(values) against U(log lo, log hi) and of values against U(lo, hi)."""
    p_log = stats.kstest(np.log(values), stats.uniform(np.log(lo), np.log(hi) - np.log(lo)).cdf).pvalue
    p_lin = stats.kstest(values, stats.uniform(lo, hi - lo).cdf).pvalue
    return p_log, p_lin


def test_log_scale_float_samples_log_uniformly_through_both_adapters():
    dim = common_space()["lr"]
    assert dim["log"]
    lo, hi = dim["low"], dim["high"]
    via_optuna = np.array([c["lr"] for c in _random_configs({"lr": dim}, 3000, seed=3)])
    domain = to_tune({"lr": dim})["lr"]
    via_tune = np.asarray(domain.sample(size=3000, random_state=np.random.default_rng(4)), dtype=float)
    for values in (via_optuna, via_tune):
        assert values.min() >= lo and values.max() <= hi
        p_log, p_lin = _log_uniform_ks(values, lo, hi)
        assert p_log > 1e-3, p_log            # consistent with log-uniform
        assert p_lin < 1e-12, p_lin           # and clearly not uniform on the linear scale
        # each decade-sized slice of the range gets a share proportional to its log width
        share = np.mean(values < lo * 10)
        assert abs(share - np.log(10) / np.log(hi / lo)) < 0.04


def test_log_scale_int_puts_half_its_mass_below_the_geometric_midpoint():
    dim = family_space("gru")["hidden"]
    assert dim["log"] and dim["type"] == "int"
    values = np.array([c["hidden"] for c in _random_configs({"hidden": dim}, 2000, seed=5)])
    assert values.dtype.kind == "i" and values.min() >= dim["low"] and values.max() <= dim["high"]
    below = int(np.sum(values < np.sqrt(dim["low"] * dim["high"])))
    assert stats.binomtest(below, len(values), 0.5).pvalue > 1e-3
    linear_share = (np.sqrt(dim["low"] * dim["high"]) - dim["low"]) / (dim["high"] - dim["low"])
    assert below / len(values) > linear_share + 0.15


def test_list_choices_round_trip_through_optuna():
    dim = common_space()["target_weights"]
    seen = {tuple(decode_value(c["train.target_weights"]))
            for c in _random_configs({"train.target_weights": dim}, 60, seed=6)}
    assert seen == {tuple(v) for v in dim["values"]}
    _, _, train = split_config({"family": "gru", "train.target_weights": "json:[1.0, 0.25]"})
    assert TrainConfig.from_dict(train).target_weights == (1.0, 0.25)


def test_joint_space_searches_the_family_itself():
    spaces = {f: sweep_space(f) for f in FAMILIES}
    fn = joint_define_by_run(spaces)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    chosen = set()
    for _ in range(40):
        trial = study.ask()
        fam = fn(trial)["family"]
        chosen.add(fam)
        family, hp, train = split_config({**trial.params, "family": fam})
        assert family == fam and set(hp) == set(family_space(fam))
        assert set(train) == set(common_space())
        create_model(family, **hp)
        TrainConfig.from_dict(train)
        study.tell(trial, 0.0)
    assert chosen == set(FAMILIES)


def test_bad_spaces_fail_in_one_line_naming_the_problem():
    with pytest.raises(SpaceError, match="'hiddn' is not a field of GRUConfig"):
        sweep_space("gru", model={"hiddn": {"type": "int", "low": 8, "high": 16}})
    with pytest.raises(SpaceError, match="log-scale range needs low > 0"):
        sweep_space("gru", train={"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}})
    with pytest.raises(SpaceError, match="low <= high"):
        sweep_space("gru", model={"hidden": {"type": "int", "low": 64, "high": 8}})
    with pytest.raises(SpaceError, match="non-empty 'values'"):
        sweep_space("gru", model={"norm": {"type": "choice", "values": []}})
    with pytest.raises(UserError, match="unknown model family 'nope'"):
        sweep_space("nope")


# ------------------------------------------------------------------ recipes and what the spaces can express
def test_spaces_express_the_public_recipes():
    """Raw inputs, 4 layers, no projection, Pearson/combo losses, plateau, EMA, SWA, patience 12, whole
    sequences: each is a value of the default spaces (the gaps the recipes issue listed)."""
    from lobsweep.flows.profiles import PROFILES
    from lobsweep.tuning.feature_space import SPACE as FEATURE_SPACE
    common = common_space()
    for fam in ("gru", "lstm"):
        space = family_space(fam)
        assert space["layers"]["high"] >= 4 and {True, False} <= set(space["input_proj"]["values"])
        assert {"linear", "mlp"} <= set(space["head"]["values"])
    assert {"pearson", "combo"} <= set(common["loss"]["values"]) and "pearson_coef" in common
    assert "plateau" in common["schedule"]["values"] and 0.0 in common["weight_decay"]["values"]
    assert common["patience"]["high"] >= 12 and 0 in common["crop_len"]["values"]
    assert any(v > 0 for v in common["swa_epochs"]["values"]) and 0.0 in common["ema_decay"]["values"]
    assert {"none", "warmup", "global"} <= set(FEATURE_SPACE["normalize.method"]["values"])
    full = PROFILES["full"]["hpo"]
    assert "patience" not in full["train_fixed"] and "crop_len" not in full["train_fixed"] and not full.get("spaces")


@pytest.mark.parametrize("name", __import__("lobsweep.search_spaces.recipes", fromlist=["RECIPES"]).list_recipes())
def test_every_recipe_is_complete_builds_and_is_a_point_of_its_default_space(name):
    from lobsweep.features import FeaturePipeline
    from lobsweep.search_spaces.recipes import fit_recipes, get_recipe
    r = get_recipe(name)
    model = create_model(r["family"], **r["model"], n_features=32)
    assert set(r["model"]) == _fields(get_config_class(r["family"])) - {"n_features"}
    TrainConfig.from_dict(r["train"])
    FeaturePipeline.from_spec(r["features"])
    space = sweep_space(r["family"])
    widened, points, notes = fit_recipes(r["family"], space)
    assert widened == space and notes == []                  # the default space already holds every recipe
    point = next(p for p in points if p["recipe"] == name)
    assert set(point) == set(space) | {"recipe"}
    for key, value in point.items():
        if key != "recipe":
            assert value == r[key.split(".")[0]][key.split(".", 1)[1]]
    if name == "organiser-baseline":                          # no projection, linear head, raw inputs
        names = [n for n, _ in model.named_parameters()]
        assert not any(n.startswith("in_proj") for n in names) and model.head.fc is None
        assert r["model"]["layers"] == 3 and r["features"]["normalize"]["method"] == "none"


def test_fit_recipes_widens_a_narrow_space_and_leaves_out_what_it_cannot_hold():
    from lobsweep.search_spaces.recipes import fit_recipes
    narrow = sweep_space("gru", model={"hidden": {"type": "choice", "values": [16, 32]},
                                       "layers": {"type": "int", "low": 1, "high": 2}},
                         train={"lr": {"type": "float", "low": 2e-3, "high": 5e-3, "log": True}})
    space, points, notes = fit_recipes("gru", narrow)
    assert {64, 128, 96} <= set(space["model.hidden"]["values"]) and space["model.layers"]["high"] == 4
    assert space["train.lr"]["low"] == 1e-3 and space["train.loss"]["type"] == "choice"
    assert len(points) == 5 and notes and all(set(p) == set(space) | {"recipe"} for p in points)
    logwd = sweep_space("gru", train={"weight_decay": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}})
    _, points, notes = fit_recipes("gru", logwd)
    assert [p["recipe"] for p in points] == ["plain-gru", "default-gru"]          # the wd-0 recipes cannot be held
    assert sum("left out" in n for n in notes) == 3
