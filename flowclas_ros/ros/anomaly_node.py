"""``anomaly_node``: pixel-wise anomaly detection on one or more camera topics (lifecycle node).

Lifecycle (every transition is logged at INFO):
    * configure: reads the configure-time parameters, loads the model
      (:func:`flowclas_ros.runtime.create_backend`) and creates the output publishers
      (lifecycle publishers: silent until activated); ``threshold`` / ``image_threshold``
      given as NaN are set to the checkpoint's values, so ``ros2 param get`` shows what is
      used; a missing or bad checkpoint fails the transition with a one-line error;
    * activate: enables the publishers, subscribes to the cameras, starts the inference thread;
    * deactivate: unsubscribes, stops the thread, deletes shown markers, disables the publishers;
    * cleanup / shutdown: drops the publishers and frees the model (and GPU memory); threshold
      parameters that were filled in from the checkpoint go back to NaN.

Only /diagnostics is published in every state (it reports the lifecycle state).
Topics: see :mod:`flowclas_ros.ros.naming` and README.md; the CLI is :mod:`flowclas_ros.ros.node`.
"""

from __future__ import annotations

import gc
import math
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from flowclas_ros.ros.declare import declare_parameters
from flowclas_ros.ros.depth_stage import DepthStage
from flowclas_ros.ros.frame_buffer import Frame, FrameSlots
from flowclas_ros.ros.frame_stages import FrameStage, call_hooks, load_stages
from flowclas_ros.ros.health import NodeHealthMixin
from flowclas_ros.ros.learn_action import LearnActionMixin
from flowclas_ros.ros.naming import resolve_camera_names
from flowclas_ros.ros.node_parameters import ParameterMixin, check_prompt_set
from flowclas_ros.ros.oneline import one_line
from flowclas_ros.ros.outputs import CameraOutputs
from flowclas_ros.ros.param_validation import validate
from flowclas_ros.ros.qos import input_qos
from flowclas_ros.ros.settings import (
    CameraInput,
    CheckpointThresholds,
    RuntimeSettings,
    backend_options,
    camera_inputs,
    check_backend_choice,
    depth_inputs,
    depth_settings,
    effective_thresholds,
    runtime_settings,
)
from flowclas_ros.ros.stats import CameraStats
from flowclas_ros.ros.worker import InferenceWorker, WorkerContext
from flowclas_ros.runtime import registry
from flowclas_ros.runtime.base import InferenceBackend, create_backend

NODE_NAME = "anomaly_node"


