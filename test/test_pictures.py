"""Pictures for people: the depth colour bar reads in metres and matches the depth colours;
report grids carry the colour bars."""

from __future__ import annotations

import numpy as np
import pytest

from moa_depth_ros.evaluation.report import ERROR_MAP_MAX, GridSample, picture_grid
from moa_depth_ros.visualize import colorize_depth, depth_colorbar, depth_colorbar_ticks


def test_colorbar_ticks_sit_where_the_colour_map_puts_their_depth() -> None:
    ticks = depth_colorbar_ticks(0.5, 8.0, width=400)
    values = [value for _, value in ticks]
    assert values[0] == 0.5 and values[-1] == 8.0  # both ends labelled
    assert values == sorted(values) and len(values) >= 4
    xs = [x for x, _ in ticks]
    assert xs[0] == 0 and xs[-1] == 399 and min(np.diff(xs)) >= 40
    # Inverse depth is linear across the bar: 1 m sits at (1/0.5 - 1/1) / (1/0.5 - 1/8) of it.
    one_metre = dict((v, x) for x, v in ticks)[1]
    assert one_metre == round((2.0 - 1.0) / (2.0 - 0.125) * 399)
    bar = depth_colorbar(0.5, 8.0, width=400)
    for x, value in ticks:
        expected = colorize_depth(np.array([[value]], np.float32), 0.5, 8.0)[0, 0, ::-1]
        assert np.abs(bar[0, x].astype(int) - expected).max() <= 8, (x, value)


@pytest.mark.parametrize(("low", "high"), [(1e-3, 10.0), (0.1, 80.0), (2.0, 2.5)])
def test_colorbar_ticks_never_crowd_or_leave_the_range(low: float, high: float) -> None:
    ticks = depth_colorbar_ticks(low, high, width=300)
    assert all(low <= value <= high for _, value in ticks)
    assert ticks[0] == (0, low) and ticks[-1][1] == high
    assert all(b - a >= 40 for (a, _), (b, _) in zip(ticks, ticks[1:], strict=False))
    with pytest.raises(ValueError, match="depth_colorbar"):
        depth_colorbar_ticks(high, low, width=300)


def test_report_grid_ends_with_the_colour_bars() -> None:
    gt = np.linspace(1.0, 4.0, 40 * 60, dtype=np.float32).reshape(40, 60)
    sample = GridSample("frame", gt, gt * 1.2, np.zeros((40, 60, 3), np.uint8))
    grid = picture_grid([sample], 0.1, 10.0, [np.ones_like(gt, bool)])
    legend = grid[-34:]
    assert grid.shape[1] == 4 * 60
    depth_strip, error_strip = legend[2, 60 : 3 * 60], legend[2, 3 * 60 :]
    # The depth bar is coloured (TURBO), the error bar runs black → yellow (INFERNO).
    assert (depth_strip != 255).any(axis=1).sum() > 100
    coloured = error_strip[(error_strip != 255).any(axis=1)]
    assert coloured[0].sum() < 60 and coloured[-1][0] > 200 and ERROR_MAP_MAX == 0.5
