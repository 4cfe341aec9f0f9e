"""Processes and an in-process subscriber for the multi-process node tests.

* ``ros_environment``: the environment every process of one test run shares: a random
  ROS_DOMAIN_ID and localhost-only discovery, so parallel runs and other machines never meet.
* ``NodeProcess`` / ``PublisherProcess``: the depth node and the image publisher as child
  processes (logs go to files the tests read).
* ``RosProbe``: the test process's own rclpy node: collects outputs by stamp, reads
  /diagnostics, sets parameters through the node's SetParameters service.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from moa_depth_ros.msgs.stamps import stamp_to_ns
from tools.ros_graph import private_graph_environment

REPO = Path(__file__).resolve().parents[2]
PUBLISHER_SCRIPT = Path(__file__).resolve().parent / "image_publisher.py"

OUTPUT_TYPES = {
    "depth/image": Image,
    "depth/camera_info": CameraInfo,
    "depth/points": PointCloud2,
    "depth/colorized": Image,
    "depth/confidence": Image,
}


def ros_environment(log_dir: Path, domain_id: int | None = None) -> dict[str, str]:
    """An isolated ROS graph (random domain, localhost only) and quiet CPUs."""
    # Several processes share 2 cores: one intra-op thread each keeps them from competing.
    return private_graph_environment(
        log_dir,
        domain_id,
        pythonpath=[REPO],
        RCUTILS_LOGGING_BUFFERED_STREAM="0",
        OMP_NUM_THREADS="1",
    )


@contextlib.contextmanager
def localhost_discovery() -> Iterator[None]:
    """This (test) process discovers like its children: localhost only, read from the
    environment by the rmw when the probe's rclpy context starts."""
    saved = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
        else:
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = saved


