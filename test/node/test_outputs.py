"""Which outputs a frame gets and the messages built for them."""

from __future__ import annotations

import numpy as np
from ros_helpers import frames

from moa_depth_ros.node.outputs import (
    OUTPUT_TOPICS,
    Frame,
    iter_outputs,
    select_outputs,
)
from moa_depth_ros.node.params import PARAMETERS, NodeSettings

DEFAULTS = {spec.name: spec.default for spec in PARAMETERS}


def test_outputs_are_selected_by_flags_and_subscribers() -> None:
    settings = NodeSettings.from_values(DEFAULTS)
    nobody = dict.fromkeys(OUTPUT_TOPICS, 0)
    assert select_outputs(settings, nobody) == frozenset()  # no inference at all
    assert select_outputs(settings, {**nobody, "depth/points": 1}) == {"depth/points"}
    off = NodeSettings.from_values({**DEFAULTS, "publish_points": False})
    assert select_outputs(off, dict.fromkeys(OUTPUT_TOPICS, 1)) == set(OUTPUT_TOPICS) - {
        "depth/points"
    }
    always = NodeSettings.from_values(
        {**DEFAULTS, "skip_when_no_subscribers": False, "publish_colorized": False}
    )
    assert select_outputs(always, nobody) == set(OUTPUT_TOPICS) - {"depth/colorized"}


def test_outputs_need_camera_info_for_cloud_and_a_confidence_map() -> None:
    settings = NodeSettings.from_values({**DEFAULTS, "points_decimation": 4})
    rgb = frames.pattern_rgb(1, 64, 48)
    frame = Frame(rgb, frames.header(1), 1, 0.0)
    depth = np.full((48, 64), 2.0, np.float32)
    everything = frozenset(OUTPUT_TOPICS)
    info = frames.camera_info(1, 64, 48)
    full = dict(iter_outputs(everything, frame, depth, depth / 4, info, settings))
    assert list(full) == list(OUTPUT_TOPICS)  # depth first
    assert (full["depth/points"].height, full["depth/points"].width) == (12, 16)
    assert all(m.header.frame_id == frames.FRAME_ID for m in full.values())
    partial = dict(iter_outputs(everything, frame, depth, None, None, settings))
    assert set(partial) == {"depth/image", "depth/colorized"}


def test_colorized_view_spreads_an_indoor_scene_over_the_colour_map() -> None:
    """Defaults (0.1-10 m) put 0.7/2/4/9 m at levels 34/10/4/0 of 255: almost all dark blue.
    The per-frame range gives the near and far ends of the scene the two ends of the map."""
    from moa_depth_ros.visualize import colorize_depth, display_range

    depth = np.tile(np.linspace(0.7, 4.0, 64, dtype=np.float32), (48, 1))
    fixed = colorize_depth(depth, 0.1, 10.0)
    low, high = display_range([depth], 0.1, 10.0, (2.0, 98.0), stride=4)
    assert 0.69 <= low < 0.8 and 3.7 < high <= 4.01  # every 4th pixel: close to the ends
    auto = colorize_depth(depth, low, high)
    distinct = lambda bgr: len({tuple(p) for p in bgr.reshape(-1, 3)})  # noqa: E731
    assert distinct(auto) > 2 * distinct(fixed)
    assert tuple(auto[0, 0]) != tuple(auto[0, -1])
    settings = NodeSettings.from_values(DEFAULTS)
    assert settings.colorize_auto_range  # the default
