"""``anomaly_node``: pixel-wise anomaly detection on one or more camera topics (lifecycle node).

Lifecycle:
    * configure: reads the configure-time parameters, loads the model
      (:func:`flowclas_ros.runtime.create_backend`) and creates the output publishers;
      a missing or bad checkpoint fails the transition with a one-line error;
    * activate: subscribes to the cameras and starts the inference thread;
    * deactivate: unsubscribes and stops the thread;
    * cleanup / shutdown: drops the publishers and frees the model (and GPU memory).

With ``autostart`` (default true) the node configures and activates itself at start,
so ``flowclas-node`` / ``ros2 run flowclas_ros anomaly_node`` just work; if that fails
the process logs the reason and exits with code 1 (a launch file shows it died). With
``autostart: false`` it waits, unconfigured, for a lifecycle manager.

Topics: see :mod:`flowclas_ros.ros.naming` and README.md.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image

from flowclas_ros.ros import diagnostics
from flowclas_ros.ros.declare import declare_parameters
from flowclas_ros.ros.depth_stage import DepthStage
from flowclas_ros.ros.frame_buffer import Frame, FrameSlots
from flowclas_ros.ros.naming import resolve_camera_names
from flowclas_ros.ros.outputs import CameraOutputs
from flowclas_ros.ros.params import (
    SPECS,
    CameraInput,
    RuntimeSettings,
    backend_options,
    camera_inputs,
    depth_inputs,
    depth_settings,
    runtime_settings,
    validate,
)
from flowclas_ros.ros.qos import input_qos, silence_causes
from flowclas_ros.ros.stats import ERROR, OK, CameraStats, assess
from flowclas_ros.ros.worker import InferenceWorker, ResultHook, WorkerContext, one_line
from flowclas_ros.runtime.base import InferenceBackend, create_backend

NODE_NAME = "anomaly_node"
IMAGE_TYPE, COMPRESSED_TYPE = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
DEPTH_PARAMETERS = frozenset({"depth_scale", "min_range", "max_range", "voxel_size"})
MODEL_ERROR_WINDOW_S = 10.0


def _check_prompt_set(backend: InferenceBackend, prompt_set: str) -> str | None:
    """Why ``prompt_set`` cannot be used with ``backend`` (one line), or None."""
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
    return None


class AnomalyNode(LifecycleNode):
    """The anomaly detection node; parameters are listed in :mod:`flowclas_ros.ros.params`."""

    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, **kwargs)
        self._values = declare_parameters(self)
        for name, value in self._values.items():
            reason = validate(name, value)
            if reason:
                raise ValueError(f"invalid parameter {reason}")
        depth_settings(self._values)  # cross-field checks (min_range < max_range); ValueError
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._state = "unconfigured"
        self._configure_error: str | None = None
        self._backend: InferenceBackend | None = None
        self._cameras: list[CameraInput] = []
        self._outputs: list[CameraOutputs] = []
        self._depth: DepthStage | None = None
        self._settings: RuntimeSettings | None = None
        self._stats: list[CameraStats] = []
        self._slots: FrameSlots | None = None
        self._subscriptions_in: list = []
        self._worker: InferenceWorker | None = None
        self._no_frame_timer = None
        self._activated_at = 0.0
        self._model_error: tuple[float, str] | None = None
        # Extension point: per-frame consumers after the 2D outputs (e.g. a depth/3D stage).
        self.result_hooks: list[ResultHook] = []
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(
            float(self._values["diagnostics_period_s"]), self._publish_diagnostics
        )

    @property
    def autostart(self) -> bool:
        """Whether ``main`` should configure and activate the node at start."""
        return bool(self._values["autostart"])

    @property
    def configure_error(self) -> str | None:
        """The reason of the last failed configure, or None."""
        return self._configure_error

    # ----------------------------------------------------------------- parameters
    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
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
            if reason is None and param.name == "prompt_set" and param.value and self._backend is not None:
                reason = _check_prompt_set(self._backend, param.value)
            if reason is None and param.name == "threshold" and self._backend is not None:
                if math.isnan(param.value) and self._backend.threshold is None:
                    reason = "threshold: NaN means the checkpoint's, but the checkpoint has none"
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        if any(param.name in DEPTH_PARAMETERS for param in params):
            candidate = dict(self._values) | {p.name: p.value for p in params if p.name in SPECS}
            try:
                depth_settings(candidate)
            except ValueError as err:
                return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        for param in params:
            if param.name in SPECS:
                self._values[param.name] = param.value
        if self._backend is not None:
            self._settings = runtime_settings(self._values, self._backend.threshold)
            prompts = [p.value for p in params if p.name == "prompt_set" and p.value]
            if prompts:
                self._switch_prompts(prompts[-1])

    def _switch_prompts(self, prompt_set: str) -> None:
        """Re-encodes the VL4AD prompts once (between two forwards); never per frame."""
        try:
            encoded = self._backend.set_prompts(prompt_set)
        except Exception as err:  # noqa: BLE001 - the node keeps serving with the old prompts
            self.get_logger().error(f"prompt_set {prompt_set!r} not applied: {one_line(err)}")
            return
        self.get_logger().info(f"prompt set {prompt_set!r} active ({'encoded' if encoded else 'cached'})")

    def _current_settings(self) -> RuntimeSettings:
        assert self._settings is not None
        return self._settings

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Loads the model and creates the publishers; a bad checkpoint fails with one line."""
        values = self._values
        try:
            topics = list(values["image_topics"])
            names = resolve_camera_names(topics, values["camera_names"])
            cameras = camera_inputs(topics, values["compressed"], names)
            depth = depth_inputs(values["depth_topics"], values["camera_info_topics"], topics)
            if not values["checkpoint"]:
                raise ValueError("parameter 'checkpoint' is empty: set it to a checkpoint directory")
            options = backend_options(
                values["backend"],
                values["input_size"],
                values["max_batch"],
                len(cameras),
                values["precision"],
            )
            backend = create_backend(values["backend"], values["checkpoint"], values["device"], **options)
        except Exception as err:  # noqa: BLE001 - any load failure becomes one clear line
            return self._fail_configure(err)
        try:
            if values["backend"] == "torch" and list(values["input_size"]) != [0, 0]:
                backend.config.preprocess.input_size = tuple(int(v) for v in values["input_size"])
            settings = runtime_settings(values, backend.threshold)
            if values["prompt_set"]:
                reason = _check_prompt_set(backend, values["prompt_set"])
                if reason:
                    raise ValueError(reason)
                backend.set_prompts(values["prompt_set"])
        except Exception as err:  # noqa: BLE001
            backend.close()
            return self._fail_configure(err)
        self._backend, self._cameras, self._settings = backend, cameras, settings
        self._diagnostics_timer.timer_period_ns = int(float(values["diagnostics_period_s"]) * 1e9)
        self._outputs = [CameraOutputs.create(self, camera.name) for camera in cameras]
        self._depth = DepthStage(self, cameras, depth) if any(depth) else None
        self._configure_error = None
        self._state = "inactive"
        size = backend.config.preprocess.input_size
        self.get_logger().info(
            f"configured: backend {backend.describe()}, input {size[0]}x{size[1]}, "
            f"threshold {settings.threshold:.4g}, cameras: "
            + ", ".join(f"{c.topic} -> ~/{c.name}/" for c in cameras)
            + "".join(
                f"; 3D for {c.name}: {d.depth_topic} + {d.info_topic}" for c, d in zip(cameras, depth) if d
            )
        )
        return TransitionCallbackReturn.SUCCESS

    def _fail_configure(self, err: BaseException) -> TransitionCallbackReturn:
        self._configure_error = one_line(err)
        self.get_logger().error(f"configure failed: {self._configure_error}")
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribes to the cameras and starts the inference thread."""
        assert self._backend is not None
        self._slots = FrameSlots(len(self._cameras))
        self._stats = [CameraStats() for _ in self._cameras]
        self._model_error = None
        qos = input_qos(self._values["qos_reliability"], int(self._values["qos_depth"]))
        for index, camera in enumerate(self._cameras):
            msg_type = CompressedImage if camera.compressed else Image
            self._subscriptions_in.append(
                self.create_subscription(msg_type, camera.topic, self._frame_callback(index), qos)
            )
        if self._depth is not None:
            self._depth.subscribe(self)
        self._worker = InferenceWorker(
            WorkerContext(
                backend=self._backend,
                cameras=self._cameras,
                outputs=self._outputs,
                stats=self._stats,
                slots=self._slots,
                settings=self._current_settings,
                max_image_side=int(self._values["max_image_side"]),
                logger=self.get_logger(),
                on_model_error=self._record_model_error,
                result_hooks=self.result_hooks,
                depth=self._depth,
            )
        )
        self._worker.start()
        self._activated_at = time.monotonic()
        self._no_frame_timer = self.create_timer(
            float(self._values["no_frame_warning_s"]), self._check_silence
        )
        self._state = "active"
        self.get_logger().info("active: waiting for images")
        return TransitionCallbackReturn.SUCCESS

    def _frame_callback(self, index: int):
        slots, stats = self._slots, self._stats[index]

        def on_frame(msg: Image | CompressedImage) -> None:
            # O(1): store and count; decoding and inference happen in the worker.
            slots.put(Frame(index, msg, time.monotonic_ns()))
            stats.mark_received()

        return on_frame

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribes and stops the inference thread (after its current batch)."""
        self._stop_processing()
        self._state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Drops the publishers and frees the model."""
        self._release_model()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stops everything from any state."""
        self.release()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Frees what it can and goes back to unconfigured."""
        self.release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Stops processing and frees the model, whatever the state (idempotent)."""
        self._stop_processing()
        self._release_model()

    def _stop_processing(self) -> None:
        for subscription in self._subscriptions_in:
            self.destroy_subscription(subscription)
        self._subscriptions_in = []
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self._depth is not None:  # after the worker: it owns the marker tracker while running
            self._depth.unsubscribe(self, clear_markers=self.context.ok())
        if self._no_frame_timer is not None:
            self.destroy_timer(self._no_frame_timer)
            self._no_frame_timer = None

    def _release_model(self) -> None:
        for outputs in self._outputs:
            outputs.destroy(self)
        self._outputs = []
        if self._depth is not None:
            self._depth.destroy(self)
            self._depth = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None
            gc.collect()  # drop the last references so GPU memory really goes back
        self._settings = None

    # ----------------------------------------------------------------- health
    def _record_model_error(self, reason: str) -> None:
        self._model_error = (time.monotonic(), reason)

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
            causes = silence_causes(self, camera.topic, expected, qos)
            self.get_logger().warning(
                f"no frame on {self.resolve_topic_name(camera.topic)} after "
                f"{self._values['no_frame_warning_s']:g} s; likely: " + "; ".join(causes)
            )

    def _node_status(self, hardware_id: str) -> tuple[int, str, dict[str, str]]:
        backend = self._backend
        extra = {"state": self._state, "backend": self._values["backend"], "device": self._values["device"]}
        if backend is not None:
            extra["model"] = backend.describe()  # e.g. "openvino-bf16 on CPU (inference precision bf16)"
        if backend is not None and self._settings is not None:
            size = backend.config.preprocess.input_size
            extra |= {"input_size": f"{size[0]}x{size[1]}", "threshold": f"{self._settings.threshold:.6g}"}
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

    def _recent_model_error(self) -> str | None:
        if self._model_error and time.monotonic() - self._model_error[0] <= MODEL_ERROR_WINDOW_S:
            return self._model_error[1]
        return None

    def _publish_diagnostics(self) -> None:
        name = self.get_fully_qualified_name()
        hardware_id = f"{self._values['backend']}@{self._values['device']}"
        level, message, extra = self._node_status(hardware_id)
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


