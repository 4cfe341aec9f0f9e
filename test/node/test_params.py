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
