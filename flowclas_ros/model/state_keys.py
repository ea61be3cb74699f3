"""Comparing a loaded state dict with the one a model expects, for one-line load errors (no torch import)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def describe_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any], limit: int = 5) -> str | None:
    """``"missing: a, b; unexpected: c (+2 more); wrong shape: d (3,) (expected (4,))"``, or None.

    None means keys and shapes agree. A loaded value without a ``shape`` (a foreign
    file can hold any object) is reported as ``not a tensor``.

    Args:
        expected: The model's ``state_dict()`` (values with a ``shape``).
        given: The loaded tensors.
        limit: Keys named per kind; the rest are counted.
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    common = sorted(set(expected) & set(given))
    bad_type = [k for k in common if not hasattr(given[k], "shape")]
    wrong = [
        f"{k} {tuple(given[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in common
        if hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(expected[k].shape)
    ]

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")

    parts = [
        f"{label}: {listed(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong),
            ("not a tensor", bad_type),
        )
        if keys
    ]
    return "; ".join(parts) or None
