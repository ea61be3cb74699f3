"""The gate a learned model must pass before it is swapped in (no ROS).

Accepted only if, on the run's held-out frames, its false-alarm rate is **lower** than the
serving model's and its AP on synthetic anomalies has not fallen by more than ``ap_margin``
(the ``learn_ap_margin`` parameter, default 0.02).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Figures:
    """One model's validation figures."""

    false_alarm_rate: float
    ap: float


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict and its one-line reason."""

    passed: bool
    reason: str


def decide(before: Figures, after: Figures, ap_margin: float) -> GateDecision:
    """Applies the gate (see the module docstring)."""
    far = (
        f"false-alarm rate {before.false_alarm_rate:.4g} -> {after.false_alarm_rate:.4g}, "
        f"synthetic-anomaly AP {before.ap:.4g} -> {after.ap:.4g}"
    )
    if not math.isfinite(after.false_alarm_rate) or not math.isfinite(after.ap):
        return GateDecision(False, f"gate failed: the new model's figures are not finite ({far})")
    if not after.false_alarm_rate < before.false_alarm_rate:
        return GateDecision(False, f"gate failed: false-alarm rate not lower ({far})")
    if math.isfinite(before.ap) and after.ap < before.ap - ap_margin:
        return GateDecision(False, f"gate failed: AP fell by more than {ap_margin:g} ({far})")
    return GateDecision(True, f"gate passed ({far})")
