"""Builds the /diagnostics message (diagnostic_updater is not available, so it is published directly)."""

from __future__ import annotations

import math

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from flowclas_ros.ros.stats import WindowReport

_LEVELS = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR}


def _fmt(value: float) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.2f}"


def camera_status(
    node_name: str,
    camera: str,
    topic: str,
    hardware_id: str,
    level: int,
    message: str,
    report: WindowReport,
    extra: dict[str, str],
) -> DiagnosticStatus:
    """One camera's status: rates, latencies, drop/malformed/NaN counters plus ``extra`` values."""
    values = {
        "input_topic": topic,
        "input_rate_hz": _fmt(report.input_hz),
        "processed_rate_hz": _fmt(report.processed_hz),
        "latency_p50_ms": _fmt(report.latency_p50_ms),
        "latency_p95_ms": _fmt(report.latency_p95_ms),
        "model_p50_ms": _fmt(report.model_p50_ms),
        "frames_received": str(report.total_received),
        "frames_processed": str(report.total_processed),
        "frames_dropped": str(report.total_dropped),
        "frames_malformed": str(report.total_malformed),
        "outputs_nonfinite": str(report.total_nonfinite),
        "stage_errors": str(report.total_stage_errors),
        "dropped_in_period": str(report.dropped),
        **extra,
    }
    return DiagnosticStatus(
        level=_LEVELS[level],
        name=f"{node_name}: {camera}",
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )


def node_status(
    node_name: str, hardware_id: str, level: int, message: str, extra: dict[str, str]
) -> DiagnosticStatus:
    """The node-level status (lifecycle state, backend, device, model errors)."""
    return DiagnosticStatus(
        level=_LEVELS[level],
        name=f"{node_name}: node",
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in extra.items()],
    )


def diagnostic_array(stamp: Time, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    """Wraps statuses with a header stamp."""
    msg = DiagnosticArray(status=statuses)
    msg.header.stamp = stamp
    return msg
