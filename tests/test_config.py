"""Config: groups, flat overrides, validation before any work, JSON round trip."""

import dataclasses
import json

import pytest

from jdeconv import Config
from jdeconv.config import FLAT_FIELDS, MaskConfig, NetworkConfig
from jdeconv.losses import LossSpec


def test_groups_and_flat_names_agree():
    cfg = Config.preset("noise2self", steps=200, learning_rate=4e-4, mask_fraction=0.01)
    assert cfg.optim.learning_rate == cfg.learning_rate == 4e-4
    assert cfg.masks.fraction == cfg.mask_fraction == 0.01
    for flat, (group, field) in FLAT_FIELDS.items():
        assert getattr(cfg, flat) == getattr(getattr(cfg, group), field)
    assert dict(cfg.loss_weights) == {"bsp": 1.0}
    assert cfg.replace(tta=False).inference.tta is False
    assert cfg.replace(masks=MaskConfig(fraction=0.1)).mask_fraction == 0.1
    assert cfg.replace(loss_weights={"rec": 1.0}).loss == (LossSpec("rec", 1.0),)
    hash(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3
    with pytest.raises(AttributeError):
        cfg.no_such_field  # noqa: B018


def test_json_round_trip_and_old_flat_format():
    cfg = Config.preset("noise2same_d", steps=500, seed=3, tile_size=128, patience=4)
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # jdeconv 0.1 saved the flat fields (model format 1).
    old = {
        "name": "noise2same_d",
        "loss_weights": {"rec": 1.0, "inv_d": 2.0, "bound_d": 0.1},
        "seed": 3,
        "steps": 500,
        "mask_fraction": 0.005,
        "percentiles": [0.1, 99.9],
        "validation_fraction": 0.01,
        "tile_size": 128,
        "patience": 4,
        "forward_method": "auto",
    }
    assert Config.from_dict(old) == cfg
    with pytest.raises(ValueError, match="unknown Config fields"):
        Config.from_dict({**old, "stepz": 3})
    with pytest.raises(ValueError, match="unknown network fields"):
        Config.from_dict({**cfg.to_dict(), "network": {"width": 3}})


def test_unregistered_terms_load_without_checking():
    d = Config(loss_weights={"bsp": 1.0}).to_dict()
    d["loss"].append({"name": "not_registered_here", "weight": 0.5, "params": {"k": 2}})
    with pytest.raises(ValueError, match="unknown loss terms"):
        Config.from_dict(d)
    cfg = Config.from_dict(d, check_terms=False)
    assert cfg.loss[1] == LossSpec("not_registered_here", 0.5, (("k", 2),))


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"steps": 2.5}, "steps must be an integer"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"steps": True}, "steps must be an integer"),
        ({"batch_size": 4.0}, "batch_size must be an integer"),
        ({"learning_rate": float("inf")}, "learning_rate must be finite"),
        ({"learning_rate": float("nan")}, "learning_rate must be finite"),
        ({"learning_rate": 0.0}, "learning_rate must be in"),
        ({"learning_rate": "1e-3"}, "learning_rate must be a number"),
        ({"mask_fraction": 0.0}, "fraction must be in"),
        ({"mask_fraction": 0.9}, "fraction must be in"),
        ({"mask_noise_std": -1.0}, "noise_std must be in"),
        ({"mask_noise_std": float("nan")}, "noise_std must be finite"),
        ({"percentiles": (50, 10)}, "percentiles"),
        ({"percentiles": (0, float("nan"))}, "percentiles"),
        ({"percentiles": "low"}, "percentiles"),
        ({"validation_fraction": 0.5}, "fraction must be in"),
        ({"validate_every": 0}, "every must be >= 1"),
        ({"selection_z": -1}, "selection_z must be in"),
        ({"patience": 0}, "patience must be >= 1"),
        ({"grad_clip": 0.0}, "grad_clip must be in"),
        ({"grad_clip": float("inf")}, "grad_clip must be finite"),
        ({"weight_decay": -0.1}, "weight_decay must be in"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
        ({"tile_size": 4}, "tile_size must be at least"),
        ({"tile_halo": 1.5}, "tile_halo must be an integer"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"depth": 0}, "depth must be >= 1"),
        ({"depth": 9}, "depth must be between"),
        ({"base_channels": 0}, "base_channels must be >= 1"),
        ({"norm": "batch"}, "norm must be one of"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"mask_kind": "grid"}, "kind must be one of"),
        ({"mask_replacement": "mean"}, "replacement must be one of"),
        ({"forward_method": "conv"}, "method must be one of"),
        ({"padding": "edge"}, "padding must be one of"),
        ({"tta": "yes"}, "tta must be True or False"),
        ({"residual": 1}, "residual must be True or False"),
        ({"patch_size": 50}, "multiples"),
        ({"loss_weights": {"bsp": -1.0}}, "negative"),
        ({"loss_weights": {"bsp": float("inf")}}, "finite"),
        ({"loss_weights": {"xyz": 1.0}}, "unknown loss terms"),
        ({"loss_weights": {}}, "empty"),
        ({"stepz": 3}, "unknown Config fields"),
        ({"network": 3}, "network must be a NetworkConfig"),
    ],
)
def test_bad_values_are_rejected_at_construction(overrides, match):
    with pytest.raises(ValueError, match=match):
        Config.preset("noise2self", **overrides)


def test_group_objects_validate_on_their_own():
    with pytest.raises(ValueError, match="depth"):
        NetworkConfig(depth=1.5)
    assert NetworkConfig(depth=2).multiple == 4


def test_default_sizes_follow_the_backend():
    # CPU: jdeconv 0.1's sizes; in 2D and 3D the network anchored on the non-negative Tikhonov
    # solution, which a trained model must beat significantly, and no negative output.
    # Training stops after 4 validations in a row significantly worse than the kept model.
    method = dict(
        anchor="nonneg_tikhonov",
        restore_best=True,
        selection="if_better",
        patience=4,
        clip_output="below",
    )
    assert Config.default(2, backend="cpu") == Config.preset("noise2same_d", **method)
    assert Config.default(3, backend="cpu") == Config.preset(
        "noise2same", batch_size=2, patch_size=48, patch_size_z=32, steps=300, **method
    )
    # Accelerators: the papers' sizes; steps and network as on the CPU.
    gpu2, gpu3 = Config.default(2, backend="gpu"), Config.default(3, backend="tpu")
    assert gpu2.patch_size == 128 and gpu2.batch_size == 16 and gpu2.steps == 300
    assert gpu3.patch_shape(3) == (64, 64, 64) and gpu3.batch_size == 4 and gpu3.steps == 300
    assert gpu2.network == Config.default(2, backend="cpu").network
    # The running backend by default (this test process runs on the CPU); overrides last.
    assert Config.default(2) == Config.default(2, backend="cpu")
    assert Config.default(3, backend="cuda", batch_size=8).batch_size == 8
    with pytest.raises(ValueError, match="backend"):
        Config.default(2, backend="")
