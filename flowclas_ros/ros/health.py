"""Health reporting of ``anomaly_node``: /diagnostics and the one-shot "no frame yet" warning.

A mixin of :class:`flowclas_ros.ros.anomaly_node.AnomalyNode`: it reads the node's state
(``_state``, ``_values``, ``_backend``, ``_settings``, ``_cameras``, ``_stats``, ``_slots``,
``_worker``, ``_activated_at``, ``_configure_error``) and never changes it, except for the
model-error record it owns.
"""

from __future__ import annotations

import time

from flowclas_ros.ros import diagnostics
from flowclas_ros.ros.qos import input_qos, silence_causes
from flowclas_ros.ros.stats import ERROR, OK, assess

IMAGE_TYPE, COMPRESSED_TYPE = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
MODEL_ERROR_WINDOW_S = 10.0
"""A model failure keeps the node's status at ERROR for this long."""


class NodeHealthMixin:
    """/diagnostics publishing and silent-topic hints (see the module docstring)."""

    _model_error: tuple[float, str] | None = None

    def _record_model_error(self, reason: str) -> None:
        self._model_error = (time.monotonic(), reason)

    def _recent_model_error(self) -> str | None:
        if self._model_error and time.monotonic() - self._model_error[0] <= MODEL_ERROR_WINDOW_S:
            return self._model_error[1]
        return None

    def _check_silence(self) -> None:
        """One-shot: names the likely causes for every camera that has not sent a frame yet."""
        if self._no_frame_timer is not None:
            self.destroy_timer(self._no_frame_timer)
            self._no_frame_timer = None
        if self._slots is None:
            return
        received, _ = self._slots.counts()
        qos = input_qos(self._values["qos_reliability"], int(self._values["qos_depth"]))
        for camera, count in zip(self._cameras, received):
            if count:
                continue
            expected = COMPRESSED_TYPE if camera.compressed else IMAGE_TYPE
            topic = self.resolve_topic_name(camera.topic)
            causes = silence_causes(self, topic, expected, qos)
            self.get_logger().warning(
                f"no frame on {topic} after {self._values['no_frame_warning_s']:g} s; likely: "
                + "; ".join(causes)
            )

    def _node_status(self) -> tuple[int, str, dict[str, str]]:
        backend = self._backend
        extra = {"state": self._state, "backend": self._values["backend"], "device": self._values["device"]}
        if backend is not None:
            extra["model"] = backend.describe()  # e.g. "openvino-bf16 on CPU (inference precision bf16; ...)"
            if backend.precision_reason:  # e.g. "auto: native bf16 and the export passed the bf16 AP gate"
                extra["precision"] = f"{getattr(backend, 'precision', '?')} ({backend.precision_reason})"
            extra["model_identity"] = self.serving_identity  # sha256 of the serving checkpoint
            extra["model_path"] = self._serving.path if self._serving is not None else ""
        extra["learning"] = self.learning_phase  # idle, or the phase of the running ~/learn_nominal goal
        if backend is not None and self._settings is not None:
            size = backend.config.preprocess.input_size
            extra |= {
                "input_size": f"{size[0]}x{size[1]}",
                "threshold": f"{self._settings.threshold:.6g}",
                "image_threshold": f"{self._settings.image_threshold:.6g}",
            }
        worker = self._worker
        if worker is not None and worker.batches:
            extra |= {
                "batches": str(worker.batches),
                "frames_per_batch": f"{worker.batched_frames / worker.batches:.2f}",
                "largest_batch": str(worker.largest_batch),
            }
        if self._configure_error:
            return ERROR, f"configure failed: {self._configure_error}", extra
        error = self._recent_model_error()
        if error:
            return ERROR, f"model failure: {error}", extra
        return OK, self._state, extra

    def _publish_diagnostics(self) -> None:
        """Publishes the node's status and, while active, one status per camera."""
        name = self.get_fully_qualified_name()
        hardware_id = f"{self._values['backend']}@{self._values['device']}"
        level, message, extra = self._node_status()
        statuses = [diagnostics.node_status(name, hardware_id, level, message, extra)]
        if self._state == "active" and self._slots is not None and self._settings is not None:
            received, dropped = self._slots.counts()
            active_for = time.monotonic() - self._activated_at
            for index, camera in enumerate(self._cameras):
                report = self._stats[index].report(received[index], dropped[index])
                cam_level, cam_message = assess(
                    report,
                    active_for_s=active_for,
                    no_frame_warning_s=float(self._values["no_frame_warning_s"]),
                    drop_warn_fraction=self._settings.drop_warn_fraction,
                    model_error=self._recent_model_error(),
                )
                statuses.append(
                    diagnostics.camera_status(
                        name,
                        camera.name,
                        self.resolve_topic_name(camera.topic),
                        hardware_id,
                        cam_level,
                        cam_message,
                        report,
                        {"backend": self._values["backend"], "device": self._values["device"]},
                    )
                )
        self._diagnostics_pub.publish(diagnostics.diagnostic_array(self.get_clock().now().to_msg(), statuses))