def _parse_cli(argv: list[str]) -> None:
    """Handles ``--help`` and rejects unknown non-ROS arguments (ROS ones are left to rclpy)."""
    parser = argparse.ArgumentParser(
        prog="flowclas-node",
        description="Start flowclas_ros's anomaly_node (a lifecycle node). Parameters are set with "
        "'--ros-args -p NAME:=VALUE' or '--ros-args --params-file config/anomaly.yaml'; "
        "see config/anomaly.yaml for the list.",
    )
    parser.parse_args(remove_ros_args(args=argv)[1:])


def main(args: list[str] | None = None) -> int:
    """Runs the node until SIGINT/SIGTERM.

    Args:
        args: Full argument vector including the program name (default ``sys.argv``);
            may contain ``--ros-args ...``.

    Returns:
        Exit code: 0 on a clean shutdown, 1 when autostart could not configure or activate
        (e.g. bad checkpoint), 2 on bad parameters.
    """
    argv = list(sys.argv if args is None else args)
    _parse_cli(argv)
    rclpy.init(args=argv)  # installs SIGINT/SIGTERM handlers: spin() raises ExternalShutdownException
    node = None
    try:
        node = AnomalyNode()
        if node.autostart:
            # Failures are logged (one line) by the transition callbacks themselves.
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, ParameterException) as err:
        print(f"flowclas-node: {one_line(err)}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
