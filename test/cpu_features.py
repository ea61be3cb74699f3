"""Skip markers for tests that need a CPU feature (bf16, AMX, VNNI, AVX-512): ask, never assume.

Usage::

    from cpu_features import needs

    @needs("openvino_bf16")
    def test_bf16_runs(): ...

Each marker skips with the reason and this CPU's summary (model, flags, OpenVINO capabilities),
so a skipped test says why on the machine that skipped it. The behaviour on a CPU *without*
the feature is tested everywhere by standing in for such a CPU (``FLOWCLAS_CPU_CAPS``,
:data:`flowclas_ros.runtime.cpu.CPU_CAPS_ENV`; fixture ``cpu_without_bf16`` in conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flowclas_ros.runtime import cpu

CHECKS: dict[str, Callable[[], bool]] = {
    "openvino_bf16": lambda: (
        "bf16" in cpu.native_precisions() and "BF16" in (cpu.openvino_capabilities() or ())
    ),
    "openvino_int8": lambda: "INT8" in (cpu.openvino_capabilities() or ()),
    "bf16": lambda: bool(cpu.all_flags() & cpu.BF16_FLAGS),
    "amx": lambda: cpu.has_flag("amx_bf16") or cpu.has_flag("amx_int8"),
    "vnni": lambda: bool(cpu.all_flags() & cpu.INT8_DOT_FLAGS),
    "avx512": lambda: cpu.has_flag("avx512f"),
    "avx2": lambda: cpu.has_flag("avx2"),
}
"""Feature name -> whether this CPU has it."""


def has(feature: str) -> bool:
    """Whether this CPU has ``feature`` (a key of :data:`CHECKS`)."""
    return CHECKS[feature]()


def needs(*features: str) -> pytest.MarkDecorator:
    """A ``skipif`` marker: skips unless this CPU has every feature, naming the missing ones."""
    missing = [feature for feature in features if not has(feature)]
    reason = f"needs {', '.join(missing)}; this CPU: {cpu.cpu_info().summary()}" if missing else ""
    return pytest.mark.skipif(bool(missing), reason=reason)


def lacks(*features: str) -> pytest.MarkDecorator:
    """A ``skipif`` marker for tests of the real refusal on a CPU that lacks a feature."""
    present = [feature for feature in features if has(feature)]
    reason = f"this CPU has {', '.join(present)}: {cpu.cpu_info().summary()}" if present else ""
    return pytest.mark.skipif(bool(present), reason=reason)
