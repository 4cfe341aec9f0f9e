"""moa-depth-export: write a checkpoint (or zero-shot DepthCLIP) as ONNX and check it.

moa-depth-export --checkpoint C.safetensors --out model.onnx [--input-size H W]
    [--quantize int8|fp16 [--int8-for onnxruntime|openvino]] [--batch N|dynamic]
    [--calibration synthetic|BAG [--calibration-topic T]] [--calibration-frames N]
    [--max-abs-rel X]

It prints a parity check of the written graph against torch. ``--quantize int8`` (for the CPU;
``quantize.py`` says what is quantized how) also prints the int8 depth against the fp32 graph's
on the calibration frames, and refuses, writing nothing, when the AbsRel exceeds
``--max-abs-rel``. ``--int8-for openvino`` makes the static int8 graph the OpenVINO backend
runs fastest (the default, onnxruntime, the dynamic one ONNX Runtime does). ``--quantize
fp16`` (for CUDA / TensorRT) is the older ``--precision fp16``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moa_depth_ros.bags.io import COMPRESSED, IMAGE, BagError, BagReader
from moa_depth_ros.errors import one_line, run_command
from moa_depth_ros.evaluation.scoring import evenly_spaced
from moa_depth_ros.inference.onnx_export import (
    EXPORT_PRECISIONS,
    GridGraph,
    at_input_size,
    export_onnx,
)
from moa_depth_ros.inference.onnx_format import OnnxError
from moa_depth_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from moa_depth_ros.inference.quantize import (
    INT8_TARGETS,
    SYNTHETIC,
    QuantizationError,
    calibration_inputs,
    export_int8,
    synthetic_rgb,
)
from moa_depth_ros.models import DepthModel, Preprocessing
from moa_depth_ros.models.checkpoint import load_or_zero_shot

PROG = "moa-depth-export"
QUANTIZE = ("int8", "fp16")
#: Options of --quantize int8 only, with their defaults (None in the parser, so that giving one
#: without int8 is refused instead of silently ignored).
INT8_DEFAULTS = {
    "int8_for": INT8_TARGETS[0],
    "calibration": SYNTHETIC,
    "calibration_topic": "/camera/image_raw",
    "calibration_frames": 16,
    "max_abs_rel": 0.01,
}


def parity(model: DepthModel, path: str | Path, batch: int = 1, seed: int = 0) -> dict[str, float]:
    """Max |difference| of each output between torch and ONNX Runtime (CPU) on random input."""
    runner = OnnxRuntimeBackend(path, device="cpu", threads=1)
    h, w = runner.preprocessing.input_size
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))
    graph = GridGraph(model.eval(), runner.metadata["precision"] == "fp16")
    with torch.no_grad():
        expected = graph(x)
    got = runner.run(x)
    return {
        name: float(np.max(np.abs(ours.numpy() - theirs.numpy())))
        for name, ours, theirs in zip(runner.outputs, got, expected, strict=True)
    }


def _bag_rgb(path: Path, topic: str, count: int) -> list[np.ndarray]:
    """``count`` frames of ``topic`` spread evenly over the bag."""
    with BagReader(path) as reader:
        reader.require_topic(topic, (IMAGE, COMPRESSED))
        wanted = evenly_spaced(reader.topics()[topic].count, count)
        frames = [
            reader.decode_rgb(message)
            for message in reader.messages([topic])
            if message.index in wanted
        ]
    if not frames:
        raise QuantizationError(f"topic '{topic}' in bag '{path}' has no images to calibrate on")
    return frames


def calibration_frames(
    source: str, preprocessing: Preprocessing, count: int, topic: str = "/camera/image_raw"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Graph inputs from ``source`` ("synthetic" or a bag path), and what they are (for the
    metadata)."""
    if count < 1:
        raise ValueError(f"calibration frames must be ≥ 1, got {count}")
    if source == SYNTHETIC:
        rgb, info = synthetic_rgb(count), {"source": SYNTHETIC}
    else:
        rgb, info = _bag_rgb(Path(source), topic, count), {"source": str(source), "topic": topic}
    return calibration_inputs(rgb, preprocessing), {**info, "frames": len(rgb)}


def _precision(args: argparse.Namespace) -> str:
    if args.quantize and args.precision and args.quantize != args.precision:
        raise ValueError(f"--precision {args.precision} contradicts --quantize {args.quantize}")
    return args.quantize or args.precision or "fp32"


