"""``load_estimator``: the one way from files (or nothing: zero-shot DepthCLIP) to an estimator.

The backend is ``inference/<options.backend>_backend.py``'s ``open_backend(options)``: adding a
backend is adding that one file (``options.BACKENDS`` lists the files).
"""

from __future__ import annotations

import importlib

from moa_depth_ros.inference.estimator import Backend, DepthEstimator
from moa_depth_ros.inference.options import InferenceOptions


def open_backend(options: InferenceOptions) -> Backend:
    """The backend ``options`` ask for, opened on what they name."""
    options = options.resolved()
    module = importlib.import_module(f"moa_depth_ros.inference.{options.backend}_backend")
    return module.open_backend(options)


def load_estimator(options: InferenceOptions) -> DepthEstimator:
    """The estimator for a checkpoint file or an exported graph, or zero-shot DepthCLIP with
    ``clip_pretrained`` weights when neither is given: the one policy the node and every CLI
    share."""
    return DepthEstimator(
        open_backend(options),
        output_range=options.output_range,
        flip_tta=options.flip_tta,
        warmup=options.warmup,
    )
