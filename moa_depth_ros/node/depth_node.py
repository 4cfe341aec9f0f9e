"""The depth node: camera images in, metric depth, camera_info, point clouds out (lifecycle).

Data flow (docs/architecture.md): subscription callbacks only decode and put the frame into
its camera's slot (``FrameSlots``); one ``InferenceWorker`` thread takes the newest frame of
every camera that has one, runs them through ``DepthEstimator.predict_batch`` in one batch
and publishes each camera's outputs (``outputs``) with its own header and intrinsics. One
camera by default; several with the ``cameras`` parameter (``camera.Camera``). Counters and
timings go to each camera's ``NodeStats`` and out on /diagnostics once a second.

Threading: inference runs in the worker thread, never in an executor callback, so a
``SingleThreadedExecutor`` keeps parameter and lifecycle services responsive while the model
runs. A second executor thread would not decode images any faster (Python's GIL) and
``MultiThreadedExecutor`` costs more per callback.

Lifecycle: configure loads the model, creates the publishers and subscribes to camera_info (a
bad checkpoint gives FAILURE with the reason logged); activate subscribes to images and starts
the worker, deactivate undoes that; cleanup drops the model. With ``autostart`` (default)
``run_depth_node`` configures and activates by itself and exits non-zero when that fails.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from moa_depth_ros.anchoring import apply_anchor
from moa_depth_ros.errors import one_line
from moa_depth_ros.geometry import CameraIntrinsics, intrinsics_for_image
from moa_depth_ros.msgs.camera_info import intrinsics_from_camera_info_msg
from moa_depth_ros.msgs.image_codec import compressed_msg_to_rgb, image_msg_to_rgb
from moa_depth_ros.msgs.stamps import stamp_to_ns
from moa_depth_ros.node import log_bridge
from moa_depth_ros.node.anchors import CameraAnchoring
from moa_depth_ros.node.camera import PER_CAMERA_PARAMETERS, Camera, camera_names
from moa_depth_ros.node.diagnostics import (
    assess,
    assess_anchoring,
    diagnostic_array,
    diagnostic_values,
)
from moa_depth_ros.node.outputs import (
    OUTPUT_TOPICS,
    Frame,
    iter_outputs,
    select_outputs,
)
from moa_depth_ros.node.params import (
    PARAMETERS,
    PARAMETERS_BY_NAME,
    NodeSettings,
    check_model_inputs,
    check_values,
    parameter_descriptor,
    qos_profile,
)
from moa_depth_ros.node.slots import FrameSlots
from moa_depth_ros.node.stats import NodeStats
from moa_depth_ros.node.time_sync import ApproximateTimeSync
from moa_depth_ros.node.worker import InferenceWorker

__all__ = ["DepthNode", "run_depth_node"]

NODE_NAME = "depth_node"
#: Rate limit (s) of the warnings about bad input, failing inference and missing camera_info.
WARN_PERIOD_S = 5.0
#: How many received camera_infos the stamp matcher keeps: 2 s at 30 Hz, so a camera_info that
#: arrives after its image can still be found once inference is done, even with a slow model.
CAMERA_INFO_BUFFER = 60
CAMERA_INFO_QOS_DEPTH = 5
DIAGNOSTICS_PERIOD_S = 1.0
DIAGNOSTICS_QOS_DEPTH = 10
#: lifecycle_msgs/Transition ids → labels ("configure", "active_shutdown", ...).
_TRANSITION_NAMES = {
    value: name.removeprefix("TRANSITION_").lower()
    for name, value in vars(Transition).items()
    if name.startswith("TRANSITION_") and isinstance(value, int)
}
#: Parameters whose change needs a fresh ApproximateTimeSync.
_SYNC_PARAMETERS = frozenset({"sync_slop"})


class DepthNode(LifecycleNode):
    """Lifecycle node publishing metric depth for a monocular camera (see module doc)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))
        self._values: dict[str, Any] = {
            spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS
        }
        names = camera_names(self._values["cameras"])
        for name in names if names != [""] else []:
            for parameter in PER_CAMERA_PARAMETERS:  # initialized from the node-wide value
                spec = PARAMETERS_BY_NAME[parameter]
                full = f"{name}.{parameter}"
                self.declare_parameter(full, self._values[parameter], parameter_descriptor(spec))
                self._values[full] = self.get_parameter(full).value
        self._settings = NodeSettings.from_values(self._values)
        #: Node-wide events (transitions, failures outside a camera); the one camera's own
        #: statistics when there is a single camera, so its diagnostics read as before.
        self._stats = NodeStats()
        self._cameras: dict[str, Camera] = {
            name: Camera(
                name,
                ApproximateTimeSync(self._settings.sync_slop, CAMERA_INFO_BUFFER),
                self._stats if len(names) == 1 else NodeStats(),
                self._settings,
            )
            for name in names
        }
        for camera in self._cameras.values():
            camera.settings_from(self._settings, self._values)
        #: Batch sizes of the forward passes (multi-camera diagnostics).
        self._batch_sizes: dict[int, int] = {}
        self._slots: FrameSlots[Frame] = FrameSlots(
            self._cameras, self._settings.wait_for_fresh_frame
        )
        self._worker = InferenceWorker(self._slots, self._process_batch, self._on_frame_error)
        self._estimator: Any = None  # DepthEstimator once configured
        self._device = ""
        self._model_type = ""
        self._backend = ""
        self._precision = ""
        self._configure_error = ""
        self._state = "unconfigured"
        # /diagnostics is not a lifecycle publisher: an unconfigured node must report ERROR.
        self._diagnostics_publisher = self.create_publisher(
            DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS_DEPTH
        )
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Requests for transitions the current state does not have are refused here, with one
        # rate-limited warning, before rcl logs a WARN and rclpy an ERROR for each one.
        self._rclpy_change_state = self._service_change_state.callback
        self._service_change_state.callback = self._on_change_state
        #: Set by the shutdown transition: the process then ends (run_depth_node).
        self.finished = threading.Event()
        # The backends' hints (Python logging) go through this node's ROS logger.
        self._remove_log_bridge = log_bridge.install(self.get_logger())

    @property
    def autostart(self) -> bool:
        return bool(self._values["autostart"])

    # ------------------------------------------------------------------ lifecycle transitions

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        reason = check_values(self._values)
        if reason is None:
            try:
                self._estimator = self._load_estimator()
                self._configure_entities()
            except Exception as exc:  # noqa: BLE001 - any failure is a FAILURE, not a crash
                reason = one_line(exc)
                self._release_configuration()
        if reason is not None:
            # One line in the log and on /diagnostics, whatever failed (rclpy itself would
            # turn an exception here into ERROR without a word).
            self._configure_error = reason
            self.get_logger().error(f"configure failed: {reason}")
            return TransitionCallbackReturn.FAILURE
        self._configure_error = ""
        self.get_logger().info(
            f"configured: {self._model_type} on {self._backend}, {self._precision}, "
            f"{_model_source(self._values)}, camera_info from "
            + ", ".join(f"'{c.info_subscription.topic_name}'" for c in self._cameras.values())
        )
        return self._finish(super().on_configure(state), "inactive")

    def _configure_entities(self) -> None:
        """After the model loaded: publishers, camera_info and anchor subscriptions."""
        estimator = self._estimator
        modes = {
            camera.parameter("anchor_mode") if camera.name else "anchor_mode":
            camera.settings.anchor_mode
            for camera in self._cameras.values()
        }  # fmt: skip
        reason = check_model_inputs(estimator.output_kind, estimator.takes_depth_prompt, modes)
        if reason is not None:
            raise ValueError(reason)
        self._device = str(self._estimator.device)
        self._model_type = str(self._estimator.model_type)
        backend = self._estimator.backend
        self._backend = f"{backend.name} ({backend.provider})"
        self._precision = backend.precision
        qos = qos_profile(self._values["output_qos_reliability"], self._values["output_qos_depth"])
        message_types = {
            "depth/image": Image,
            "depth/camera_info": CameraInfo,
            "depth/points": PointCloud2,
            "depth/colorized": Image,
            "depth/confidence": Image,
        }
        info_qos = qos_profile(self._values["input_qos_reliability"], CAMERA_INFO_QOS_DEPTH)
        for camera in self._cameras.values():
            camera.publishers = {
                topic: self.create_lifecycle_publisher(
                    message_types[topic], camera.topic(topic), qos
                )
                for topic in OUTPUT_TOPICS
            }
            # camera_info is subscribed from configure on, not activate: it only fills the
            # stamp matcher, and a (re-)activated node then has intrinsics for its first frames
            # instead of publishing them without clouds while the subscription is discovered.
            camera.info_subscription = self.create_subscription(
                CameraInfo, camera.topic("camera_info"), self._camera_info_callback(camera),
                info_qos,
            )  # fmt: skip
            if camera.settings.anchor_mode != "none" or estimator.takes_depth_prompt:
                self._subscribe_anchors(camera, info_qos)

    def _subscribe_anchors(self, camera: Camera, qos: Any) -> None:
        """Metric anchoring inputs: like camera_info, they only fill a stamp buffer, so they
        are subscribed from configure on. The callbacks only queue; the camera's anchoring
        decodes on its own thread and logs its problems, one line per kind per WARN_PERIOD_S."""
        logger = self.get_logger()
        output = self.resolve_topic_name(camera.topic("depth/image"))

        def log(text: str) -> None:
            logger.warning(f"anchoring '{output}': {text}")

        estimator = self._estimator
        camera.anchoring = CameraAnchoring(
            camera.settings,
            log,
            log_period=WARN_PERIOD_S,
            space="inverse_depth" if estimator.output_kind == "relative" else "depth",
            prompt=estimator.takes_depth_prompt,
        )
        for relative, message_type, receive in (
            ("metric_depth", Image, camera.anchoring.receive_depth),
            ("metric_points", PointCloud2, camera.anchoring.receive_points),
        ):
            camera.anchor_subscriptions.append(
                self.create_subscription(message_type, camera.topic(relative), receive, qos)
            )
        self.get_logger().info(
            f"anchoring '{camera.topic('depth/image')}' ({camera.anchoring.mode}) to "
            + " and ".join(f"'{s.topic_name}'" for s in camera.anchor_subscriptions)
        )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        input_qos = qos_profile(
            self._values["input_qos_reliability"], self._values["input_qos_depth"]
        )
        for camera in self._cameras.values():
            if self._values["input_transport"] == "compressed":
                topic = self.compressed_topic(camera)
                camera.image_subscription = self.create_subscription(
                    CompressedImage,
                    topic,
                    self._image_callback(camera, topic, compressed_msg_to_rgb),
                    input_qos,
                )
            else:
                topic = camera.topic("image")
                camera.image_subscription = self.create_subscription(
                    Image, topic, self._image_callback(camera, topic, image_msg_to_rgb), input_qos
                )
            camera.stats.restart_windows()
        self._stats.restart_windows()
        self._worker.start()
        self.get_logger().info(
            "active: subscribed to "
            + ", ".join(f"'{c.image_subscription.topic_name}'" for c in self._cameras.values())
        )
        return self._finish(super().on_activate(state), "active")

    def compressed_topic(self, camera: Camera) -> str:
        """``<resolved 'image'>/compressed``, as image_transport names it: remapping ``image``
        moves the compressed input too. An explicit remap of ``image/compressed`` wins."""
        explicit = self.resolve_topic_name(camera.topic("image/compressed"))
        if explicit != self.resolve_topic_name(camera.topic("image/compressed"), only_expand=True):
            return explicit
        return self.resolve_topic_name(camera.topic("image")) + "/compressed"

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_images()
        return self._finish(super().on_deactivate(state), "inactive")

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_configuration()
        return self._finish(super().on_cleanup(state), "unconfigured")

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        result = self._finish(super().on_shutdown(state), "finalized")
        self.finished.set()  # finalized is final: nothing is left to do but exit
        return result

    def _on_change_state(self, request: Any, response: Any) -> Any:
        transition = request.transition
        available = self._state_machine.available_transitions
        if not any(t[0] == transition.id or (transition.label and t[1] == transition.label)
                   for t in available):  # fmt: skip
            name = transition.label or _TRANSITION_NAMES.get(transition.id, str(transition.id))
            reason = (
                f"refused lifecycle transition '{name}' from state '{self._state}' "
                f"(available: {', '.join(t[1] for t in available) or 'none'})"
            )
            self._stats.transition_refused(reason)
            self.get_logger().warning(reason, throttle_duration_sec=WARN_PERIOD_S)
            response.success = False
            return response
        return self._rclpy_change_state(request, response)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return self._finish(super().on_error(state), "unconfigured")

    def _finish(self, result: TransitionCallbackReturn, new_state: str) -> TransitionCallbackReturn:
        if result == TransitionCallbackReturn.SUCCESS:
            self._state = new_state
        return result

    def close(self) -> None:
        """Stop the worker and release model and entities (idempotent; used at exit)."""
        self._stop_images()
        self._release_configuration()

    def destroy_node(self) -> None:
        self._remove_log_bridge()
        super().destroy_node()

    def _stop_images(self) -> None:
        """Undo activate: no more images, worker stopped (after its current batch)."""
        for camera in self._cameras.values():
            if camera.image_subscription is not None:
                self.destroy_subscription(camera.image_subscription)
                camera.image_subscription = None
        if not self._worker.stop():
            self.get_logger().warning("inference worker did not stop within its timeout")

    def _release_configuration(self) -> None:
        """Undo configure: publishers, camera_info, model."""
        for camera in self._cameras.values():
            for publisher in camera.publishers.values():
                self.destroy_lifecycle_publisher(publisher)
            camera.publishers = {}
            if camera.info_subscription is not None:
                self.destroy_subscription(camera.info_subscription)
                camera.info_subscription = None
            for subscription in camera.anchor_subscriptions:
                self.destroy_subscription(subscription)
            if camera.anchoring is not None:
                camera.anchoring.close()
            camera.anchor_subscriptions, camera.anchoring = [], None
            camera.sync.clear()
        self._estimator = None

    def _load_estimator(self) -> Any:
        # Imported here: torch and open_clip take seconds to import, and a node that only
        # reports "unconfigured" (or a --help) should not pay for them.
        from moa_depth_ros.inference.load import load_estimator
        from moa_depth_ros.inference.options import InferenceOptions

        values = self._values
        return load_estimator(
            InferenceOptions(
                checkpoint=values["checkpoint"],
                clip_pretrained=values["clip_pretrained"],
                device=values["device"],
                precision=values["precision"],
                backend=values["backend"],
                onnx_file=values["onnx_file"] or None,
                provider=values["onnx_provider"],
                threads=values["onnx_threads"],
                cache_dir=values["onnx_cache_dir"] or None,
                verify=values["verify_checkpoint"],
            )
        )

    # ------------------------------------------------------------------ parameters

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        # rclpy has already rejected read-only parameters, wrong types and out-of-range numbers.
        values = dict(self._values)
        values.update({parameter.name: parameter.value for parameter in parameters})
        reason = check_values(values)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
        changed = {p.name for p in parameters if self._values.get(p.name) != p.value}
        self._values = values
        # One assignment each: the worker reads either the old or the new settings, never a mix.
        self._settings = NodeSettings.from_values(values)
        for camera in self._cameras.values():
            if changed & _SYNC_PARAMETERS:
                # Forgets buffered camera_infos; the stream refills it within a few frames.
                camera.sync = ApproximateTimeSync(values["sync_slop"], CAMERA_INFO_BUFFER)
            camera.settings_from(self._settings, values)
        self._slots.prefer_fresh = self._settings.wait_for_fresh_frame
        if changed:
            self.get_logger().info(
                "parameters changed: " + ", ".join(f"{n}={values[n]}" for n in sorted(changed))
            )
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks

    def _image_callback(
        self, camera: Camera, topic: str, decode: Callable[[Any], np.ndarray]
    ) -> Callable[[Any], None]:
        stats = camera.stats

        def on_image(msg: Any) -> None:
            received = time.monotonic()
            stats.message_received()
            if camera.settings.skip_when_no_subscribers and not camera.anyone_subscribed():
                stats.frame_skipped()  # not even decoded: nobody would see the result
                return
            try:
                rgb = decode(msg)
                stamp_ns = stamp_to_ns(msg.header.stamp)
                # Matched now, while the camera_info is surely still buffered; retried after
                # inference for a camera_info that arrives after its image.
                camera_info = camera.sync.match(stamp_ns)
                frame = Frame(rgb, msg.header, stamp_ns, received, camera_info)
            except Exception as exc:  # noqa: BLE001 - bad input must never kill the node
                self._reject(camera, topic, one_line(exc))
                return
            if self._slots.put(camera.name, frame):
                stats.frame_dropped()

        return on_image

    def _camera_info_callback(self, camera: Camera) -> Callable[[CameraInfo], None]:
        def on_camera_info(msg: CameraInfo) -> None:
            camera.stats.camera_info_received()  # its rate against the images' shows losses
            # Validated on arrival so the worker only ever meets usable intrinsics.
            try:
                intrinsics_from_camera_info_msg(msg)
            except Exception as exc:  # noqa: BLE001
                self._reject(camera, camera.topic("camera_info"), one_line(exc))
                return
            camera.sync.add_info(msg)

        return on_camera_info

    def _reject(self, camera: Camera, topic: str, reason: str) -> None:
        camera.stats.message_rejected(f"{topic}: {reason}")
        self.get_logger().warning(
            f"rejected a message on '{topic}': {reason}", throttle_duration_sec=WARN_PERIOD_S
        )

    # ------------------------------------------------------------------ inference worker

    def _process_batch(self, batch: dict[str, Frame]) -> None:
        """Runs in the worker thread: the newest frame of each camera through the model in one
        batch, then each camera's outputs."""
        estimator, node_settings = self._estimator, self._settings
        if estimator is None:
            return
        jobs = []
        for name, frame in batch.items():
            camera = self._cameras[name]
            if not camera.publishers:
                continue
            counts = {topic: p.get_subscription_count() for topic, p in camera.publishers.items()}
            selected = select_outputs(camera.settings, counts)
            if selected:
                jobs.append((camera, frame, selected, camera.settings))
            else:
                camera.stats.frame_skipped()
        prompts = None
        if estimator.takes_depth_prompt:
            jobs, prompts = self._with_prompts(jobs)
        if not jobs:
            return
        started = time.monotonic()
        try:
            results = estimator.predict_batch(
                [frame.rgb for _, frame, _, _ in jobs],
                (node_settings.min_depth, node_settings.max_depth),
                prompt_depths=prompts,
            )
        except Exception as exc:  # noqa: BLE001 - counted for every camera of the batch
            for camera, *_ in jobs:
                self._inference_failed(camera.stats, exc)
            return
        self._batch_sizes[len(jobs)] = self._batch_sizes.get(len(jobs), 0) + 1
        prompts = prompts or [None] * len(jobs)
        for (camera, frame, selected, settings), result, prompt in zip(
            jobs, results, prompts, strict=True
        ):
            try:
                self._publish(camera, frame, selected, settings, result, started, prompt)
            except Exception as exc:  # noqa: BLE001 - one camera's failure stays its own
                self._inference_failed(camera.stats, exc)

    def _with_prompts(self, jobs: list) -> tuple[list, list[np.ndarray]]:
        """A prompt model's jobs that have a depth prompt, and those prompts; a frame without
        one is withheld (counted; its camera's anchoring says why on /diagnostics)."""
        kept, prompts = [], []
        for job in jobs:
            camera, frame, _, settings = job
            camera_info = frame.camera_info or camera.sync.match(frame.stamp_ns)
            intrinsics = None
            if camera_info is not None:  # counted and logged once, when the frame publishes
                intrinsics = self._image_intrinsics(camera, camera_info, frame, report=False)
            prompt = camera.anchoring.prompt_for(
                frame.rgb.shape[:2], frame.header.frame_id, frame.stamp_ns, intrinsics, settings
            )
            if prompt is None:
                camera.stats.frame_withheld()
                continue
            kept.append(job)
            prompts.append(prompt)
        return kept, prompts

    def _publish(
        self,
        camera: Camera,
        frame: Frame,
        selected: frozenset[str],
        settings: NodeSettings,
        result: Any,
        started: float,
        prompt: np.ndarray | None = None,
    ) -> None:
        camera_info = frame.camera_info
        if camera_info is None:
            camera_info = camera.sync.match(frame.stamp_ns)
        intrinsics = None
        if camera_info is not None:
            intrinsics = self._image_intrinsics(camera, camera_info, frame)
        if camera_info is not None and intrinsics is None:
            camera_info = None  # depth still goes out; no cloud from intrinsics that do not fit
        elif camera.stats.camera_info_matched(camera_info is not None):
            self.get_logger().warning(
                f"no camera_info within sync_slop={settings.sync_slop} s of the image stamp "
                f"on '{self.resolve_topic_name(camera.topic('camera_info'))}': publishing "
                "depth without depth/camera_info and depth/points",
                throttle_duration_sec=WARN_PERIOD_S,
            )
        depth = result.depth
        if camera.anchoring is not None and camera.anchoring.mode != "depth_prompt":
            # The intrinsics project metric_points into the image.
            depth = camera.anchoring.anchor(
                depth, frame.header.frame_id, frame.stamp_ns, intrinsics, settings
            )
            if depth is None:  # a relative model before its first good fit: no metres yet
                camera.stats.frame_withheld()
                return
        elif prompt is not None and settings.anchor_fill == "holes":
            # A prompt model's anchor_fill: the sensor's depth where it measured, as anchoring.
            depth = apply_anchor(
                depth, None, prompt, "holes", (settings.min_depth, settings.max_depth)
            )
        # Published as each is built, depth first: the main output does not wait for the cloud.
        first_output: float | None = None
        for topic, message in iter_outputs(
            selected, frame, depth, result.confidence, camera_info, settings
        ):
            camera.publishers[topic].publish(message)
            if first_output is None:
                first_output = time.monotonic()
        done = time.monotonic()
        camera.stats.frame_published(
            inference_s=result.timings["total"],
            queue_wait_s=started - frame.received,
            first_output_s=(first_output or done) - frame.received,
            processing_s=done - frame.received,
        )

    def _image_intrinsics(
        self, camera: Camera, camera_info: CameraInfo, frame: Frame, report: bool = True
    ) -> CameraIntrinsics | None:
        """``camera_info``'s intrinsics at the image's size; None (with ``report``: counted,
        logged) when they do not fit it."""
        height, width = frame.rgb.shape[:2]
        try:
            return intrinsics_for_image(intrinsics_from_camera_info_msg(camera_info), width, height)
        except ValueError as exc:
            if not report:
                return None
            reason = one_line(exc)
            camera.stats.camera_info_rejected(reason)
            self.get_logger().warning(
                f"camera_info rejected: {reason}; publishing depth without depth/points",
                throttle_duration_sec=WARN_PERIOD_S,
            )
            return None

    def _inference_failed(self, stats: NodeStats, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {one_line(exc)}"
        stats.inference_failed(reason)
        self.get_logger().error(
            f"processing a frame failed: {reason}", throttle_duration_sec=WARN_PERIOD_S
        )

    def _on_frame_error(self, exc: BaseException) -> None:
        self._inference_failed(self._stats, exc)

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        """One status for a single camera (as ever); for several, one per camera plus the
        node's (model, backend, batch sizes, the worst camera level)."""
        common = {"state": self._state, "device": self._device, "model_type": self._model_type,
                  "backend": self._backend, "precision": self._precision}  # fmt: skip
        name = self.get_name()
        statuses = []
        for camera in self._cameras.values():
            snapshot = camera.stats.snapshot()
            level, message = assess(snapshot, self._state, self._configure_error)
            values = diagnostic_values(snapshot, **common)
            if camera.anchoring is not None:
                anchoring = camera.anchoring.snapshot()
                values.update(anchoring.values())
                level, message = assess_anchoring(anchoring, self._state, level, message)
            label = f"{name}/{camera.name}" if camera.name else name
            statuses.append((f"{label}: depth estimation", level, message, values))
        if len(self._cameras) > 1:
            snapshot = self._stats.snapshot()
            level, message = assess(snapshot, self._state, self._configure_error)
            worst = max([level, *(s[1] for s in statuses)])
            if worst > level:
                message = "; ".join(
                    f"{s[0].split(':')[0]}: {s[2]}" for s in statuses if s[1] == worst
                )
            values = diagnostic_values(snapshot, **common)
            values["cameras"] = ", ".join(self._cameras)
            values["batch_sizes"] = ", ".join(
                f"{size}: {count}" for size, count in sorted(self._batch_sizes.items())
            )
            statuses.insert(0, (f"{name}: depth estimation", worst, message, values))
        self._diagnostics_publisher.publish(
            diagnostic_array(self.get_clock().now().to_msg(), self._device, statuses)
        )


def _model_source(values: dict[str, Any]) -> str:
    """What the configured model came from, for the log: the file that decided it."""
    if values["onnx_file"]:
        return f"onnx_file '{values['onnx_file']}'"
    if values["checkpoint"]:
        return f"checkpoint '{values['checkpoint']}'"
    return f"zero-shot DepthCLIP ({values['clip_pretrained']})"


def _bring_up(node: DepthNode, failed: threading.Event) -> None:
    """Autostart: configure (the model load, seconds) and activate off the executor thread, so
    lifecycle and parameter services answer while the model loads."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        failed.set()
    elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().error("activate failed")
        failed.set()


def run_depth_node(args: list[str] | None = None) -> int:
    """Create the node, bring it up if ``autostart``, spin until shutdown; the exit code.

    1 when autostart's configure or activate fails (the reason, naming a bad checkpoint file,
    is logged), 2 when the parameters given at start are invalid, 0 after a normal shutdown
    (SIGINT, or the lifecycle shutdown transition).
    """
    rclpy.init(args=args)
    node: DepthNode | None = None
    failed = threading.Event()
    try:
        try:
            node = DepthNode()
        except Exception as exc:  # noqa: BLE001 - e.g. an out-of-range -p override
            rclpy.logging.get_logger(NODE_NAME).error(f"invalid parameters: {one_line(exc)}")
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.autostart:
            threading.Thread(target=_bring_up, args=(node, failed), daemon=True).start()
        while rclpy.ok() and not failed.is_set() and not node.finished.is_set():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()  # also flushes the ROS log files
    return 1 if failed.is_set() else 0


def exit_now(code: int) -> None:
    """End the process at once: after the node is down and its logs are flushed, interpreter
    teardown only frees memory (measured 5.3 s after a model load on a busy machine, beyond
    launch's 5 s SIGINT timeout)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
