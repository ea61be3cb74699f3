"""The node's parameter handling: checks before a change, applying it, thresholds from the checkpoint.

A mixin of :class:`flowclas_ros.ros.anomaly_node.AnomalyNode` (it uses the node's
``_values``, ``_backend``, ``_settings``, ``_state`` and ``_filled_in``); the parameters
themselves are listed in :mod:`flowclas_ros.ros.params`.
"""

from __future__ import annotations

import math
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

from flowclas_ros.ros.oneline import one_line
from flowclas_ros.ros.param_validation import validate
from flowclas_ros.ros.params import NAN_MEANS_CHECKPOINT, SPECS
from flowclas_ros.ros.settings import (
    CheckpointThresholds,
    RuntimeSettings,
    check_backend_choice,
    depth_settings,
    effective_thresholds,
    runtime_settings,
)
from flowclas_ros.runtime.base import InferenceBackend

DEPTH_PARAMETERS = frozenset({"depth_scale", "min_range", "max_range", "voxel_size"})
BACKEND_CHOICE = frozenset({"backend", "device", "precision"})


def _asks_checkpoint_threshold(params: list[Parameter]) -> bool:
    """Whether ``params`` set ``threshold`` or ``image_threshold`` to NaN (= the checkpoint's)."""
    return any(
        p.name in NAN_MEANS_CHECKPOINT and isinstance(p.value, float) and math.isnan(p.value) for p in params
    )


def check_prompt_set(backend: InferenceBackend, values: dict[str, Any]) -> str | None:
    """Why ``prompt_set`` cannot be used at configure with ``backend`` (one line), or None.

    The checkpoint's thresholds were calibrated on the fused score of its own prompt set, so
    another set needs thresholds chosen for it: both threshold parameters must then be set.
    """
    prompt_set = values["prompt_set"]
    if not backend.supports_prompts:
        return (
            f"prompt_set: the {backend.name} backend with this checkpoint cannot switch prompts "
            "(needs a checkpoint with a VL4AD text scorer and the torch backend)"
        )
    from flowclas_ros.model.vl4ad.prompts import load_prompt_set  # light: no torch / open_clip

    try:
        load_prompt_set(prompt_set)
    except Exception as err:  # noqa: BLE001 - reported as the rejection reason
        return f"prompt_set: {one_line(err)}"
    own = backend.config.text.prompt_set if backend.config.text is not None else ""
    unset = [name for name in NAN_MEANS_CHECKPOINT if math.isnan(float(values[name]))]
    if prompt_set != own and unset:
        return (
            f"prompt_set: {prompt_set!r} is not the checkpoint's set ({own!r}), whose thresholds were "
            f"calibrated on its own fused score; also set {' and '.join(unset)} for {prompt_set!r}"
        )
    return None


class ParameterMixin:
    """Parameter callbacks of the anomaly node (``add_on_set_parameters_callback`` and post-set)."""

    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        reason = self._check_backend_change(params)
        if reason:  # before "read at configure": say why this value can never work here
            return SetParametersResult(successful=False, reason=reason)
        for param in params:
            spec = SPECS.get(param.name)
            if spec is None:  # rclpy's own (use_sim_time)
                continue
            reason = validate(param.name, param.value)
            if reason is None and not spec.runtime and self._state != "unconfigured":
                reason = (
                    f"{param.name} is read at configure; deactivate and clean up the node first "
                    f"(it is {self._state})"
                )
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        if self._backend is not None and _asks_checkpoint_threshold(params):
            candidate = dict(self._values) | {p.name: p.value for p in params if p.name in SPECS}
            try:  # NaN while configured: the checkpoint's value (refused if it has none)
                effective_thresholds(candidate, self._checkpoint_thresholds())
            except ValueError as err:
                return SetParametersResult(successful=False, reason=str(err))
        if any(param.name in DEPTH_PARAMETERS for param in params):
            candidate = dict(self._values) | {p.name: p.value for p in params if p.name in SPECS}
            try:
                depth_settings(candidate)
            except ValueError as err:
                return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _check_backend_change(self, params: list[Parameter]) -> str | None:
        """The cross-field check of backend / device / precision for a parameter change."""
        changed = {p.name: p.value for p in params if p.name in BACKEND_CHOICE}
        if not changed or any(validate(name, value) for name, value in changed.items()):
            return None  # nothing to cross-check, or the per-value check says why
        return check_backend_choice(dict(self._values) | changed)

    def _check_and_apply(self, params: list[Parameter]) -> SetParametersResult:
        result = self._check_parameters(params)
        if result.successful:
            self._apply_parameters(params)
        return result

    def _apply_parameters(self, params: list[Parameter]) -> None:
        for param in params:
            if param.name in SPECS:
                self._values[param.name] = param.value
        if self._backend is not None:
            checkpoint = self._checkpoint_thresholds()
            self._settings = runtime_settings(self._values, checkpoint)
            if _asks_checkpoint_threshold(params):
                # NaN at runtime: back to the checkpoint's, shown as the number in use (as at configure).
                # (Humble applies before it stores the value: there the parameter keeps showing NaN.)
                self._fill_in_thresholds(effective_thresholds(self._values, checkpoint), checkpoint)

    def _checkpoint_thresholds(self) -> CheckpointThresholds:
        assert self._backend is not None
        return CheckpointThresholds(self._backend.threshold, self._backend.image_threshold)

    def _current_settings(self) -> RuntimeSettings:
        assert self._settings is not None
        return self._settings

    def _fill_in_thresholds(self, thresholds: tuple[float, float], checkpoint: CheckpointThresholds) -> None:
        """Sets NaN threshold parameters to the values in use (``ros2 param get`` shows numbers)."""
        filled = {
            name: value
            for name, value in zip(NAN_MEANS_CHECKPOINT, thresholds)
            if math.isnan(float(self._values[name]))
        }
        if "image_threshold" in filled and checkpoint.image_threshold is None:
            self.get_logger().warning(
                "the checkpoint has no image_threshold (calibrated by flowclas-train since issue 16); "
                f"is_anomalous uses the pixel threshold {thresholds[0]:.4g}: set image_threshold or retrain"
            )
        if filled:
            self.set_parameters([Parameter(name, Parameter.Type.DOUBLE, v) for name, v in filled.items()])
        self._filled_in.update(filled)  # emptied when the model is released
