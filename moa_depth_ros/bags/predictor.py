"""A model as bag evaluation runs it (:class:`Predictor`): the node's estimator on a checkpoint
or exported graph (:func:`estimator_predictor`), and what that model gives, read from the file
before it is loaded (:func:`model_output_of`), so that a comparison refuses a model that cannot
be scored before it runs any."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moa_depth_ros.bags.eval_plan import ModelOutput
from moa_depth_ros.bags.eval_settings import EvalSettings

__all__ = ["Predictor", "estimator_predictor", "model_output_of"]


@dataclass
class Predictor:
    """A model as bag evaluation runs it: ``predict(rgb)`` (``predict(rgb, prompt)`` when it
    takes a depth prompt) → H×W float32, metres or, for ``output_kind`` relative, inverse depth
    up to scale and shift. ``seconds`` gets each forward's own time (the estimator's: its
    preprocessing, network and resize to the image; nothing of the bag, the anchoring or the
    scoring). ``name`` says which model in errors."""

    predict: Callable[..., np.ndarray]
    output_kind: str = "metric"
    takes_depth_prompt: bool = False
    seconds: list[float] = field(default_factory=list)
    name: str = "the model"

    @property
    def output(self) -> ModelOutput:
        return ModelOutput(self.name, self.output_kind, self.takes_depth_prompt)


def estimator_predictor(settings: EvalSettings) -> Predictor:
    """``settings.checkpoint`` through the node's estimator, metric output clamped to the
    protocol's depth range, as ``moa-depth-evaluate`` runs it (the protocol's input crop is
    applied around this by the evaluator), each forward timed by the estimator."""
    from moa_depth_ros.inference.load import load_estimator
    from moa_depth_ros.inference.options import InferenceOptions

    estimator = load_estimator(
        InferenceOptions(
            checkpoint=settings.checkpoint, device=settings.device, precision=settings.precision
        )
    )
    scoring = settings.scoring_protocol()
    depth_range = scoring.scored_range
    seconds: list[float] = []

    def predict(rgb: np.ndarray, prompt: np.ndarray | None = None) -> np.ndarray:
        result = estimator.predict(rgb, depth_range, prompt_depth=prompt)
        seconds.append(result.timings["total"])
        return result.depth

    return Predictor(
        predict,
        estimator.output_kind,
        estimator.takes_depth_prompt,
        seconds,
        Path(str(settings.checkpoint)).name,
    )


def model_output_of(checkpoint: str | Path) -> ModelOutput:
    """What the model in ``checkpoint`` gives, without reading its weights: an exported graph's
    metadata says it (models that take a prompt are never exported); a checkpoint's model is
    built from its stored config without weights, as loading builds it before it reads the
    tensors, and asked (measured on 2 CPU cores: 1 s for MoA-DepthCLIP ViT-B/32 or Depth
    Anything V2 Small, 4 s for Depth Anything Large; nothing to the minutes a bag takes).

    Raises:
        CheckpointError, OnnxError: not a checkpoint or exported graph, naming the file.
    """
    from moa_depth_ros.models.checkpoint import model_of, read_metadata

    path = Path(checkpoint)
    if path.suffix == ".onnx":  # what load_estimator runs on ONNX Runtime
        from moa_depth_ros.inference.onnx_format import ExportedGraph

        graph = ExportedGraph(path)  # its metadata, checked; no session is opened
        return ModelOutput(path.name, graph.output_kind, graph.takes_depth_prompt)
    model = model_of(path, read_metadata(path))
    return ModelOutput(path.name, model.output_kind, model.takes_depth_prompt)
