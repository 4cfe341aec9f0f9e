"""int8 graphs: ONNX Runtime quantization of an exported fp32 graph, checked against it.

What is quantized, from measurements on a 2-core AVX512-VNNI CPU (ONNX Runtime 1.32, random
init, 224×224, ms per graph call at 1 thread):

* MatMul / Gemm: **dynamic** (weights int8 per output channel, activations quantized per
  call). ViT-B/32 MoA-DepthCLIP 107 → 35 ms. uint8 weights ran at 68 ms (no u8·u8 VNNI path),
  hence int8; per-tensor weights were as fast, per-channel is kept for real (outlier) weights.
* Conv: **static QDQ** (MinMax over calibration frames) when the graph has more than one
  convolution: SPACE-CLIP ViT-B/16 429 (dynamic MatMul only) → 233 ms, DepthCLIP RN50 887 →
  297 ms. Dynamic Conv (ConvInteger) was 3.7× *slower* than fp32; a ViT's single
  patch-embedding Conv is too little work to pay its error (35 → 33 ms, twice the |Δdepth|),
  so it stays fp32.

For the OpenVINO backend (``target="openvino"``) MatMul / Gemm are quantized **static QDQ**
instead (symmetric int8 activations, MinMax over the calibration frames): OpenVINO fuses
QuantizeLinear/DequantizeLinear pairs into int8 kernels but runs ORT's dynamic MatMulInteger
graph at fp32 speed. Measured on the same CPU at 2 threads (OpenVINO 2026.4, ViT-B/32): ORT
dynamic int8 31 ms, OpenVINO static int8 21 ms (ORT runs that static graph at 45 ms).

Calibration frames are rendered rooms (``moa_depth_ros.synthetic``) or images the export
command reads from a bag, preprocessed exactly as the estimator does. :func:`export_int8`
writes the int8 graph only when its depth on those frames stays within ``max_abs_rel`` of the
fp32 graph's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moa_depth_ros.errors import one_line
from moa_depth_ros.inference.onnx_format import METADATA_KEY, OnnxError, read_onnx_metadata
from moa_depth_ros.models import Preprocessing, preprocess

SYNTHETIC = "synthetic"
#: The backend an int8 graph is made for (see the module doc).
INT8_TARGETS = ("onnxruntime", "openvino")
#: Rendered calibration frames: 4:3 like a camera; preprocessing resizes them to the input.
SYNTHETIC_SIZE = (320, 240)


class QuantizationError(OnnxError):
    """An int8 graph that could not be made, or lost more accuracy than allowed."""


@dataclass(frozen=True)
class Parity:
    """int8 vs fp32 depth over the calibration frames (metres; abs_rel: mean |Δ| / fp32)."""

    max_abs: float
    mean_abs: float
    abs_rel: float

    def __str__(self) -> str:
        return (
            f"max |Δdepth| {self.max_abs:.4g} m, mean {self.mean_abs:.4g} m, "
            f"AbsRel {self.abs_rel:.4g}"
        )


def synthetic_rgb(count: int) -> list[np.ndarray]:
    """``count`` rendered rooms (H×W×3 uint8) to calibrate on when no bag is given."""
    from moa_depth_ros.synthetic import render_frame

    return [render_frame(seed, *SYNTHETIC_SIZE)[0] for seed in range(count)]


def calibration_inputs(rgb: list[np.ndarray], preprocessing: Preprocessing) -> np.ndarray:
    """N×3×h×w float32 graph inputs: the frames preprocessed exactly as the estimator does."""
    if not rgb:
        raise QuantizationError("no calibration frames")
    if preprocessing.size_rule != "fixed":
        # A graph runs one input size; frames whose size rule gives another (an aspect-kept
        # Depth Anything input) are resized to it: calibration needs representative values.
        preprocessing = replace(preprocessing, size_rule="fixed")
    inputs = [
        preprocess(torch.from_numpy(np.array(f)).permute(2, 0, 1)[None], preprocessing) for f in rgb
    ]
    return torch.cat(inputs).numpy()


def _batches(frames: np.ndarray, batch: int | str) -> list[np.ndarray]:
    """The frames as feeds of the graph's batch (a fixed batch > 1 repeats frames to fill)."""
    size = 1 if batch == "dynamic" else int(batch)
    total = -(-len(frames) // size) * size
    filled = frames[np.arange(total) % len(frames)]
    return [filled[i : i + size] for i in range(0, total, size)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs through the root logger at WARNING; the CLI prints its own lines."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _pre_process(src: Path, dst: Path) -> None:
    """ORT's recommended shape inference + optimization; symbolic shape inference fails on
    some graphs (DepthCLIP's Expand), then ONNX shape inference alone."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception:  # symbolic shape inference raises bare TypeErrors and the like
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


class _Reader:
    """A CalibrationDataReader (the quantizer takes any object with ``get_next``)."""

    def __init__(self, feeds: list[np.ndarray], name: str):
        self._feeds = iter([{name: feed} for feed in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_graph(
    fp32: Path, out: Path, frames: np.ndarray, target: str = "onnxruntime"
) -> dict[str, Any]:
    """Write the int8 version of ``fp32`` for the ``target`` backend to ``out`` (metadata not
    yet updated); returns what was quantized how."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    batch = read_onnx_metadata(fp32)["batch"]
    work = out.parent
    pre = work / "pre.onnx"
    _pre_process(fp32, pre)
    proto = onnx.load(str(pre), load_external_data=False)
    convs = sum(node.op_type == "Conv" for node in proto.graph.node)
    name = proto.graph.input[0].name
    del proto
    if target == "openvino":
        return _quantize_static(pre, out, frames, batch, name, convs)
    method = {"matmul_gemm": "dynamic", "conv": "fp32"}
    source = pre
    if convs > 1:
        source = work / "conv_qdq.onnx"
        quantize_static(
            str(pre), str(source), _Reader(_batches(frames, batch), name),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        method["conv"] = "static_qdq_minmax"
    quantize_dynamic(
        str(source), str(out), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
        weight_type=QuantType.QInt8,
    )  # fmt: skip
    ops = [node.op_type for node in onnx.load(str(out), load_external_data=False).graph.node]
    matmuls, qdq = ops.count("MatMulInteger"), ops.count("QuantizeLinear")
    if not matmuls and not qdq:  # an "int8" file that runs fp32 would be a lie
        raise QuantizationError("no MatMul, Gemm or Conv in the graph could be quantized")
    return {
        "method": method,
        "int8_matmuls": matmuls,
        "per_channel": True,
        "weights": "int8",
        "activations": "uint8",
        "convolutions": convs,
    }


def _quantize_static(
    pre: Path, out: Path, frames: np.ndarray, batch: int | str, name: str, convs: int
) -> dict[str, Any]:
    """MatMul / Gemm static QDQ with int8 activations (OpenVINO's int8 kernels take s8·s8).

    Convolutions stay fp32: OpenVINO 2026.4 ran SPACE-CLIP's statically quantized decoder
    convolutions 20 times further from fp32 than ONNX Runtime ran the same graph. Weights are
    per output channel unless OpenVINO cannot compile that (DepthBLIP-2's Q-Former MatMuls:
    "scale.size()" check), then per tensor, and the metadata says which.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    for per_channel in (True, False):
        quantize_static(
            str(pre), str(out), _Reader(_batches(frames, batch), name),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=per_channel, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": True},
        )  # fmt: skip
        compile_error = _openvino_compile_error(out)
        if compile_error is None:
            break
    if compile_error is not None:
        raise QuantizationError(f"OpenVINO cannot compile the int8 graph: {compile_error}")
    graph_ops = [node.op_type for node in onnx.load(str(out), load_external_data=False).graph.node]
    if not graph_ops.count("QuantizeLinear"):
        raise QuantizationError(
            "no MatMul or Gemm in the graph could be quantized, and convolutions stay fp32 "
            "for OpenVINO; use --int8-for onnxruntime"
        )
    return {
        "method": {"matmul_gemm": "static_qdq_minmax", "conv": "fp32"},
        "quantize_linear_nodes": graph_ops.count("QuantizeLinear"),
        "per_channel": per_channel,
        "weights": "int8",
        "activations": "int8",
        "convolutions": convs,
    }


def _openvino_compile_error(path: Path) -> str | None:
    """Why OpenVINO's CPU plugin cannot compile ``path``, or None when it can."""
    from moa_depth_ros.inference.openvino_backend import openvino_core

    core = openvino_core()
    try:
        core.compile_model(core.read_model(str(path)), "CPU")
    except RuntimeError as err:
        return one_line(err)
    return None


def depth_parity(fp32: Path, int8: Path, frames: np.ndarray, batch: int | str) -> Parity:
    """int8 vs fp32 depth (the graphs' first output) on ``frames``, ONNX Runtime CPU."""
    import onnxruntime

    from moa_depth_ros.inference.onnxruntime_backend import default_threads

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = default_threads()
    options.log_severity_level = 3  # not ORT's warnings about the quantizer's leftovers
    runs, feeds = [], _batches(frames, batch)
    for path in (fp32, int8):
        session = onnxruntime.InferenceSession(str(path), options, ["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        runs.append(np.concatenate([session.run(None, {name: feed})[0] for feed in feeds]))
    ref, got = runs
    valid = np.isfinite(ref) & (ref > 0)
    if not valid.any():
        raise QuantizationError("the fp32 graph gives no positive depth on the calibration frames")
    diff = np.abs(got[valid] - ref[valid])
    if not np.isfinite(diff).all():
        return Parity(float("inf"), float("inf"), float("inf"))
    return Parity(float(diff.max()), float(diff.mean()), float(np.mean(diff / ref[valid])))


def export_int8(
    fp32: Path,
    out: Path,
    frames: np.ndarray,
    calibration: dict[str, Any],
    max_abs_rel: float,
    target: str = "onnxruntime",
) -> tuple[dict[str, Any], Parity]:
    """Quantize the fp32 graph ``fp32`` for the ``target`` backend into ``out``;
    QuantizationError (and nothing at ``out``) when it cannot be, or its AbsRel against fp32
    exceeds ``max_abs_rel``."""
    if target not in INT8_TARGETS:
        raise ValueError(f"int8 target must be one of {INT8_TARGETS}, got {target!r}")
    import onnx
    import onnxruntime

    metadata = read_onnx_metadata(fp32)
    model_type = metadata["model_type"]
    out.parent.mkdir(parents=True, exist_ok=True)
    # Work files beside ``out`` (one filesystem for the final rename), all removed at the end.
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        partial = Path(tmp) / "int8.onnx"
        try:
            with _quiet():
                quantization = quantize_graph(fp32, partial, frames, target)
        except Exception as err:  # the quantizer raises many types; one line with the cause
            raise QuantizationError(f"cannot quantize {model_type}: {one_line(err)}") from err
        parity = depth_parity(fp32, partial, frames, metadata["batch"])
        if not parity.abs_rel <= max_abs_rel:  # also refuses NaN / inf
            raise QuantizationError(
                f"int8 {model_type} is too far from fp32 on {calibration['frames']} "
                f"{calibration['source']} frames ({parity}; limit --max-abs-rel {max_abs_rel:g}); "
                f"nothing written to {out}"
            )
        metadata = {
            **metadata,
            "precision": "int8",
            "quantization": {
                "target": target,
                **quantization,
                "calibration": calibration,
                "parity_vs_fp32": asdict(parity),
                "onnxruntime": onnxruntime.__version__,
            },
        }
        proto = onnx.load(str(partial))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.save(proto, str(partial))
        os.replace(partial, out)
    return metadata, parity
