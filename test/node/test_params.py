"""The parameter table: checks and the shipped config/depth.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

from moa_depth_ros.node.params import PARAMETERS, check_values

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = {spec.name: spec.default for spec in PARAMETERS}


def test_parameter_checks() -> None:
    assert check_values(DEFAULTS) is None
    assert "min_depth" in check_values({**DEFAULTS, "min_depth": 10.0, "max_depth": 10.0})
    assert "depth_encoding" in check_values({**DEFAULTS, "depth_encoding": "8UC1"})
    assert "input_transport" in check_values({**DEFAULTS, "input_transport": "theora"})


def test_config_yaml_lists_every_parameter_with_its_default() -> None:
    document = yaml.safe_load((REPO / "config" / "depth.yaml").read_text())
    assert document["/**"]["ros__parameters"] == DEFAULTS


def test_per_camera_parameters_are_checked_like_the_node_wide_ones() -> None:
    cameras = {**DEFAULTS, "cameras": ["left", "right"], "left.anchor_mode": "scale",
               "right.anchor_mode": "none", "left.points_decimation": 2}  # fmt: skip
    assert check_values(cameras) is None
    assert check_values({**cameras, "left.anchor_mode": "bogus"}) == (
        "left.anchor_mode must be one of none, scale, scale_shift, got 'bogus'"
    )
    # The whole anchoring configuration a camera would use goes through the core's check.
    reason = check_values({**cameras, "anchor_smoothing": 1.0})
    assert reason == "anchor smoothing must be in [0, 0.99], got 1.0"
    assert check_values({**DEFAULTS, "anchor_smoothing": 1.0}) is None  # nobody anchors


def test_anchor_bounds_parameters_share_the_core_defaults() -> None:
    from moa_depth_ros.anchoring import AnchorSettings
    from moa_depth_ros.bags.evaluate import EvalSettings

    specs = {spec.name: spec for spec in PARAMETERS}
    core, bag = AnchorSettings(), EvalSettings("image", "gt", pred_topic="pred")
    for name in ("max_scale_factor", "max_scale_change", "min_points", "max_residual"):
        assert (
            specs[f"anchor_{name}"].default == getattr(core, name) == getattr(bag, f"anchor_{name}")
        )
    assert specs["anchor_max_scale_factor"].float_range == (1.0, 1000.0)
    assert specs["anchor_max_points"].read_only and specs["anchor_max_points"].default == 100_000
