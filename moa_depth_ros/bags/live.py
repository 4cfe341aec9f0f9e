"""Play a bag into a live ROS 2 graph and record live topics to a bag, with rclpy only.

For machines without ``ros2 bag`` (no rosbag2_py or ros2cli on PyPI). Both pass serialized CDR
straight through: rclpy's ``Publisher.publish`` accepts ``bytes`` and hands them to
``publish_raw`` (rclpy/publisher.py), and ``create_subscription(..., raw=True)`` delivers the
received bytes, so no message is ever deserialized. The publishers and subscriptions still
need the message classes for their type support; they are imported from ``<package>.msg``.

rclpy is imported inside the functions, so the rest of the bag tools work without ROS.
"""

from __future__ import annotations

import importlib
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from moa_depth_ros.bags.io import BagReader, open_writer

__all__ = ["LiveError", "PlayStats", "RecordStats", "message_class", "play_bag", "record_topics"]

#: Publisher / subscription history depth: deep enough that a reliable replay of a few seconds
#: of camera frames is not cut short while a slow subscriber catches up.
QUEUE_DEPTH = 100
#: How often the recorder looks for publishers of topics it has not subscribed yet (s).
DISCOVERY_PERIOD_S = 0.25
#: How long the player waits, at the end, for reliable subscribers to acknowledge (s).
ACK_TIMEOUT_S = 5.0


class LiveError(RuntimeError):
    """A play/record problem in the ROS graph (missing message package, no publishers, ...)."""


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Name`` (``importlib``, no rosidl_runtime_py)."""
    package, kind, name = (msgtype.split("/") + ["", ""])[:3]
    if not (package and kind and name):
        raise LiveError(f"'{msgtype}' is not a ROS 2 message type name (package/msg/Name)")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise LiveError(
            f"message type {msgtype} is not importable ({exc}); install its package "
            f"(ros-{package.replace('_', '-')} wheel) or source the ROS workspace that has it"
        ) from None


def _absolute(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


@contextmanager
def _ros_node(name: str) -> Iterator[Any]:
    """An rclpy node in its own context; SIGTERM stops like Ctrl-C (the bag gets closed)."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    node = rclpy.create_node(name, context=context)
    try:
        yield node
    finally:
        signal.signal(signal.SIGTERM, previous)
        node.destroy_node()
        if context.ok():
            context.shutdown()


def _qos(reliability: str, durability: str = "volatile") -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=QUEUE_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE
        if reliability == "reliable"
        else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL
        if durability == "transient_local"
        else DurabilityPolicy.VOLATILE,
    )


# ----------------------------------------------------------------------------------- play


@dataclass
class PlayStats:
    published: int = 0
    passes: int = 0


def play_bag(
    bag: str | Path,
    rate: float = 1.0,
    loop: bool = False,
    topics: Sequence[str] | None = None,
    qos: Literal["reliable", "best_effort"] = "reliable",
    wait_subscribers: float = 0.0,
    delay: float = 0.0,
    progress: bool = True,
) -> PlayStats:
    """Publish the bag's messages with their recorded relative timing divided by ``rate``.

    Args:
        topics: play only these (all when None); each must be in the bag.
        wait_subscribers: wait up to this long (s) until every played topic has a subscriber,
            so a recorder or node started just before does not miss the first messages.
        delay: extra pause (s) after that, before the first message (discovery settling).

    Timing follows bag (receive) time, as ``ros2 bag play`` does; headers are untouched.
    Ctrl-C / SIGTERM stops cleanly.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    import rclpy  # noqa: F401 - fail before opening the bag when there is no ROS
    from rclpy.duration import Duration

    from moa_depth_ros.progress import progress_bar

    stats = PlayStats()
    with BagReader(bag) as reader, _ros_node("moa_depth_bag_player") as node:
        present = reader.topics()
        chosen = list(present) if topics is None else [_absolute(t) for t in topics]
        for topic in chosen:
            reader.require_topic(topic)
        profile = _qos(qos)
        publishers = {
            topic: node.create_publisher(message_class(present[topic].msgtype), topic, profile)
            for topic in chosen
        }
        total = sum(present[t].count for t in chosen)
        try:  # Ctrl-C during the wait, the delay or the replay stops cleanly
            deadline = time.monotonic() + wait_subscribers
            while time.monotonic() < deadline and not all(
                p.get_subscription_count() for p in publishers.values()
            ):
                time.sleep(0.05)
            time.sleep(delay)
            with progress_bar(
                total=None if loop else total, desc="play", unit="msg", disable=not progress
            ) as bar:
                while True:
                    stats.passes += 1
                    start_wall, start_bag = time.monotonic(), None
                    for message in reader.messages(chosen):
                        start_bag = message.timestamp_ns if start_bag is None else start_bag
                        due = start_wall + (message.timestamp_ns - start_bag) / 1e9 / rate
                        pause = due - time.monotonic()
                        if pause > 0:
                            time.sleep(pause)
                        publishers[message.topic].publish(reader.to_cdr(message))
                        stats.published += 1
                        bar.update()
                    if not loop or not node.context.ok():
                        break
            ack_timeout = Duration(seconds=ACK_TIMEOUT_S)
            for publisher in publishers.values():
                publisher.wait_for_all_acked(ack_timeout)
        except KeyboardInterrupt:
            pass
    return stats


# --------------------------------------------------------------------------------- record


@dataclass
class RecordStats:
    counts: dict[str, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    reliability: dict[str, str] = field(default_factory=dict)  # of each subscription
    missing: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _subscription_qos(node: Any, topic: str) -> Any:
    """Match the publishers, like rosbag2: reliable only if every publisher is reliable (a
    reliable subscription cannot receive from a best-effort publisher), transient_local only
    if every publisher is (to receive latched messages)."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    offered = [info.qos_profile for info in node.get_publishers_info_by_topic(topic)]
    reliable = bool(offered) and all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
    latched = bool(offered) and all(
        q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered
    )
    return _qos(
        "reliable" if reliable else "best_effort",
        "transient_local" if latched else "volatile",
    )


