"""The depth node's parameters: one table of names, defaults, ranges and descriptions.

The table drives ``declare_parameter`` (via ``parameter_descriptor``), the checks of the
set-parameters callback (``check_values``) and the test that ``config/depth.yaml`` lists the
same defaults. rclpy itself enforces the descriptor's ``read_only`` flag and numeric ranges;
``check_values`` adds what a descriptor cannot express: string choices (per-camera
``<camera>.<parameter>`` values too), min < max depth and the anchoring combinations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from moa_depth_ros.anchoring import (
    ANCHOR_FILLS,
    ANCHOR_MODES,
    DEFAULT_MAX_RESIDUAL,
    DEFAULT_MAX_SCALE_CHANGE,
    DEFAULT_MAX_SCALE_FACTOR,
    DEFAULT_MIN_POINTS,
    DEFAULT_SMOOTHING,
    SETTING_RANGES,
    AnchorSettings,
)
from moa_depth_ros.errors import check_depth_range
from moa_depth_ros.options import BACKENDS, PRECISIONS, PROVIDER_CHOICES

__all__ = [
    "PARAMETERS",
    "NodeSettings",
    "ParamSpec",
    "check_model_inputs",
    "check_values",
    "parameter_descriptor",
    "spec_for",
    "qos_profile",
]

ParamValue = bool | int | float | str | list[str]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: ParamValue
    description: str
    read_only: bool = False
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choices: tuple[str, ...] | None = None


_RELIABILITY = ("best_effort", "reliable")
#: Points kept per metric_points cloud: more than any camera's field of view needs from a LiDAR
#: (a 640x480 image has 307 200 pixels, 20 anchors make a fit), and with the 30-deep anchor
#: buffer at most 30 x 100 000 x 12 B = 36 MB.
MAX_ANCHOR_POINTS = 100_000
_STARTUP_ONLY = " Read-only: set it when the node starts."

PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "checkpoint",
        "",
        "Path of a moa_depth_ros .safetensors checkpoint; empty = zero-shot DepthCLIP."
        + _STARTUP_ONLY,
        read_only=True,
    ),
    ParamSpec(
        "verify_checkpoint",
        True,
        "Check the checkpoint's tensor SHA-256 at load (about 0.25 s per 360 MB); false for "
        "trusted files." + _STARTUP_ONLY,
        read_only=True,
    ),
    ParamSpec(
        "clip_pretrained",
        "openai",
        "CLIP weights for zero-shot DepthCLIP (empty checkpoint): 'openai', a local weights "
        "file, or 'none' (random init)." + _STARTUP_ONLY,
        read_only=True,
    ),
    ParamSpec(
        "device",
        "auto",
        "Inference device: auto, cpu, cuda or cuda:N." + _STARTUP_ONLY,
        read_only=True,
    ),
    ParamSpec(
        "precision",
        "fp32",
        "Inference precision (fp16 needs CUDA)." + _STARTUP_ONLY,
        read_only=True,
        choices=PRECISIONS,
    ),
    ParamSpec(
        "backend",
        "torch",
        "Inference backend: torch, onnxruntime, or openvino (CPU); the graph backends export "
        "the checkpoint once into onnx_cache_dir unless onnx_file names an exported model."
        + _STARTUP_ONLY,
        read_only=True,
        choices=BACKENDS,
    ),
    ParamSpec(
        "onnx_file",
        "",
        "An exported .onnx model (moa-depth-export), run on OpenVINO with backend openvino, "
        "else on ONNX Runtime; empty = the checkpoint (exported once for a graph backend)."
        + _STARTUP_ONLY,
        read_only=True,
    ),
    ParamSpec(
        "onnx_provider",
        "auto",
        "ONNX Runtime provider: auto (CUDA when the device is CUDA), cpu, cuda, tensorrt."
        + _STARTUP_ONLY,
        read_only=True,
        choices=PROVIDER_CHOICES,
    ),
    ParamSpec(
        "onnx_threads",
        0,
        "ONNX Runtime / OpenVINO threads; 0 = half the cores, at most 4 (no spin-waiting)."
        + _STARTUP_ONLY,
        read_only=True,
        int_range=(0, 64),
    ),
    ParamSpec(
        "onnx_cache_dir",
        "",
        "Where exported graphs and TensorRT engines are cached; empty = ~/.cache/moa_depth_ros."
        + _STARTUP_ONLY,
        read_only=True,
    ),
    ParamSpec(
        "cameras",
        [""],
        "Names of the cameras this node serves with one model: [''] = one camera on 'image' / "
        "'camera_info'; e.g. ['left', 'right'] reads 'left/image', ... and publishes "
        "'left/depth/...'. Each camera also gets '<name>.publish_points', "
        "'<name>.points_decimation' and '<name>.anchor_mode'." + _STARTUP_ONLY,
        read_only=True,
    ),
    ParamSpec(
        "input_transport",
        "raw",
        "raw: subscribe to 'image' (sensor_msgs/Image); compressed: subscribe to "
        "'image/compressed' (sensor_msgs/CompressedImage)." + _STARTUP_ONLY,
        read_only=True,
        choices=("raw", "compressed"),
    ),
    ParamSpec(
        "sync_slop",
        0.05,
        "Largest |image stamp - camera_info stamp| (s) for a camera_info to describe an image.",
        float_range=(0.0, 10.0),
    ),
    ParamSpec(
        "min_depth",
        0.1,
        "Smallest published depth (m); the model output is clamped to [min_depth, max_depth].",
        float_range=(0.001, 1000.0),
    ),
    ParamSpec(
        "max_depth",
        10.0,
        "Largest published depth (m); must exceed min_depth.",
        float_range=(0.001, 1000.0),
    ),
    ParamSpec(
        "depth_encoding",
        "32FC1",
        "depth/image encoding (REP 118): 32FC1 metres with NaN invalid, or 16UC1 millimetres "
        "with 0 invalid.",
        choices=("32FC1", "16UC1"),
    ),
    ParamSpec("publish_points", True, "Publish depth/points (needs camera_info)."),
    ParamSpec("points_rgb", True, "Colour the points (xyz + rgb) instead of xyz only."),
    ParamSpec(
        "points_decimation",
        2,
        "Take every n-th pixel in each direction for depth/points (organized cloud).",
        int_range=(1, 16),
    ),
    ParamSpec("publish_colorized", True, "Publish depth/colorized (bgr8 for image viewers)."),
    ParamSpec(
        "colorize_auto_range",
        True,
        "depth/colorized spans each frame's 2nd-98th depth percentile (near red, far blue); "
        "false: the fixed min_depth..max_depth range.",
    ),
    ParamSpec("publish_confidence", True, "Publish depth/confidence (32FC1, 0..1)."),
    ParamSpec(
        "skip_when_no_subscribers",
        True,
        "Build only outputs somebody subscribes to; no inference at all when nobody does.",
    ),
    ParamSpec(
        "wait_for_fresh_frame",
        True,
        "When the input outpaces the model and the next frame is due sooner than the waiting "
        "one has waited, infer on the next one: lower latency for a few percent fewer outputs.",
    ),
    ParamSpec(
        "anchor_mode",
        "none",
        "Metric anchoring from a sparse metric sensor on 'metric_depth' (sensor_msgs/Image "
        "16UC1 mm / 32FC1 m, registered to the camera) and/or 'metric_points' (PointCloud2 in "
        "the camera's optical frame): none; scale (median of metric/predicted); scale_shift "
        "(least squares, outliers rejected). Per camera as '<name>.anchor_mode'." + _STARTUP_ONLY,
        read_only=True,
        choices=ANCHOR_MODES,
    ),
    ParamSpec(
        "anchor_fill",
        "none",
        "none: publish the anchored model depth; holes: publish the metric depth where it is "
        "valid and the anchored model depth in its holes.",
        choices=ANCHOR_FILLS,
    ),
    ParamSpec(
        "anchor_smoothing",
        DEFAULT_SMOOTHING,
        "Weight of the previous fit in the smoothed one (0 = each frame's own fit).",
        float_range=SETTING_RANGES["smoothing"],
    ),
    ParamSpec(
        "anchor_slop",
        0.05,
        "Largest |image stamp - anchor stamp| (s) for a metric input to anchor an image."
        + _STARTUP_ONLY,
        read_only=True,
        float_range=(0.0, 10.0),
    ),
    ParamSpec(
        "anchor_min_points",
        DEFAULT_MIN_POINTS,
        "Fewest valid anchor pixels for a fit to be used.",
        int_range=tuple(int(v) for v in SETTING_RANGES["min_points"]),
    ),
    ParamSpec(
        "anchor_max_residual",
        DEFAULT_MAX_RESIDUAL,
        "Largest median relative residual |metric - fitted| / metric of a fit that is used; "
        "worse fits are counted as unstable and the last good fit is kept.",
        float_range=SETTING_RANGES["max_residual"],
    ),
    ParamSpec(
        "anchor_max_scale_factor",
        DEFAULT_MAX_SCALE_FACTOR,
        "A fit's scale must be within this factor of 1 (in [1/f, f]) and its shift within "
        "+-max_depth; others are counted as out_of_bounds and the last good fit is kept.",
        float_range=SETTING_RANGES["max_scale_factor"],
    ),
    ParamSpec(
        "anchor_max_scale_change",
        DEFAULT_MAX_SCALE_CHANGE,
        "A fit's scale must be within this factor of the smoothed fit being applied (counted "
        "as out_of_bounds otherwise); 10 fits in a row that agree with each other replace it.",
        float_range=SETTING_RANGES["max_scale_change"],
    ),
    ParamSpec(
        "anchor_max_points",
        MAX_ANCHOR_POINTS,
        "Most points of one metric_points cloud that are kept: larger clouds are thinned "
        "evenly before decoding and the dropped points counted (bounds memory and time)."
        + _STARTUP_ONLY,
        read_only=True,
        int_range=(100, 10_000_000),
    ),
    ParamSpec(
        "input_qos_reliability",
        "best_effort",
        "QoS reliability of the image and camera_info subscriptions (best_effort also matches "
        "reliable publishers)." + _STARTUP_ONLY,
        read_only=True,
        choices=_RELIABILITY,
    ),
    ParamSpec(
        "input_qos_depth",
        1,
        "QoS history depth of the image subscription; 1 = always the newest frame." + _STARTUP_ONLY,
        read_only=True,
        int_range=(1, 1000),
    ),
    ParamSpec(
        "output_qos_reliability",
        "reliable",
        "QoS reliability of the outputs (RViz subscribes reliable by default)." + _STARTUP_ONLY,
        read_only=True,
        choices=_RELIABILITY,
    ),
    ParamSpec(
        "output_qos_depth",
        1,
        "QoS history depth of the outputs." + _STARTUP_ONLY,
        read_only=True,
        int_range=(1, 100),
    ),
    ParamSpec(
        "autostart",
        True,
        "Configure and activate by itself at start instead of waiting for lifecycle "
        "transitions." + _STARTUP_ONLY,
        read_only=True,
    ),
)

PARAMETERS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}


def parameter_descriptor(spec: ParamSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(
        name=spec.name, description=spec.description, read_only=spec.read_only
    )
    if spec.float_range is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=spec.float_range[0], to_value=spec.float_range[1])
        ]
    if spec.int_range is not None:
        descriptor.integer_range = [
            IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=1)
        ]
    if spec.choices is not None:
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    return descriptor


def spec_for(name: str) -> ParamSpec | None:
    """The table's entry for ``name``, a per-camera ``<camera>.<parameter>`` included (camera
    names have no '.'), or None."""
    return PARAMETERS_BY_NAME.get(name.rsplit(".", 1)[-1])


def check_values(values: Mapping[str, Any]) -> str | None:
    """The reason ``values`` (all parameters, after a change; per-camera ones as
    ``<camera>.<parameter>``) are invalid, or None."""
    for name, value in values.items():
        spec = spec_for(name)
        if spec is not None and spec.choices is not None and value not in spec.choices:
            return f"{name} must be one of {', '.join(spec.choices)}, got '{value}'"
    try:
        check_depth_range(values.get("min_depth"), values.get("max_depth"), "parameters")
        settings = NodeSettings.from_values(values)
        modes = {v for name, v in values.items() if name.endswith("anchor_mode")} - {"none"}
        for mode in sorted(modes):  # the whole anchoring configuration, as a camera uses it
            replace(settings, anchor_mode=mode).anchor_settings()
    except ValueError as exc:
        return str(exc)
    return None


def check_model_inputs(
    output_kind: str, takes_depth_prompt: bool, anchor_modes: Mapping[str, str]
) -> str | None:
    """Why the loaded model cannot serve the cameras' ``anchor_mode`` parameters (by parameter
    name), or None. A relative model gives no metres by itself, so it needs anchoring; a
    prompt model is learned anchoring: it takes the metric input as its prompt, no fit."""
    for name, mode in anchor_modes.items():
        if output_kind == "relative" and mode == "none":
            return (
                f"the model gives relative depth, not metres: set {name} to scale or "
                "scale_shift with a metric_depth or metric_points input (docs/anchoring.md), "
                "or use a metric model"
            )
        if takes_depth_prompt and mode != "none":
            return (
                f"the model takes metric depth as its prompt (learned anchoring): {name} must "
                "be none; it reads metric_depth / metric_points itself"
            )
    return None


@dataclass(frozen=True)
class NodeSettings:
    """The runtime-tunable parameters, replaced as a whole on every accepted change so the
    worker thread always sees one consistent set."""

    sync_slop: float
    min_depth: float
    max_depth: float
    depth_encoding: str
    publish_points: bool
    points_rgb: bool
    points_decimation: int
    publish_colorized: bool
    colorize_auto_range: bool
    publish_confidence: bool
    skip_when_no_subscribers: bool
    wait_for_fresh_frame: bool
    anchor_mode: str
    anchor_fill: str
    anchor_smoothing: float
    anchor_slop: float
    anchor_min_points: int
    anchor_max_residual: float
    anchor_max_scale_factor: float
    anchor_max_scale_change: float
    anchor_max_points: int

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def anchor_settings(self, space: str = "depth") -> AnchorSettings:
        """The anchoring core's settings (bag evaluation maps its options onto the same);
        ``space``: inverse_depth for a relative model.

        Raises:
            ValueError: a combination the core refuses, naming it.
        """
        return AnchorSettings.from_prefixed(
            asdict(self), space=space, min_depth=self.min_depth, max_depth=self.max_depth
        )


def qos_profile(reliability: str, depth: int) -> QoSProfile:
    """KEEP_LAST ``depth``, VOLATILE, with ``reliability`` 'best_effort' or 'reliable'."""
    policy = {
        "best_effort": ReliabilityPolicy.BEST_EFFORT,
        "reliable": ReliabilityPolicy.RELIABLE,
    }[reliability]
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)
