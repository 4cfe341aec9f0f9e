"""Launch arguments that override the params file only when the user gives them (pure Python).

``launch/depth.launch.py`` declares ``checkpoint``, ``device`` and ``autostart`` with an empty
default meaning "not given", and passes :func:`parameter_overrides` of their values after the
params file. So a value written in the user's params file survives unless the same setting is
also given on the command line. No launch imports: tests call this without launch_ros.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["NOT_GIVEN", "OVERRIDABLE", "parameter_overrides"]

#: The default of every overridable launch argument: "leave the params file in charge".
NOT_GIVEN = ""
#: Launch argument → parameter type.
OVERRIDABLE: dict[str, type] = {"checkpoint": str, "device": str, "autostart": bool}
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def parameter_overrides(arguments: Mapping[str, str]) -> dict[str, Any]:
    """Node parameters for the launch arguments the user gave (empty strings are not given).

    Raises:
        ValueError: a boolean argument that is not true/false.
    """
    overrides: dict[str, Any] = {}
    for name, kind in OVERRIDABLE.items():
        value = arguments.get(name, NOT_GIVEN)
        if value == NOT_GIVEN:
            continue
        if kind is bool:
            if value.lower() not in _BOOLEANS:
                raise ValueError(f"launch argument {name}:={value!r}: expected true or false")
            overrides[name] = _BOOLEANS[value.lower()]
        else:
            overrides[name] = value
    return overrides
