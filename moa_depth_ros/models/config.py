"""Model config validation: every key known, every value checked, errors name the key."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

Check = tuple[Callable[[Any], bool], str]


def resolve_config(
    model_type: str,
    config: Mapping[str, Any],
    defaults: Mapping[str, Any],
    checks: Mapping[str, Check],
) -> dict[str, Any]:
    """Merge `config` over `defaults`; an unknown key or bad value raises ValueError naming it."""
    unknown = sorted(set(config) - set(defaults) - {"type"})
    if unknown:
        raise ValueError(
            f"unknown config key '{unknown[0]}' for model type '{model_type}' "
            f"(known keys: {', '.join(sorted(defaults))})"
        )
    resolved = copy.deepcopy(dict(defaults))
    resolved.update(copy.deepcopy({k: v for k, v in config.items() if k != "type"}))
    for key, (is_valid, expected) in checks.items():
        value = resolved[key]
        try:
            ok = bool(is_valid(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"bad value for config key '{key}' of model type '{model_type}': "
                f"{value!r} (expected {expected})"
            )
    resolved["type"] = model_type
    return resolved


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def is_nonnegative_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def is_int_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    )


def is_nonempty_str_list(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(isinstance(v, str) and v for v in value)
    )


def image_size_hw(value: Any) -> tuple[int, int]:
    """224 or [h, w] → (h, w); raises TypeError/ValueError on anything else."""
    if is_positive_int(value):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(map(is_positive_int, value)):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"image size must be a positive int or [height, width], got {value!r}")