def record_topics(
    topics: Sequence[str],
    out: str | Path,
    duration: float | None = None,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    storage: Literal["mcap", "sqlite3"] = "mcap",
    progress: bool = True,
) -> RecordStats:
    """Record ``topics`` into a new bag until a limit is reached or Ctrl-C / SIGTERM.

    Topics are subscribed as soon as a publisher for them appears in the graph (type and QoS
    taken from it), so recording can start before the publishers. Limits: ``duration``
    seconds from the start, ``max_messages`` in total, or ``idle_timeout`` seconds without a
    message once the first has arrived. Each message is stored with its receive time.
    """
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from moa_depth_ros.progress import progress_bar

    wanted = list(dict.fromkeys(_absolute(t) for t in topics))
    if not wanted:
        raise ValueError("record needs at least one topic")
    stats = RecordStats(counts=dict.fromkeys(wanted, 0))
    writer = open_writer(out, storage)
    subscriptions: dict[str, Any] = {}
    last_message = [0.0]
    try:
        with (
            _ros_node("moa_depth_bag_recorder") as node,
            progress_bar(
                total=max_messages, desc="record", unit="msg", disable=not progress
            ) as bar,
        ):
            executor = SingleThreadedExecutor(context=node.context)
            executor.add_node(node)
            clock = node.get_clock()

            def subscribe(topic: str, msgtype: str) -> None:
                connection = writer.add_topic(topic, msgtype)

                def on_message(data: bytes) -> None:
                    writer.write(connection, clock.now().nanoseconds, data)
                    stats.counts[topic] += 1
                    last_message[0] = time.monotonic()
                    bar.update()

                qos = _subscription_qos(node, topic)
                subscriptions[topic] = node.create_subscription(
                    message_class(msgtype), topic, on_message, qos, raw=True
                )
                stats.types[topic] = msgtype
                stats.reliability[topic] = qos.reliability.name.lower()

            start = next_discovery = time.monotonic()
            try:
                while node.context.ok():
                    now = time.monotonic()
                    if now >= next_discovery and len(subscriptions) < len(wanted):
                        graph = dict(node.get_topic_names_and_types())
                        for topic in wanted:
                            # A topic is listed as soon as anyone *subscribes* to it; wait for
                            # a publisher, whose QoS the subscription has to match.
                            if (
                                topic not in subscriptions
                                and graph.get(topic)
                                and node.count_publishers(topic)
                            ):
                                subscribe(topic, graph[topic][0])
                        next_discovery = now + DISCOVERY_PERIOD_S
                    if duration is not None and now - start >= duration:
                        break
                    if max_messages is not None and stats.total >= max_messages:
                        break
                    if (
                        idle_timeout is not None
                        and last_message[0]
                        and (now - last_message[0] >= idle_timeout)
                    ):
                        break
                    executor.spin_once(timeout_sec=0.05)
            except (KeyboardInterrupt, ExternalShutdownException):
                pass
            finally:
                executor.shutdown()
    finally:
        writer.close()
    stats.missing = [t for t in wanted if t not in subscriptions]
    return stats
