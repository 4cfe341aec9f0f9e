"""Foundation depth models from transformers (``type: hf_depth``): any supported
``AutoModelForDepthEstimation`` family, computed exactly as ``pipeline("depth-estimation")``.

Families (``FAMILIES``): Depth Anything V1/V2 (relative and metric), Prompt Depth Anything,
Depth Pro, ZoeDepth, DPT (MiDaS) and GLPN. The pipeline of the installed transformers (5.x)
loads the image processor's **torchvision** backend (``AutoImageProcessor`` picks it whenever
torchvision is installed), so this module reproduces that one; docs/methods.md says what each
family's processor does and how it maps onto ``Preprocessing``:

- DPT / Depth Anything / Prompt Depth Anything: uint8 resize by torchvision (bicubic,
  antialiased, rounded to uint8) to the processor's size, keeping the aspect ratio and rounding
  each side to a multiple of 14 where the processor says so (``size_rule: keep_aspect``), then
  rescale and normalize; the output is resized bicubic to the image.
- Depth Pro: normalize, then a float bilinear resize (no antialiasing) to its fixed size; the
  output grid is canonical inverse depth, scaled by the estimated field of view
  (``2·tan(fov/2)``, what ``width / focal_length`` is), resized bilinear **in inverse depth**
  and inverted (``1 / clamp(x, 1e-4, 1e4)``).
- ZoeDepth: rescale, reflect-pad each side by ``int(sqrt(side / 2) · 3)``, bilinear resize with
  ``align_corners=True`` (keep aspect, multiple of 32), normalize; the output is resized bicubic
  to the padded image and the padding cropped.
- GLPN: uint8 bilinear resize by torchvision to each side floored to a multiple of 32, rescale;
  bicubic output resize.

``output_kind``: metric (metres) for Depth Anything metric, Prompt Depth Anything, Depth Pro,
ZoeDepth and GLPN; relative (affine-invariant inverse depth, not metres) for Depth Anything
relative and DPT (``config.output_kind`` overrides the guess for fine-tunes).

Prompt Depth Anything takes a metric depth prompt per image (``takes_depth_prompt``): the
processor only scales it to metres (our prompts are metres already) and nudges a constant
prompt by 1e-6 at its first pixel; the model normalizes it by its min and max and resizes it
itself, so the prompt may have any size.

Self-contained checkpoints: the transformers model config (``hf_config``) and the image
processor config (``processor_config``) are stored as JSON in the model config, the weights as
tensors. Loading a checkpoint builds the family's model class from that config (no network, no
remote code, no pickle); ``pretrained`` (a local directory, or a hub id when online) is read only
when the model is first built. Weights are read from safetensors only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from moa_depth_ros.errors import check_depth_range, one_line
from moa_depth_ros.models.base import DepthModel
from moa_depth_ros.models.config import resolve_config
from moa_depth_ros.models.output import DepthOutput
from moa_depth_ros.models.preprocessing import Preprocessing

#: transformers model_type → (model class, image processor class of the torchvision backend).
FAMILIES = {
    "depth_anything": ("DepthAnythingForDepthEstimation", "DPTImageProcessor"),
    "prompt_depth_anything": (
        "PromptDepthAnythingForDepthEstimation",
        "PromptDepthAnythingImageProcessor",
    ),
    "depth_pro": ("DepthProForDepthEstimation", "DepthProImageProcessor"),
    "zoedepth": ("ZoeDepthForDepthEstimation", "ZoeDepthImageProcessor"),
    "dpt": ("DPTForDepthEstimation", "DPTImageProcessor"),
    "glpn": ("GLPNForDepthEstimation", "GLPNImageProcessor"),
}
OUTPUT_KIND_CHOICES = ("auto", "metric", "relative")
#: Families whose exported ONNX graph runs in ONNX Runtime with parity (measured on tiny
#: configs, test/models/test_hf_depth.py); the others stay on torch, with the reason.
ONNX_UNSUPPORTED = {
    "prompt_depth_anything": "it takes a depth prompt of any size",
    "zoedepth": "torch.onnx's dynamo exporter fails in its BEiT backbone's attention reshape",
}
#: The default max_depth of families whose config gives none (Depth Pro, Prompt Depth
#: Anything); relative models are never clamped to it.
DEFAULT_MAX_DEPTH = 100.0
#: The nominal image of ``floor_multiple`` families (GLPN): the input size a 480×640 camera
#: gives (warm-up, the default ONNX export size).
NOMINAL_IMAGE = (480, 640)
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling values
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")

DEFAULTS: dict[str, Any] = {
    "pretrained": "none",  # a local model directory or a hub id; "none": hf_config is given
    "hf_config": None,  # the transformers model config (config.json), stored
    "processor_config": None,  # the image processor config (preprocessor_config.json), stored
    "output_kind": "auto",  # OUTPUT_KIND_CHOICES; auto: by family (module docstring)
    "min_depth": 1e-3,
    "max_depth": None,  # None: the family's (Depth Anything metric / GLPN / ZoeDepth config)
}

CHECKS = {
    "pretrained": (lambda v: isinstance(v, str) and v != "", "a model directory or hub id"),
    "hf_config": (lambda v: v is None or isinstance(v, dict), "a mapping or null"),
    "processor_config": (lambda v: v is None or isinstance(v, dict), "a mapping or null"),
    "output_kind": (lambda v: v in OUTPUT_KIND_CHOICES, " or ".join(OUTPUT_KIND_CHOICES)),
    "min_depth": (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
        "a positive number of metres",
    ),
    "max_depth": (
        lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v > 0),
        "a positive number of metres or null",
    ),
}


class HubOfflineError(ValueError):
    """A hub id that is not cached while offline."""


def _is_offline_error(err: BaseException) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    while err is not None:
        if isinstance(err, LocalEntryNotFoundError | OfflineModeIsEnabled | ConnectionError):
            return True
        if type(err).__name__ in ("ConnectError", "ConnectTimeout", "ConnectionError"):
            return True
        err = err.__cause__ or err.__context__
    return False


def _offline_message(source: str) -> str:
    return (
        f"{source}: not a local directory, and the Hugging Face hub id cannot be downloaded "
        "offline (HF_HUB_OFFLINE=1 or no network); pass a local model directory"
    )


def _source_json(source: str, filename: str, required: bool) -> dict[str, Any] | None:
    """``filename`` of a local model directory or a hub repository, as JSON (None when absent
    and not required); ValueError naming the source."""
    directory = Path(source)
    if directory.is_dir():
        path = directory / filename
        if not path.is_file():
            if required:
                raise ValueError(f"{directory}: no {filename} (not a Hugging Face model directory)")
            return None
    elif _HUB_ID.fullmatch(source) and not source.startswith("."):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = Path(hf_hub_download(source, filename))
        except Exception as err:  # hub errors are many types; one line with the cause
            if _is_offline_error(err):  # (not cached, offline: LocalEntryNotFoundError)
                raise HubOfflineError(_offline_message(source)) from err
            if isinstance(err, EntryNotFoundError):
                if required:
                    raise ValueError(f"{source}: the hub repository has no {filename}") from None
                return None
            raise ValueError(f"{source}: cannot read {filename} ({one_line(err)})") from err
    else:
        raise ValueError(f"{source}: no such model directory")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: not readable JSON ({one_line(err)})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def family_of(hf_config: dict[str, Any], where: str) -> str:
    """The transformers model_type of ``hf_config``; ValueError naming ``where`` when it is not
    a depth estimation family this package runs."""
    family = hf_config.get("model_type")
    if family not in FAMILIES:
        raise ValueError(
            f"{where}: model type {family!r} is not a depth estimation model this package runs "
            f"(known: {', '.join(FAMILIES)})"
        )
    return family


def resolve(config: dict) -> dict:
    cfg = resolve_config("hf_depth", config, DEFAULTS, CHECKS)
    source = cfg["pretrained"]
    if cfg["hf_config"] is None:
        if source == "none":
            raise ValueError(
                "model type 'hf_depth' needs 'pretrained' (a local model directory or a hub id) "
                "or 'hf_config'"
            )
        cfg["hf_config"] = _source_json(source, "config.json", required=True)
        where = source
    else:
        where = "config key 'hf_config' of model type 'hf_depth'"
    family = family_of(cfg["hf_config"], where)
    if cfg["processor_config"] is None:
        if source != "none":  # the pipeline needs it: without it the family's defaults are wrong
            cfg["processor_config"] = _source_json(source, "preprocessor_config.json", True)
        else:
            cfg["processor_config"] = {}
    cfg["hf_config"] = {k: v for k, v in cfg["hf_config"].items() if k != "auto_map"}
    cfg["processor_config"] = {k: v for k, v in cfg["processor_config"].items() if k != "auto_map"}
    if cfg["max_depth"] is None:
        cfg["max_depth"] = _family_max_depth(family, cfg["hf_config"])
    check_depth_range(cfg["min_depth"], cfg["max_depth"], "config keys of model type 'hf_depth'")
    # Fail now, with the key, rather than when the model is built.
    build_hf_config(cfg["hf_config"], where)
    preprocessing_of(family, build_processor(family, cfg["processor_config"]))
    return cfg


def _family_max_depth(family: str, hf_config: dict[str, Any]) -> float:
    value = None
    if family == "depth_anything" and hf_config.get("depth_estimation_type") == "metric":
        value = hf_config.get("max_depth")
    elif family == "glpn":
        value = hf_config.get("max_depth", 10)
    elif family == "zoedepth":
        bins = hf_config.get("bin_configurations") or [{"max_depth": 10.0}]
        value = max(b.get("max_depth", 0) for b in bins if isinstance(b, dict))
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok and math.isfinite(value) else DEFAULT_MAX_DEPTH


def build_hf_config(hf_config: dict[str, Any], where: str = "hf_config") -> Any:
    """The transformers config object of ``hf_config`` (the family's own config class)."""
    from transformers import CONFIG_MAPPING

    family = family_of(hf_config, where)
    try:
        return CONFIG_MAPPING[family].from_dict(dict(hf_config))
    except Exception as err:  # config classes raise many types; one line with the cause
        raise ValueError(f"{where}: invalid {family} config ({one_line(err)})") from err


def build_processor(family: str, processor_config: dict[str, Any]) -> Any:
    """The family's image processor (torchvision backend, as the pipeline loads it)."""
    import transformers

    cls = getattr(transformers, FAMILIES[family][1])
    try:
        return cls.from_dict(dict(processor_config))
    except Exception as err:
        raise ValueError(f"invalid {cls.__name__} config ({one_line(err)})") from err


def _size_hw(processor: Any) -> tuple[int, int]:
    size = processor.size
    height, width = (getattr(size, "height", None), getattr(size, "width", None))
    if isinstance(size, dict):
        height, width = size.get("height"), size.get("width")
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"{type(processor).__name__}: size {size!r} is not a height and width")
    return height, width


