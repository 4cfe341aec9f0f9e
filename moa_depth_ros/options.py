"""Choices shared by the estimator, the node's parameters and every CLI (defined once here).

Kept free of torch and ROS so the node's parameter table and ``--help`` load instantly.
"""

from __future__ import annotations

#: Inference precisions (fp16 needs CUDA).
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
#: Inference backends.
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime")
#: ONNX Runtime provider choices (auto: CUDA when the device is CUDA).
PROVIDER_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "tensorrt")
