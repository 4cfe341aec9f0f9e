"""What an exported ONNX file is: its metadata entry, format version and how to read it back.

The metadata (``metadata_props["moa_depth_ros"]``, JSON) holds the model type and config, the
preprocessing, the precision, the batch, the outputs and how to resize them, and the SHA-256 of
the checkpoint the graph came from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from moa_depth_ros.errors import one_line

METADATA_KEY = "moa_depth_ros"
FORMAT_VERSION = 1


class OnnxError(RuntimeError):
    """An ONNX file that cannot be used or written; one line naming the file."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