class NodeProcess:
    """``python -m moa_depth_ros.node`` as a child process with its output in a log file."""

    def __init__(
        self,
        name: str,
        namespace: str,
        parameters: dict[str, Any],
        env: dict[str, str],
        log_path: Path,
        extra_ros_args: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.log_path = log_path
        ros_args = ["-r", f"__node:={name}", "-r", f"__ns:={namespace}", *extra_ros_args]
        for key, value in parameters.items():
            ros_args += ["-p", f"{key}:={_param_text(value)}"]
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moa_depth_ros.node", "--ros-args", *ros_args],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def full_name(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


class PublisherProcess:
    """The image publisher child process (see image_publisher.py), driven by JSON commands."""

    def __init__(
        self,
        env: dict[str, str],
        image_topic: str,
        info_topic: str,
        log_path: Path,
        transport: str = "raw",
        reliability: str = "reliable",
        depth: int = 1,
        frame_id: str | None = None,
    ) -> None:
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(PUBLISHER_SCRIPT),
                "--image-topic",
                image_topic,
                "--info-topic",
                info_topic,
                "--transport",
                transport,
                "--reliability",
                reliability,
                "--depth",
                str(depth),
                *(["--frame-id", frame_id] if frame_id else []),
            ],
            env=env,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._lock = threading.Lock()

    def command(self, op: str, timeout: float = 60.0, **kwargs: Any) -> dict[str, Any]:
        """Send one command and return its JSON reply."""
        with self._lock:
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
            self.process.stdin.flush()
            reply: list[str] = []
            reader = threading.Thread(
                target=lambda: reply.append(self.process.stdout.readline()), daemon=True
            )
            reader.start()
            reader.join(timeout)
            if not reply or not reply[0]:
                raise RuntimeError(
                    f"publisher gave no reply to {op!r} within {timeout} s; its log:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            return json.loads(reply[0])

    def frames(self, stamps: list[int], width: int, height: int, **kwargs: Any) -> None:
        reply = self.command("frames", stamps=stamps, width=width, height=height, **kwargs)
        assert reply["ok"], reply

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(RuntimeError, BrokenPipeError, OSError):
                self.command("exit", timeout=0.1)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class Diagnostic:
    """One DiagnosticStatus, with its values as a dict."""

    def __init__(self, status: Any, received: float) -> None:
        self.level = (
            int.from_bytes(status.level, "little")
            if isinstance(status.level, bytes)
            else int(status.level)
        )
        self.name = status.name
        self.message = status.message
        self.hardware_id = status.hardware_id
        self.values = {kv.key: kv.value for kv in status.values}
        self.received = received

    def int(self, key: str) -> int:
        return int(self.values[key])

    def float(self, key: str) -> float | None:
        text = self.values[key]
        return float(text) if text else None


class RosProbe:
    """The test process's rclpy node in its own context, spun in a background thread."""

    RELIABLE = QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
    )

    def __init__(self, domain_id: int) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # topic → stamp_ns → list of (message, monotonic receipt time)
        self._messages: dict[str, dict[int, list[tuple[Any, float]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._diagnostics: dict[str, list[Diagnostic]] = defaultdict(list)
        self._output_subscriptions: dict[str, list[Any]] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        # spin() raises once close() shuts the context down under it.
        with contextlib.suppress(Exception):
            self.executor.spin()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # ------------------------------------------------------------------ outputs

    def subscribe_outputs(self, namespace: str, topics: Iterable[str] = OUTPUT_TYPES) -> None:
        """Subscribe to the node's outputs under ``namespace`` (idempotent per namespace)."""
        if namespace in self._output_subscriptions:
            return
        subs = []
        for topic in topics:
            full = f"{namespace.rstrip('/')}/{topic}"
            subs.append(
                self.node.create_subscription(
                    OUTPUT_TYPES[topic], full, self._collector(full), self.RELIABLE
                )
            )
        self._output_subscriptions[namespace] = subs

    def unsubscribe_outputs(self, namespace: str) -> None:
        for sub in self._output_subscriptions.pop(namespace, []):
            self.node.destroy_subscription(sub)

    def outputs_matched(self, namespace: str) -> bool:
        subs = self._output_subscriptions.get(namespace, [])
        return bool(subs) and all(sub.get_publisher_count() > 0 for sub in subs)

    def _collector(self, topic: str) -> Callable[[Any], None]:
        def collect(msg: Any) -> None:
            now = time.monotonic()
            with self._changed:
                self._messages[topic][stamp_to_ns(msg.header.stamp)].append((msg, now))
                self._changed.notify_all()

        return collect

    def messages(self, topic: str, stamp_ns: int) -> list[Any]:
        with self._lock:
            return [m for m, _ in self._messages[topic].get(stamp_ns, [])]

    def stamps(self, topic: str) -> set[int]:
        with self._lock:
            return set(self._messages[topic])

    def wait_until(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Poll ``predicate`` (called without the lock) until truthy; its value, or None."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value or time.monotonic() >= deadline:
                return value
            with self._changed:
                self._changed.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def first_message(self, topic: str, stamps: Iterable[int], timeout: float) -> Any:
        """The first message on ``topic`` carrying one of ``stamps`` (None on timeout)."""
        stamps = list(stamps)

        def find() -> Any:
            for stamp in stamps:
                found = self.messages(topic, stamp)
                if found:
                    return found[0]
            return None

        return self.wait_until(find, timeout)

    # ------------------------------------------------------------------ diagnostics

    def _on_diag(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()
        with self._changed:
            for status in msg.status:
                self._diagnostics[status.name].append(Diagnostic(status, now))
            self._changed.notify_all()

    def diagnostic(
        self,
        node_name: str,
        predicate: Callable[[Diagnostic], bool] = lambda d: True,
        timeout: float = 10.0,
        after: float | None = None,
    ) -> Diagnostic | None:
        """The newest status of ``node_name`` received after ``after`` (monotonic) that
        satisfies ``predicate``, waiting up to ``timeout``."""
        name = f"{node_name}: depth estimation"

        def find() -> Diagnostic | None:
            with self._lock:
                for diag in reversed(self._diagnostics.get(name, [])):
                    if after is not None and diag.received <= after:
                        break
                    if predicate(diag):
                        return diag
            return None

        return self.wait_until(find, timeout)

    # ------------------------------------------------------------------ parameters

    def set_parameters(
        self, node_full_name: str, values: dict[str, Any], timeout: float = 10.0
    ) -> list[SetParametersResult]:
        """Call ``<node>/set_parameters`` (one result per parameter, in order)."""
        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        )
        response = self._call(SetParameters, f"{node_full_name}/set_parameters", request, timeout)
        return list(response.results)

    def get_state(self, node_full_name: str, timeout: float = 2.0) -> str:
        """The node's lifecycle state label (``<node>/get_state``)."""
        response = self._call(GetState, f"{node_full_name}/get_state", GetState.Request(), timeout)
        return str(response.current_state.label)

    def change_state(self, node_full_name: str, transition_id: int, timeout: float = 60.0) -> bool:
        """Request a lifecycle transition (``Transition.TRANSITION_*``); whether it succeeded."""
        request = ChangeState.Request(transition=Transition(id=transition_id))
        response = self._call(ChangeState, f"{node_full_name}/change_state", request, timeout)
        return bool(response.success)

    def _call(self, srv_type: Any, name: str, request: Any, timeout: float) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} is not available")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not future.done():
                raise TimeoutError(f"service {name} did not answer within {timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)
