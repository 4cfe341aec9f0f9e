"""What an exported ONNX file is: its metadata entry, format version and how to read it back.

The metadata (``metadata_props["moa_depth_ros"]``, JSON) holds the model type and config, the
preprocessing, the precision, the batch, the outputs and how to resize them (``output_*``: mode,
space, kind; files written before these keys: bilinear metric depth), and the SHA-256 of the
checkpoint the graph came from.

A graph runs one input size: ``preprocessing.input_size``. For models whose input size follows
the image (``size_rule``), the backends refuse, with one line naming the ``--input-size`` to
export, an image that the rule gives another input size (they never resize it to the graph's:
that would distort the aspect ratio the model was given by its processor).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from moa_depth_ros.errors import one_line

METADATA_KEY = "moa_depth_ros"
FORMAT_VERSION = 1


class OnnxError(RuntimeError):
    """An ONNX file that cannot be used or written; one line naming the file."""


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a file written by ``onnx_export.export_onnx``; OnnxError naming the file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf decode errors
        raise OnnxError(f"{path}: not a readable ONNX file ({one_line(err)})") from err
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise OnnxError(f"{path}: no '{METADATA_KEY}' metadata (not exported by moa-depth-export)")
    try:
        metadata = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise OnnxError(f"{path}: metadata is not valid JSON ({err})") from err
    if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
        raise OnnxError(f"{path}: unsupported metadata format")
    return metadata


class ExportedGraph:
    """What every backend of exported graphs reads from the file's metadata, and how it feeds
    a batch to a graph exported with a fixed batch size."""

    def __init__(self, path: str | Path) -> None:
        from moa_depth_ros.models import Preprocessing

        self.path = Path(path)
        self.metadata = read_onnx_metadata(self.path)
        self.model_type = self.metadata["model_type"]
        self.model_config = self.metadata["model_config"]
        self.preprocessing = Preprocessing.from_dict(self.metadata["preprocessing"])
        self.outputs = list(self.metadata["outputs"])
        self.output_align_corners = bool(self.metadata["output_align_corners"])
        self.output_kind = self.metadata.get("output_kind", "metric")
        self.output_space = self.metadata.get("output_space", "depth")
        self.output_resize_mode = self.metadata.get("output_resize_mode", "bilinear")
        from moa_depth_ros.models.base import OUTPUT_KINDS, OUTPUT_RESIZE_MODES, OUTPUT_SPACES

        for key, known in (("output_kind", OUTPUT_KINDS), ("output_space", OUTPUT_SPACES),
                           ("output_resize_mode", OUTPUT_RESIZE_MODES)):  # fmt: skip
            if getattr(self, key) not in known:
                raise OnnxError(f"{self.path}: metadata {key} {getattr(self, key)!r} is not one "
                                f"of {', '.join(known)}")  # fmt: skip
        self.takes_depth_prompt = False  # models that take one are not exported
        self.fixed_input_size = True

    @property
    def int8_target(self) -> str | None:
        """The backend an int8 graph was quantized for (older files: onnxruntime)."""
        if self.metadata["precision"] != "int8":
            return None
        return self.metadata.get("quantization", {}).get("target", "onnxruntime")

    def chunks(self, feed: np.ndarray) -> list[np.ndarray]:
        """``feed`` split into the graph's fixed batch (whole when the batch is dynamic)."""
        batch = self.metadata["batch"]
        if batch == "dynamic" or feed.shape[0] == batch:
            return [feed]
        if feed.shape[0] % batch == 0:
            return np.split(feed, feed.shape[0] // batch)
        raise ValueError(f"{self.path.name} takes batches of {batch}; got {feed.shape[0]}")

    def run(self, inputs: Any) -> list[Any]:
        raise NotImplementedError

    def forward_grid(self, batch: Any) -> Any:
        """The estimator's entry point: depth (and confidence, when exported) grids."""
        from moa_depth_ros.inference.estimator import Grid

        outputs = self.run(batch)
        return Grid(outputs[0], outputs[1] if len(outputs) > 1 else None)
