"""In-process node tests: each test gets an rclpy context of its own (``context``, on a random
domain so that tests running side by side never see each other's traffic) and builds depth
nodes in it with ``make_node(**parameters)``."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from rclpy.context import Context

    from moa_depth_ros.node.depth_node import DepthNode


@pytest.fixture
def context() -> Iterator[Context]:
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, domain_id=random.randint(100, 200))
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)


@pytest.fixture
def make_node(context: Context) -> Callable[..., DepthNode]:
    """``make_node(**parameters)``: a DepthNode in the test's context with those parameter
    overrides (dotted names such as ``left.anchor_mode`` as keyword arguments via ``**{}``);
    the test destroys it."""
    from rclpy.parameter import Parameter

    from moa_depth_ros.node.depth_node import DepthNode

    def make(**parameters: Any) -> DepthNode:
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        return DepthNode(context=context, parameter_overrides=overrides)

    return make
