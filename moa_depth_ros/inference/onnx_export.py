"""Export any depth model to ONNX, and the cache of exported graphs.

The graph takes the normalized model input (B×3×h×w float32, exactly what
``models.preprocess`` produces) and returns ``depth`` (and ``confidence`` where the method has
bins) at the model's own output grid: resizing to the camera resolution stays in the estimator,
which does the same one resize for every backend (the metadata's ``output_*`` say how). Exported
with the dynamo exporter (opset 18), with the metadata of ``onnx_format``. The CLI is
``moa_depth_ros.cli.export``.

A model whose input size follows the image (``Preprocessing.size_rule``, e.g. Depth Anything)
is exported for one input size: ``input_size`` must be one its rule gives (a camera of exactly
that size keeps it), by default the rule's size for its nominal image. Models that cannot be
exported (``DepthModel.onnx_unsupported``) are refused with one line before the exporter runs:
they stay on torch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moa_depth_ros.digests import file_sha256
from moa_depth_ros.errors import one_line
from moa_depth_ros.inference.onnx_format import FORMAT_VERSION, METADATA_KEY, OnnxError
from moa_depth_ros.models import DepthModel, build_model

OPSET = 18
EXPORT_PRECISIONS = ("fp32", "fp16")
#: Largest batch of a dynamic-batch export.
MAX_BATCH = 64


class DynamicBatchError(OnnxError):
    """The exporter fixed the batch of a graph asked for with a dynamic one."""


class GridGraph(nn.Module):
    """What is exported: normalized input → depth (and confidence) at the grid, float32."""

    def __init__(self, model: DepthModel, half: bool):
        super().__init__()
        self.model, self.half = model, half

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.forward_grid(image.half() if self.half else image)
        outputs = (out.depth.float(),)
        if out.confidence is not None:
            outputs += (out.confidence.float(),)
        return outputs


def _resize_positional_embedding(
    value: torch.Tensor, old_grid: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """An open_clip ViT positional embedding ([CLS] + h·w rows) resampled to ``grid``."""
    cls, rows = value[:1], value[1:]
    maps = rows.reshape(1, *old_grid, -1).permute(0, 3, 1, 2)
    maps = F.interpolate(maps, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([cls, maps.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def at_input_size(model: DepthModel, size: tuple[int, int]) -> DepthModel:
    """The same weights at another input size (ViT positional embeddings resampled). A model
    with a size rule runs any size the rule gives as it is: ``size`` must be one."""
    if tuple(size) == tuple(model.preprocessing.input_size):
        return model
    spec = model.preprocessing
    if spec.size_rule != "fixed":
        size = (int(size[0]), int(size[1]))
        # Padded images (ZoeDepth) reach sizes no image of that size gives: multiples only.
        reached = spec.input_size_for(size) if spec.pad == "none" else size
        multiple = spec.size_multiple
        if reached != size or size[0] % multiple or size[1] % multiple:
            raise OnnxError(
                f"input size {size[0]}x{size[1]}: not a size the {model.model_type} processor "
                f"gives (an image of that size becomes {reached[0]}x{reached[1]}; sides are "
                f"multiples of {multiple}); export the size your camera's images become"
            )
        resized = copy.copy(model)  # a shallow copy: the same weights, its own preprocessing
        resized.preprocessing = replace(spec, input_size=size)
        return resized
    if "image_size" not in model.config:
        raise OnnxError(
            f"input size {size[0]}x{size[1]}: {model.model_type} takes only "
            f"{spec.input_size[0]}x{spec.input_size[1]} inputs (its processor's fixed size)"
        )
    config = {**model.config, "image_size": [int(size[0]), int(size[1])]}
    try:
        resized = build_model(config, load_pretrained=False)
    except ValueError as err:
        raise OnnxError(f"input size {size[0]}x{size[1]}: {one_line(err)}") from err
    target = resized.state_dict()
    state = {}
    for key, value in model.state_dict().items():
        if value.shape != target[key].shape:
            owner = key.rpartition(".")[0]
            if not key.endswith(".positional_embedding"):
                raise OnnxError(
                    f"input size {size[0]}x{size[1]}: tensor '{key}' changes shape; this model "
                    "cannot be exported at another size"
                )
            value = _resize_positional_embedding(
                value,
                tuple(model.get_submodule(owner).grid_size),
                tuple(resized.get_submodule(owner).grid_size),
            )
        state[key] = value
    resized.load_state_dict(state, strict=True)
    return resized.eval()


def export_onnx(
    model: DepthModel,
    out: str | Path,
    precision: str = "fp32",
    batch: int | str = 1,
    source_checkpoint: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Write ``model`` as ONNX to ``out``; returns the metadata embedded in the file.
    ``model`` is left as it was (its weights, dtype and train/eval mode)."""
    if precision not in EXPORT_PRECISIONS:
        raise OnnxError(f"export precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    dynamic = batch == "dynamic"
    if not dynamic and not (isinstance(batch, int) and batch >= 1):
        raise OnnxError(f"batch must be a positive int or 'dynamic', got {batch!r}")
    was_training = model.training
    try:
        metadata = _export(model.eval(), Path(out), precision, batch, source_checkpoint, input_size)
    finally:
        model.train(was_training)
    return metadata


def _export(
    model: DepthModel,
    out: Path,
    precision: str,
    batch: int | str,
    source_checkpoint: str | Path | None,
    input_size: tuple[int, int] | None,
) -> dict[str, Any]:
    import onnx

    if model.onnx_unsupported:
        raise OnnxError(
            f"{model.model_type} cannot be exported to ONNX ({model.onnx_unsupported}): it "
            "stays on torch (backend torch)"
        )
    dynamic = batch == "dynamic"
    model = at_input_size(model, input_size or model.preprocessing.input_size)
    # A copy for fp16: .half() works in place and the caller's fp32 weights must survive.
    graph_model = copy.deepcopy(model).half() if precision == "fp16" else model.float()
    graph = GridGraph(graph_model, precision == "fp16")
    h, w = model.preprocessing.input_size
    example = torch.randn(2 if dynamic else batch, 3, h, w)
    with torch.no_grad():
        names = ["depth", "confidence"][: len(graph(example))]
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written next to ``out`` and renamed at the end: a killed export or two processes
    # exporting into one cache never leave a half-written or metadata-less file at ``out``.
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shapes = {"image": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}} if dynamic else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter is chatty about decompositions
            try:
                torch.onnx.export(
                    graph, (example,), str(partial), dynamo=True, opset_version=OPSET,
                    input_names=["image"], output_names=names, dynamic_shapes=shapes,
                    external_data=False, verbose=False,
                )  # fmt: skip
            except Exception as err:  # exporter errors are many types; one line with the cause
                raise OnnxError(
                    f"cannot export {model.model_type} to {out}: {one_line(err)}"
                ) from err
        proto = onnx.load(str(partial))
        if dynamic and proto.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value"):
            # The exporter specialized the batch (some transformers code does): say so, not lie.
            raise DynamicBatchError(
                f"{model.model_type}: the exported graph cannot take a dynamic batch; "
                "export with a fixed --batch N"
            )
        metadata = {
            "format_version": FORMAT_VERSION,
            "model_type": model.model_type,
            "model_config": model.config,
            "preprocessing": model.preprocessing.to_dict(),
            "precision": precision,
            "batch": batch,
            "outputs": names,
            "output_align_corners": model.output_align_corners,
            "output_kind": model.output_kind,
            "output_space": model.output_space,
            "output_resize_mode": model.output_resize_mode,
            "source_checkpoint": str(source_checkpoint) if source_checkpoint else None,
            "source_sha256": file_sha256(source_checkpoint) if source_checkpoint else None,
        }
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.save(proto, str(partial))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return metadata


def cached_export(
    model: DepthModel, source: str | Path | None, precision: str, cache_root: Path
) -> Path:
    """``model`` exported once per source file (or config) and precision into
    ``cache_root/onnx`` (keyed by the source's SHA-256)."""
    key = (
        file_sha256(source)
        if source
        else hashlib.sha256(json.dumps(model.config, sort_keys=True).encode()).hexdigest()
    )
    graph_precision = "fp16" if precision == "fp16" else "fp32"
    path = cache_root / "onnx" / f"{model.model_type}-{key[:16]}-{graph_precision}.onnx"
    if not path.is_file():
        try:
            export_onnx(model, path, graph_precision, batch="dynamic", source_checkpoint=source)
        except DynamicBatchError:  # a fixed-batch graph: the backend feeds it one image at a time
            export_onnx(model, path, graph_precision, batch=1, source_checkpoint=source)
    return path