def _check_options(args: argparse.Namespace, precision: str) -> int | str:
    """Every option checked before anything is loaded or exported (an export takes minutes):
    ValueError naming the option. Fills in the int8 defaults; returns the batch."""
    given = [k for k in INT8_DEFAULTS if getattr(args, k) is not None]
    if precision != "int8" and given:
        flag = "--" + given[0].replace("_", "-")
        raise ValueError(f"{flag} applies only to --quantize int8 (this export is {precision})")
    for key, default in INT8_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if not args.calibration_frames >= 1:
        raise ValueError(f"--calibration-frames must be >= 1, got {args.calibration_frames}")
    if not (math.isfinite(args.max_abs_rel) and args.max_abs_rel > 0):
        raise ValueError(f"--max-abs-rel must be a positive number, got {args.max_abs_rel}")
    if args.input_size is not None and min(args.input_size) < 1:
        raise ValueError(f"--input-size must be positive, got {args.input_size}")
    if args.batch != "dynamic" and not (args.batch.isdigit() and int(args.batch) >= 1):
        raise ValueError(f"--batch must be a positive integer or 'dynamic', got {args.batch!r}")
    _check_writable(args.out)
    return args.batch if args.batch == "dynamic" else int(args.batch)


def _check_writable(out: Path) -> None:
    """ValueError naming --out unless a file can be written where it goes (checked by writing
    one: permission bits say nothing about read-only file systems or root)."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give the .onnx file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as err:
        reason = err.strerror or one_line(err)
        raise ValueError(
            f"--out {out}: cannot write to its folder {out.parent} ({reason})"
        ) from err


def _export_int8(
    model: DepthModel, batch: int | str, args: argparse.Namespace
) -> tuple[dict, dict[str, float], str]:
    """fp32 export + torch parity, then the int8 graph at ``args.out``: (metadata, parity vs
    torch of the fp32 graph, the int8 vs fp32 line)."""
    model = at_input_size(model.eval(), args.input_size or model.preprocessing.input_size)
    # Frames first: a wrong bag or topic fails before minutes of export.
    frames, calibration = calibration_frames(
        args.calibration, model.preprocessing, args.calibration_frames, args.calibration_topic
    )
    # The fp32 graph is a work file beside --out (whose folder _check_writable made), removed
    # at the end whatever happens.
    with tempfile.TemporaryDirectory(prefix=f".{args.out.name}.", dir=args.out.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, "fp32", batch, args.checkpoint or None)
        diffs = parity(model, fp32)
        metadata, versus = export_int8(
            fp32, args.out, frames, calibration, args.max_abs_rel, args.int8_for
        )
    for_openvino = " (for openvino)" if args.int8_for == "openvino" else ""
    check = (
        f"int8{for_openvino} vs fp32 on {calibration['frames']} {calibration['source']} "
        "calibration frames: "
        f"{versus} (limit {args.max_abs_rel:g})"
    )
    return metadata, diffs, check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="", help=".safetensors; none: zero-shot DepthCLIP")
    parser.add_argument("--clip-pretrained", default="openai", help="zero-shot DepthCLIP weights")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--quantize", choices=QUANTIZE, help="int8 for the CPU, fp16 for CUDA")
    int8 = parser.add_argument_group("int8 only (--quantize int8)")
    int8.add_argument(
        "--int8-for",
        choices=INT8_TARGETS,
        help=f"the backend the graph is made for (default: {INT8_DEFAULTS['int8_for']})",
    )
    parser.add_argument("--precision", choices=EXPORT_PRECISIONS, help="fp16: --quantize fp16")
    parser.add_argument("--batch", default="1", help="a batch size, or 'dynamic'")
    int8.add_argument("--calibration", help="'synthetic' rooms (the default), or a bag's images")
    int8.add_argument(
        "--calibration-topic", help=f"in the bag (default: {INT8_DEFAULTS['calibration_topic']})"
    )
    int8.add_argument(
        "--calibration-frames",
        type=int,
        help=f"frames to calibrate on (default: {INT8_DEFAULTS['calibration_frames']})",
    )
    int8.add_argument(
        "--max-abs-rel",
        type=float,
        help="largest AbsRel of the int8 graph vs fp32 accepted "
        f"(default: {INT8_DEFAULTS['max_abs_rel']})",
    )
    args = parser.parse_args(argv)
    errors = (OnnxError, BagError, ValueError, RuntimeError, OSError)
    return run_command(PROG, lambda: _export(args), errors)


def _export(args: argparse.Namespace) -> int:
    precision = _precision(args)
    batch = _check_options(args, precision)
    model, _ = load_or_zero_shot(args.checkpoint, args.clip_pretrained)
    check = ""
    if precision == "int8":
        metadata, diffs, check = _export_int8(model, batch, args)
    else:
        metadata = export_onnx(
            model, args.out, precision, batch, args.checkpoint or None, args.input_size
        )
        if precision == "fp16":
            diffs = {"skipped": "fp16 graphs are checked on CUDA (ONNX Runtime CPU is fp32)"}
        else:
            size = metadata["preprocessing"]["input_size"]
            diffs = parity(at_input_size(model, size), args.out)
    size = "x".join(map(str, metadata["preprocessing"]["input_size"]))
    print(f"wrote {args.out}: {metadata['model_type']} {size} {precision} batch {batch}")
    graph = " (of the fp32 graph)" if precision == "int8" else ""
    print(
        f"parity vs torch{graph} (max |difference|): "
        + ", ".join(f"{k} {v}" for k, v in diffs.items())
    )
    if check:
        print(check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
