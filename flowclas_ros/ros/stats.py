"""Per-camera counters, latency windows and the health verdict behind /diagnostics (no rclpy)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

OK, WARN, ERROR = 0, 1, 2
"""Levels, equal to diagnostic_msgs/DiagnosticStatus OK, WARN, ERROR."""

LATENCY_WINDOW_S = 10.0
MIN_FRAMES_FOR_DROP_WARNING = 5


@dataclass
class WindowReport:
    """One camera's activity over one diagnostics period (plus recent latencies).

    Rates are in Hz; latencies in ms (NaN when no frame finished in the window).
    """

    input_hz: float
    processed_hz: float
    received: int
    dropped: int
    malformed: int
    nonfinite: int
    total_received: int
    total_processed: int
    total_dropped: int
    total_malformed: int
    total_nonfinite: int
    latency_p50_ms: float
    latency_p95_ms: float
    model_p50_ms: float
    seconds_since_frame: float | None
    stage_errors: int = 0
    total_stage_errors: int = 0


@dataclass
class CameraStats:
    """Worker-side counters of one camera (received/dropped come from the frame slots)."""

    processed: int = 0
    malformed: int = 0
    nonfinite: int = 0
    stage_errors: int = 0
    last_frame_time: float | None = None
    latencies: deque = field(default_factory=lambda: deque(maxlen=512))  # (monotonic s, node ms, model ms)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _prev: tuple[int, int, int, int, int, int, float] | None = None

    def record_result(self, latency_ms: float, model_ms: float) -> None:
        """One frame published; ``latency_ms`` is receive -> publish inside the node."""
        with self._lock:
            self.processed += 1
            self.latencies.append((time.monotonic(), latency_ms, model_ms))

    def record_malformed(self) -> None:
        """One frame skipped because it could not be decoded."""
        with self._lock:
            self.malformed += 1

    def record_nonfinite(self) -> None:
        """One model output with NaN/inf, not published."""
        with self._lock:
            self.nonfinite += 1

    def record_stage_error(self) -> None:
        """One frame stage raised on a frame (its other outputs were published)."""
        with self._lock:
            self.stage_errors += 1

    def mark_received(self) -> None:
        """Called from the subscription callback (cheap)."""
        self.last_frame_time = time.monotonic()

    def report(self, received_total: int, dropped_total: int, now: float | None = None) -> WindowReport:
        """Rates and deltas since the previous call (the first call counts from zero)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            errors = (self.malformed, self.nonfinite, self.stage_errors)
            totals = (received_total, self.processed, dropped_total, *errors)
            samples = [(lat, model) for t, lat, model in self.latencies if now - t <= LATENCY_WINDOW_S]
            prev = self._prev
            self._prev = (*totals, now)
        if prev is None:
            deltas, elapsed = totals, None
        else:
            deltas, elapsed = tuple(a - b for a, b in zip(totals, prev[:-1])), now - prev[-1]
        rate = (lambda n: n / elapsed) if elapsed and elapsed > 0 else (lambda n: float("nan"))
        lat = np.asarray([s[0] for s in samples], np.float64)
        model = np.asarray([s[1] for s in samples], np.float64)
        return WindowReport(
            input_hz=rate(deltas[0]),
            processed_hz=rate(deltas[1]),
            received=deltas[0],
            dropped=deltas[2],
            malformed=deltas[3],
            nonfinite=deltas[4],
            total_received=totals[0],
            total_processed=totals[1],
            total_dropped=totals[2],
            total_malformed=totals[3],
            total_nonfinite=totals[4],
            latency_p50_ms=float(np.percentile(lat, 50)) if lat.size else float("nan"),
            latency_p95_ms=float(np.percentile(lat, 95)) if lat.size else float("nan"),
            model_p50_ms=float(np.percentile(model, 50)) if model.size else float("nan"),
            seconds_since_frame=None if self.last_frame_time is None else now - self.last_frame_time,
            stage_errors=deltas[5],
            total_stage_errors=totals[5],
        )


def assess(
    report: WindowReport,
    *,
    active_for_s: float,
    no_frame_warning_s: float,
    drop_warn_fraction: float,
    model_error: str | None,
) -> tuple[int, str]:
    """The level and one-line reason for one camera.

    ERROR: the model failed or produced NaN/inf in this window. WARN: no frames for longer than
    ``no_frame_warning_s``, malformed frames, frame stage errors, or more than ``drop_warn_fraction`` of the
    frames dropped. Otherwise OK.
    """
    if model_error:
        return ERROR, f"model failure: {model_error}"
    if report.nonfinite:
        return ERROR, f"{report.nonfinite} model output(s) with NaN/inf (not published)"
    waited = active_for_s if report.seconds_since_frame is None else report.seconds_since_frame
    if waited > no_frame_warning_s:
        return WARN, f"no frames for {waited:.0f} s"
    reasons = []
    if report.malformed:
        reasons.append(f"{report.malformed} malformed frame(s) skipped")
    if report.stage_errors:
        reasons.append(f"{report.stage_errors} frame stage error(s) (see the log)")
    if (
        report.received >= MIN_FRAMES_FOR_DROP_WARNING
        and report.dropped > drop_warn_fraction * report.received
    ):
        reasons.append(
            f"high drop rate: {report.dropped}/{report.received} frames dropped "
            "(camera faster than the model)"
        )
    if reasons:
        return WARN, "; ".join(reasons)
    return OK, f"ok: {report.input_hz:.1f} Hz in, {report.processed_hz:.1f} Hz processed"