def _multiple(processor: Any, key: str) -> int:
    value = getattr(processor, key, 1) or 1
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{type(processor).__name__}: {key} {value!r} is not a positive int")
    return value


def _normalization(processor: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean, std on pixels / 255 that give the processor's (x · rescale − mean) / std."""
    rescale = processor.rescale_factor if processor.do_rescale else 1.0
    mean, std = (0.0,) * 3, (1.0,) * 3
    if processor.do_normalize:
        mean, std = processor.image_mean, processor.image_std
        mean = (mean,) * 3 if isinstance(mean, int | float) else tuple(mean)
        std = (std,) * 3 if isinstance(std, int | float) else tuple(std)
    scale = 255.0 * rescale
    if abs(scale - 1.0) < 1e-12:
        return tuple(map(float, mean)), tuple(map(float, std))
    return tuple(m / scale for m in mean), tuple(s / scale for s in std)


def _resample(processor: Any) -> str:
    value = getattr(processor.resample, "value", processor.resample)
    if value not in _RESAMPLE:
        raise ValueError(
            f"{type(processor).__name__}: resample {processor.resample!r} is not bilinear or "
            "bicubic (the only interpolations this package reproduces)"
        )
    return _RESAMPLE[value]


def _round_to_multiple(value: int, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def preprocessing_of(family: str, processor: Any) -> Preprocessing:
    """The ``Preprocessing`` that reproduces ``processor`` (module docstring); ValueError for
    settings this package does not reproduce."""
    name = type(processor).__name__
    mean, std = _normalization(processor)
    mode = _resample(processor)
    if getattr(processor, "do_center_crop", False):
        raise ValueError(f"{name}: do_center_crop is not supported")
    if family == "glpn":
        multiple = _multiple(processor, "size_divisor") if processor.do_resize else 1
        spec = Preprocessing(NOMINAL_IMAGE, mean, std, mode, "torchvision",
                             size_rule="floor_multiple", size_multiple=multiple)  # fmt: skip
        return replace(spec, input_size=spec.input_size_for(NOMINAL_IMAGE))
    if not processor.do_resize:
        raise ValueError(f"{name}: do_resize false is not supported")
    height, width = _size_hw(processor)
    if family == "depth_pro":
        if mode != "bilinear":  # it resizes normalized floats: no clamp, which torch bicubic has
            raise ValueError(f"{name}: only bilinear resampling is supported")
        return Preprocessing((height, width), mean, std, mode, "torch", antialias=False)
    multiple = _multiple(processor, "ensure_multiple_of")
    keep_aspect = bool(processor.keep_aspect_ratio)
    size = (_round_to_multiple(height, multiple), _round_to_multiple(width, multiple))
    rule = "keep_aspect" if keep_aspect else "fixed"
    if family == "zoedepth":
        if mode != "bilinear":
            raise ValueError(f"{name}: only bilinear resampling is supported")
        pad = "zoedepth_reflect" if processor.do_pad else "none"
        spec = Preprocessing(size, mean, std, mode, "torch", size_rule=rule,
                             size_target=(height, width), size_multiple=multiple, pad=pad,
                             antialias=False, align_corners=True)  # fmt: skip
        if pad != "none":  # the size an image of the target size reaches once padded
            return replace(spec, input_size=spec.input_size_for((height, width)))
        return spec
    # DPT, Depth Anything, Prompt Depth Anything: DPTImageProcessor-style.
    if getattr(processor, "do_pad", False):
        raise ValueError(f"{name}: do_pad (centre padding to size_divisor) is not supported")
    return Preprocessing(size, mean, std, mode, "torchvision", size_rule=rule,
                         size_target=(height, width) if keep_aspect else None,
                         size_multiple=multiple)  # fmt: skip


def _output_kind(family: str, cfg: dict) -> str:
    if cfg["output_kind"] != "auto":
        return cfg["output_kind"]
    if family == "dpt":
        return "relative"  # MiDaS-style inverse depth (Intel/dpt-large, dpt-hybrid-midas)
    if family == "depth_anything":
        metric = cfg["hf_config"].get("depth_estimation_type") == "metric"
        return "metric" if metric else "relative"
    return "metric"


def _model_class(family: str) -> type:
    import transformers

    return getattr(transformers, FAMILIES[family][0])


class HFDepth(DepthModel):
    """A transformers depth model (``self.net``) with its processor's pre- and post-processing.

    ``forward_grid(images, prompt_depth=None)``: the family's ``predicted_depth`` as B×1×h×w
    (Depth Pro: inverse depth scaled by its field of view); resizing and inversion are the
    estimator's, as for every model (``output_space``, ``output_resize_mode``).
    """

    model_type = "hf_depth"

    def __init__(self, cfg: dict, load_pretrained: bool = True):
        family = family_of(cfg["hf_config"], "hf_config")
        processor = build_processor(family, cfg["processor_config"])
        super().__init__(cfg, preprocessing_of(family, processor))
        self.family = family
        # Instance attributes over DepthModel's class defaults: they differ per family.
        self.output_kind = _output_kind(self.family, cfg)
        metric_inverse = self.family == "depth_pro"
        self.output_space = (
            "inverse_depth" if metric_inverse or self.output_kind == "relative" else "depth"
        )
        # Depth Pro's post-processing resizes bilinear (its processor is refused otherwise).
        self.output_resize_mode = "bilinear" if self.family == "depth_pro" else "bicubic"
        self.takes_depth_prompt = self.family == "prompt_depth_anything"
        unsupported = ONNX_UNSUPPORTED.get(self.family)
        self.onnx_unsupported = f"{self.family}: {unsupported}" if unsupported else None
        hf_config = build_hf_config(cfg["hf_config"])
        source = cfg["pretrained"]
        if load_pretrained and source != "none":
            self.net = self._from_pretrained(source, hf_config)
        else:
            self.net = _model_class(self.family)(hf_config)
        self.net.eval()

    def _from_pretrained(self, source: str, hf_config: Any) -> torch.nn.Module:
        try:
            net, info = _model_class(self.family).from_pretrained(
                source, config=hf_config, use_safetensors=True, output_loading_info=True
            )
        except Exception as err:  # transformers raises OSError, ValueError, hub errors
            if not Path(source).is_dir() and _is_offline_error(err):
                raise HubOfflineError(_offline_message(source)) from err
            raise ValueError(
                f"{source}: cannot load the {self.family} weights (safetensors only: "
                f"{one_line(err)})"
            ) from err
        # transformers initializes missing tensors at random and says so in a log line only.
        missing = [k for k in info.get("missing_keys", []) if not k.endswith("num_batches_tracked")]
        missing += [str(k) for k in info.get("mismatched_keys", [])]
        if missing:
            raise ValueError(
                f"{source}: the weights lack {len(missing)} tensor(s) of the {self.family} model "
                f"(first: {missing[0]})"
            )
        return net

    def train(self, mode: bool = True) -> HFDepth:
        super().train(mode)
        self.net.eval()  # inference only: no dropout or drop-path (not trained here)
        return self

    @staticmethod
    def prepare_prompt(prompt_depth: torch.Tensor) -> torch.Tensor:
        """Prompt Depth Anything's processor on B×1×h×w metres: a constant prompt gets 1e-6 at
        its first pixel (its min and max normalization would divide by zero)."""
        prompt = prompt_depth.float().clone()
        flat = prompt.flatten(1)
        constant = flat.min(dim=1).values == flat.max(dim=1).values
        prompt[:, 0, 0, 0] += constant.to(prompt.dtype) * 1e-6
        return prompt

    def forward_grid(
        self, images: torch.Tensor, prompt_depth: torch.Tensor | None = None
    ) -> DepthOutput:
        if self.takes_depth_prompt:
            if prompt_depth is None:
                raise ValueError(
                    f"{self.family} needs a depth prompt (metric depth per image); none was given"
                )
            out = self.net(pixel_values=images, prompt_depth=self.prepare_prompt(prompt_depth))
        elif prompt_depth is not None:
            raise ValueError(f"{self.family} takes no depth prompt")
        else:
            out = self.net(pixel_values=images)
        depth = out.predicted_depth[:, None]
        if self.family == "depth_pro" and out.field_of_view is not None:
            # transformers: depth · width / focal, focal = 0.5 · width / tan(0.5 · fov): the
            # ratio is 2·tan(fov/2), whatever the width; computed as written, at the grid width.
            width = depth.shape[-1]
            fov = out.field_of_view.reshape(-1, 1, 1, 1)
            focal = 0.5 * width / torch.tan(0.5 * torch.deg2rad(fov))
            depth = depth * width / focal
        return DepthOutput(depth=depth)