class AnomalyNode(LearnActionMixin, ParameterMixin, NodeHealthMixin, LifecycleNode):
    """The anomaly detection node; parameters are listed in :mod:`flowclas_ros.ros.params`."""

    def __init__(self, **kwargs: Any):
        super().__init__(NODE_NAME, **kwargs)
        self._values = declare_parameters(self)
        for name, value in self._values.items():
            reason = validate(name, value)
            if reason:
                raise ValueError(f"invalid parameter {reason}")
        depth_settings(self._values)  # cross-field checks (min_range < max_range); ValueError
        reason = check_backend_choice(self._values)  # e.g. bf16 on a CPU without it
        if reason:
            raise ValueError(f"invalid parameter {reason}")
        if hasattr(self, "add_post_set_parameters_callback"):  # Iron and later (Jazzy)
            self.add_on_set_parameters_callback(self._check_parameters)
            self.add_post_set_parameters_callback(self._apply_parameters)
        else:  # Humble has no post-set callbacks: apply as soon as the checks pass
            self.add_on_set_parameters_callback(self._check_and_apply)
        self._state = "unconfigured"
        self._configure_error: str | None = None
        self._backend: InferenceBackend | None = None
        self._cameras: list[CameraInput] = []
        self._outputs: list[CameraOutputs] = []
        self._stages: list[FrameStage] = []  # per frame, in order: the 3D stage, then extra_stages
        self._settings: RuntimeSettings | None = None
        self._filled_in: dict[str, float] = {}  # threshold parameters set from the checkpoint
        self._stats: list[CameraStats] = []
        self._slots: FrameSlots | None = None
        self._subscriptions_in: list = []
        self._worker: InferenceWorker | None = None
        self._no_frame_timer = None
        self._activated_at = 0.0
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(
            float(self._values["diagnostics_period_s"]), self._publish_diagnostics
        )
        self._create_learning_interfaces()  # ~/load_model, ~/rollback_model, ~/learn_nominal

    @property
    def autostart(self) -> bool:
        """Whether ``main`` should configure and activate the node at start."""
        return bool(self._values["autostart"])

    @property
    def finalized(self) -> bool:
        """Whether the lifecycle ``shutdown`` transition has run (``main`` then exits)."""
        return self._state == "finalized"

    @property
    def configure_error(self) -> str | None:
        """The reason of the last failed configure, or None."""
        return self._configure_error

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Loads the model and creates the publishers; a bad checkpoint fails with one line."""
        self.get_logger().info("configuring")
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
                values["num_threads"],
            )
            backend = create_backend(values["backend"], values["checkpoint"], values["device"], **options)
        except Exception as err:  # noqa: BLE001 - any load failure becomes one clear line
            return self._fail_configure(err)
        try:
            if not registry.spec(values["backend"]).sized and list(values["input_size"]) != [0, 0]:
                backend.config.preprocess.resize_to(values["input_size"])
            checkpoint = CheckpointThresholds(backend.threshold, backend.image_threshold)
            thresholds = effective_thresholds(values, checkpoint)
            if values["prompt_set"]:
                reason = check_prompt_set(backend, values)
                if reason:
                    raise ValueError(reason)
                backend.set_prompts(values["prompt_set"])
            extra = load_stages(list(values["extra_stages"]), self, cameras)
        except Exception as err:  # noqa: BLE001
            backend.close()
            return self._fail_configure(err)
        self._backend, self._cameras = backend, cameras
        self._fill_in_thresholds(thresholds, checkpoint)
        self._settings = runtime_settings(values, checkpoint)
        self._diagnostics_timer.timer_period_ns = int(float(values["diagnostics_period_s"]) * 1e9)
        self._outputs = [CameraOutputs.create(self, camera.name) for camera in cameras]
        self._stages = ([DepthStage(self, cameras, depth)] if any(depth) else []) + extra
        self._configure_error = None
        self._state = "inactive"
        self._start_history()  # serving identity, learn_dir
        size = backend.config.preprocess.input_size
        size_text = f"{size[0]}x{size[1]}" if backend.config.preprocess.resize else "native resolution"
        self.get_logger().info(
            f"configured: backend {backend.describe()}, input {size_text}, "
            f"threshold {self._settings.threshold:.4g}, "
            f"image_threshold {self._settings.image_threshold:.4g}, "
            + (f"prompt set {values['prompt_set']!r}, " if values["prompt_set"] else "")
            + "cameras: "
            + ", ".join(f"{self.resolve_topic_name(c.topic)} -> ~/{c.name}/" for c in cameras)
            + "".join(
                f"; 3D for {c.name}: {self.resolve_topic_name(d.depth_topic)} + "
                f"{self.resolve_topic_name(d.info_topic)}"
                for c, d in zip(cameras, depth)
                if d
            )
            + "".join(f"; stage {spec}" for spec in values["extra_stages"])
        )
        return TransitionCallbackReturn.SUCCESS

    def _fail_configure(self, err: BaseException) -> TransitionCallbackReturn:
        self._configure_error = one_line(err)
        self.get_logger().error(f"configure failed: {self._configure_error}")
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enables the publishers, subscribes to the cameras and starts the inference thread."""
        assert self._backend is not None
        self.get_logger().info("activating")
        super().on_activate(state)  # enables the lifecycle publishers
        self._slots = FrameSlots(len(self._cameras))
        self._stats = [CameraStats() for _ in self._cameras]
        self._model_error = None
        qos = input_qos(self._values["qos_reliability"], int(self._values["qos_depth"]))
        for index, camera in enumerate(self._cameras):
            msg_type = CompressedImage if camera.compressed else Image
            self._subscriptions_in.append(
                self.create_subscription(msg_type, camera.topic, self._frame_callback(index), qos)
            )
        call_hooks(self._stages, "subscribe", self.get_logger(), self)
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
                stages=self._stages,
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
        self.get_logger().info("deactivating")
        self._stop_processing()  # publishes the marker DELETEs: before the publishers go silent
        super().on_deactivate(state)
        self._state = "inactive"
        self.get_logger().info("inactive: unsubscribed, publishers disabled")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Drops the publishers and frees the model."""
        self.get_logger().info("cleaning up")
        self._release_model()
        self._state = "unconfigured"
        self.get_logger().info("unconfigured: model and publishers released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stops everything from any state."""
        self.get_logger().info(f"shutting down (from {state.label})")
        self.release()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Frees what it can and goes back to unconfigured."""
        self.get_logger().error(f"error in transition from {state.label}: releasing everything")
        self.release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Stops processing and frees the model, whatever the state (idempotent)."""
        self._stop_processing()
        self._release_model()

    def _stop_processing(self) -> None:
        self._stop_learning("the node stopped serving (deactivated or shutting down)")
        for subscription in self._subscriptions_in:
            self.destroy_subscription(subscription)
        self._subscriptions_in = []
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        # After the worker: it owns the stages (the 3D stage's marker tracker) while running.
        call_hooks(self._stages, "unsubscribe", self.get_logger(), self, publish=self.context.ok())
        if self._no_frame_timer is not None:
            self.destroy_timer(self._no_frame_timer)
            self._no_frame_timer = None

    def _release_model(self) -> None:
        with self._install_lock:  # not while a swapped-in model is being installed
            for outputs in self._outputs:
                outputs.destroy(self)
            self._outputs = []
            call_hooks(self._stages, "destroy", self.get_logger(), self)
            self._stages = []
            if self._backend is not None:
                self._backend.close()
                self._backend = None
                gc.collect()  # drop the last references so GPU memory really goes back
            self._settings = None
            # Thresholds filled in from this checkpoint go back to "the checkpoint's" (unless changed).
            restore = [name for name, value in self._filled_in.items() if self._values[name] == value]
            self._filled_in = {}
            if restore and self.context.ok():
                self.set_parameters([Parameter(name, Parameter.Type.DOUBLE, math.nan) for name in restore])
