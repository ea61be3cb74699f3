"""Comparing a loaded state dict with the one a model expects, for one-line load errors (no torch import)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def describe_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any], limit: int = 5) -> str | None:
    """``"missing: a, b; unexpected: c (+2 more); wrong shape: d"``, or None when keys and shapes agree.

    Args:
        expected: The model's ``state_dict()`` (values with a ``shape``).
        given: The loaded tensors.
        limit: Keys named per kind; the rest are counted.
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(given[k].shape) != tuple(expected[k].shape))

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")

    parts = [
        f"{label}: {listed(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]
    return "; ".join(parts) or None
