"""moa-depth-export: write a checkpoint (or zero-shot DepthCLIP) as ONNX and check it.

moa-depth-export --checkpoint C.safetensors --out model.onnx [--input-size H W]
    [--precision fp32|fp16] [--batch N|dynamic]

It prints a parity check of the written graph against torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from moa_depth_ros.errors import one_line
from moa_depth_ros.inference.onnx_export import (
    EXPORT_PRECISIONS,
    GridGraph,
    at_input_size,
    export_onnx,
)
from moa_depth_ros.inference.onnx_format import OnnxError
from moa_depth_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from moa_depth_ros.models import DepthModel
from moa_depth_ros.models.checkpoint import load_or_zero_shot


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moa-depth-export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="", help=".safetensors; none: zero-shot DepthCLIP")
    parser.add_argument("--clip-pretrained", default="openai", help="zero-shot DepthCLIP weights")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--precision", choices=EXPORT_PRECISIONS, default="fp32")
    parser.add_argument("--batch", default="1", help="a batch size, or 'dynamic'")
    args = parser.parse_args(argv)
    try:
        batch = args.batch if args.batch == "dynamic" else int(args.batch)
        model, _ = load_or_zero_shot(args.checkpoint, args.clip_pretrained)
        metadata = export_onnx(
            model, args.out, args.precision, batch, args.checkpoint or None, args.input_size
        )
        if args.precision == "fp16":
            diffs = {"skipped": "fp16 graphs are checked on CUDA (ONNX Runtime CPU is fp32)"}
        else:
            diffs = parity(at_input_size(model, metadata["preprocessing"]["input_size"]), args.out)
    except (OnnxError, ValueError, RuntimeError, OSError) as err:
        print(f"moa-depth-export: error: {one_line(err)}", file=sys.stderr)
        return 2
    size = "x".join(map(str, metadata["preprocessing"]["input_size"]))
    print(f"wrote {args.out}: {metadata['model_type']} {size} {args.precision} batch {batch}")
    print("parity vs torch (max |difference|): " + ", ".join(f"{k} {v}" for k, v in diffs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
