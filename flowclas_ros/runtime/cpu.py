"""What this CPU can run: model name, instruction sets, OpenVINO's capabilities, usable cores (no torch).

Robots carry whatever CPU their builder chose (AVX2-only x86, AVX-512 / AMX Xeons, ARM
Jetsons), so precision choices and tests ask here instead of assuming a feature:

- :func:`isa_flags`: the instruction-set flags that matter for inference, from
  ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``); empty where that file does not exist.
- :func:`openvino_capabilities`: the OpenVINO CPU plugin's ``OPTIMIZATION_CAPABILITIES``
  (e.g. ``BF16, FP32, INT8``), None when OpenVINO is not installed.
- :func:`usable_cpus`: the CPUs this process may run on (``os.sched_getaffinity``: a
  container's or ``taskset``'s limit, not the machine's core count).

``FLOWCLAS_CPU_CAPS`` (e.g. ``FP32,INT8``) replaces the OpenVINO CPU capabilities, and with
them what :func:`native_precisions` reports: it exists so the tests can check the "this CPU
has no bf16" behaviour on a CPU that has bf16. It is not a tuning knob.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU_CAPS_ENV = "FLOWCLAS_CPU_CAPS"
"""Test-only override of the OpenVINO CPU capabilities (comma-separated, e.g. ``FP32,INT8``)."""

FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "asimd",
    "bf16",
    "i8mm",
    "sve",
)
"""The instruction-set flags reported (the ones inference speed depends on)."""

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
"""Any of these means the CPU computes bf16 natively (x86 AVX512-BF16 / AMX, ARMv8.6 BF16)."""

INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "i8mm", "asimddp"})
"""Any of these gives int8 dot-product instructions (without them int8 is rarely faster)."""

CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as ``{key: value}`` (empty off Linux)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name, e.g. ``AMD EPYC`` or ``Intel(R) Xeon(R) Platinum 8480+``."""
    fields = _cpuinfo_fields()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.lru_cache(maxsize=1)
def all_flags() -> frozenset[str]:
    """Every flag /proc/cpuinfo lists (x86 ``flags``, ARM ``Features``); empty where unknown."""
    fields = _cpuinfo_fields()
    return frozenset((fields.get("flags") or fields.get("Features") or "").split())


def isa_flags() -> tuple[str, ...]:
    """The inference-relevant flags of :data:`FEATURES` this CPU has, in that order."""
    flags = all_flags()
    return tuple(flag for flag in FEATURES if flag in flags)


def has_flag(flag: str) -> bool:
    """Whether /proc/cpuinfo lists ``flag`` (False where it cannot be read)."""
    return flag in all_flags()


def usable_cpus() -> int:
    """CPUs this process may run on (affinity mask; a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS / Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def openvino_capabilities(core: Any = None) -> tuple[str, ...] | None:
    """The OpenVINO CPU plugin's ``OPTIMIZATION_CAPABILITIES``, sorted; None without OpenVINO.

    Args:
        core: An ``openvino.Core`` to ask (one is made otherwise).

    ``$FLOWCLAS_CPU_CAPS`` replaces the answer (tests of the "no bf16" path, see the module doc).
    """
    override = os.environ.get(CPU_CAPS_ENV, "").strip()
    if override:
        return tuple(sorted({part.strip().upper() for part in override.split(",") if part.strip()}))
    if core is None:
        return _plugin_capabilities()
    return tuple(sorted(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")))


@functools.lru_cache(maxsize=1)
def _plugin_capabilities() -> tuple[str, ...] | None:
    try:
        import openvino
    except ImportError:
        return None
    return tuple(sorted(str(c) for c in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")))


def native_precisions(capabilities: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The precisions this CPU runs natively, of ``f32``, ``bf16`` and ``int8``.

    bf16 counts only where OpenVINO reports ``BF16`` *and* /proc/cpuinfo shows a bf16
    instruction set (:data:`BF16_FLAGS`; where /proc/cpuinfo is unreadable OpenVINO's word is
    taken): some OpenVINO versions list BF16 on plain AVX-512, where it is emulated and slow.
    int8 counts where OpenVINO reports ``INT8`` (on AVX2 it runs, without VNNI, at about f32
    speed; the AP gate and the benchmark decide whether it is worth it).

    Args:
        capabilities: OpenVINO CPU capabilities (default: :func:`openvino_capabilities`);
            without OpenVINO the instruction-set flags alone decide.
    """
    caps = openvino_capabilities() if capabilities is None else capabilities
    flags = all_flags()
    out = ["f32"]
    if caps is None:
        if flags & BF16_FLAGS:
            out.append("bf16")
        if flags & INT8_DOT_FLAGS:
            out.append("int8")
        return tuple(out)
    if "BF16" in caps and (not flags or flags & BF16_FLAGS or os.environ.get(CPU_CAPS_ENV)):
        out.append("bf16")
    if "INT8" in caps:
        out.append("int8")
    return tuple(out)


@dataclass(frozen=True)
class CPUInfo:
    """What :func:`cpu_info` found, for logs, /diagnostics, benchmark headers and error messages.

    Attributes:
        model: CPU name.
        flags: Inference-relevant instruction-set flags (:func:`isa_flags`).
        openvino: OpenVINO CPU capabilities, or None without OpenVINO.
        usable_cpus: CPUs this process may use.
    """

    model: str
    flags: tuple[str, ...]
    openvino: tuple[str, ...] | None
    usable_cpus: int

    def summary(self) -> str:
        """One line, e.g. ``AMD EPYC (avx2 avx512f avx512_bf16; OpenVINO CPU: BF16, FP32, INT8; 2 CPUs)``."""
        flags = " ".join(self.flags) or "flags unknown"
        ov = "OpenVINO not installed"
        if self.openvino is not None:
            ov = f"OpenVINO CPU: {', '.join(self.openvino)}"
        return f"{self.model} ({flags}; {ov}; {self.usable_cpus} usable CPUs)"


def cpu_info() -> CPUInfo:
    """Model, flags, OpenVINO capabilities and usable CPU count of this machine."""
    return CPUInfo(cpu_model(), isa_flags(), openvino_capabilities(), usable_cpus())


def unsupported_precision_message(precision: str, device: str = "CPU") -> str:
    """The one-line refusal of a precision this CPU lacks: names its capabilities, suggests ``auto``."""
    return (
        f"precision {precision} is not supported natively by this CPU: {cpu_info().summary()}; "
        f"use precision auto (picks the best precision {device} has that passes the AP gate) or f32"
    )
