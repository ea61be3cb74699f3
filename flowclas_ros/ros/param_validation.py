"""Validation of ``anomaly_node``'s parameter values against the table in :mod:`flowclas_ros.ros.params`.

No rclpy, no numpy: the node checks every change with :func:`validate` before it is
accepted, and the launch-file and README checks use :func:`parameter_names`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from flowclas_ros.ros.params import BUILTIN_PARAMETERS, NAN_MEANS_CHECKPOINT, SPECS

_STAGE_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def check_stage_specs(specs: list[str]) -> str | None:
    """``extra_stages``: None when every entry is ``module:Class`` (no import here), else the reason."""
    for spec in specs:
        if not _STAGE_SPEC.match(str(spec)):
            return f"extra_stages: {spec!r} is not 'module:Class' (e.g. 'my_package.stages:MyStage')"
    return None


def parameter_names() -> set[str]:
    """Names the node accepts: :data:`PARAMETERS` plus rclpy's built-ins."""
    return set(SPECS) | set(BUILTIN_PARAMETERS)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(name: str, value: Any) -> str | None:
    """Checks one value against its spec and the cross-field rules.

    Returns:
        None when valid, else the reason (one line, names the parameter).
    """
    spec = SPECS.get(name)
    if spec is None:
        return f"unknown parameter {name!r}"
    if value is None:
        return f"{name}: a value is required"
    if name == "num_threads":
        return _check_threads(value)
    items = list(value) if spec.type.endswith("_array") else [value]
    allowed = spec.allowed()
    for item in items:
        if allowed and item not in allowed:
            return f"{name}: {item!r} is not one of {', '.join(allowed)}"
        if _is_number(item):
            if spec.type.startswith("double") and math.isinf(item):
                return f"{name}: must be finite, got {item}"
            if math.isnan(item) and name not in NAN_MEANS_CHECKPOINT:
                return f"{name}: must not be NaN"
            if spec.low is not None and item < spec.low:
                return f"{name}: {item} is below the minimum {spec.low:g}"
            if spec.high is not None and item > spec.high:
                return f"{name}: {item} is above the maximum {spec.high:g}"
    if name == "input_size" and (len(items) != 2 or (0 in items and items != [0, 0])):
        return f"input_size: expected [height, width] > 0, or [0, 0] for the checkpoint's, got {items}"
    if name == "overlay_score_range" and (len(items) != 2 or (items[0] >= items[1] and items != [0.0, 0.0])):
        return (
            f"overlay_score_range: expected [low, high] with low < high, or [0, 0] for automatic, got {items}"
        )
    if name == "extra_stages":
        return check_stage_specs(items)
    if name == "image_topics" and (not items or any(not str(t).strip("/") for t in items)):
        return f"image_topics: expected at least one non-empty topic name, got {items}"
    return None


def _check_threads(value: Any) -> str | None:
    """``num_threads``: ``auto`` or a positive integer (given as a number or a string)."""
    from flowclas_ros.runtime.threads import resolve_threads

    try:
        if isinstance(value, (bool, float)) or value == 0:
            raise ValueError(f"num_threads must be 'auto' or a positive integer, got {value!r}")
        resolve_threads(value)
    except ValueError as err:
        return str(err)
    return None
