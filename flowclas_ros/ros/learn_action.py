"""``~/learn_nominal`` (``flowclas_ros/action/LearnNominal``): learn the site as normal, while serving.

A mixin of :class:`flowclas_ros.ros.anomaly_node.AnomalyNode` (with the swap services of
:class:`~flowclas_ros.ros.model_swap.ModelSwapMixin`); the run itself is the ROS-free
:class:`flowclas_ros.learning.run.LearnRun`. This module only adapts it: live frames come from
subscriptions of their own on the camera topics while collecting (serialized: the recorded bytes
go to the run's bag as they are, on the run's thread), feedback is published every 0.5 s, a cancel
request or a deactivation stops the run, and the swap goes through :meth:`ModelSwapMixin.swap_model`.

A goal that cannot start (another goal running, the node not active, an unknown camera) is
accepted and at once aborted with ``success: false`` and ``message: "rejected: <reason>"``:
a plain action reject carries no reason to the caller.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from pathlib import Path

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from flowclas_ros.data.bags.source import COMPRESSED_TYPE, IMAGE_TYPE
from flowclas_ros.learning.run import PHASES, LearnGoal, LearnRun, Outcome, ServingModel
from flowclas_ros.ros.conversions import to_rgb
from flowclas_ros.ros.model_swap import ModelSwapMixin
from flowclas_ros.ros.oneline import one_line
from flowclas_ros.ros.qos import input_qos
from flowclas_ros.ros.settings import backend_options

FEEDBACK_PERIOD_S = 0.5
_QUEUE = 64  # live frames waiting for the run's thread (the oldest go first when it falls behind)


class LearnActionMixin(ModelSwapMixin):
    """The ``~/learn_nominal`` action server (see the module docstring)."""

    _learn_run: LearnRun | None = None

    def _create_learning_interfaces(self) -> None:
        """Creates the swap services and the action server (in __init__).

        Reentrant group: cancel requests arrive while a goal runs.
        """
        from flowclas_ros.action import LearnNominal

        self._create_model_services()
        self._learn_claim = threading.Lock()
        self._learn_group = ReentrantCallbackGroup()
        self._learn_action = ActionServer(
            self,
            LearnNominal,
            "~/learn_nominal",
            execute_callback=self._execute_learn,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=lambda handle: CancelResponse.ACCEPT,
            callback_group=self._learn_group,
        )

    def _stop_learning(self, reason: str) -> None:
        """Ends a running goal (deactivate / shutdown): its children stop, the node keeps its model."""
        run = self._learn_run
        if run is not None:
            self.get_logger().warning(f"stopping the learning run: {reason}")
            run.request_stop(reason)

    # ------------------------------------------------------------------ goal
    def _goal_problem(self, goal) -> str | None:
        if self._state != "active" and not goal.bag:
            return f"the node is {self._state}; activate it to collect live frames (or give a bag)"
        if self._backend is None or self._serving is None or self._learn_dir is None:
            return f"the node is {self._state}: configure it first"
        known = {c.name for c in self._cameras} | {c.topic for c in self._cameras}
        unknown = [c for c in goal.cameras if c not in known and not goal.bag]
        if unknown:
            names = ", ".join(c.name for c in self._cameras)
            return f"unknown camera(s) {', '.join(unknown)}; this node's cameras: {names}"
        for name in ("duration_s", "max_rate_hz"):
            value = float(getattr(goal, name))
            if not math.isfinite(value) or value < 0:
                return f"{name} must be >= 0 and finite, got {value}"
        return None

    def _execute_learn(self, goal_handle):
        from flowclas_ros.action import LearnNominal

        goal = goal_handle.request
        problem = self._goal_problem(goal)
        if problem is None and not self._learn_claim.acquire(blocking=False):
            running = self._learn_run
            phase = running.state.phase if running is not None else "starting"
            problem = f"another learn_nominal goal is running (phase {phase}); cancel it or wait"
        if problem is not None:
            self.get_logger().warning(f"learn_nominal goal rejected: {problem}")
            goal_handle.abort()
            return LearnNominal.Result(success=False, message=f"rejected: {problem}")
        try:
            outcome = self._run_goal(goal_handle, goal)
        finally:
            self._learn_run = None
            self._learning_phase = "idle"
            self._learn_claim.release()
        result = _result_msg(LearnNominal.Result(), outcome)
        try:
            if outcome.success:
                goal_handle.succeed()
            elif goal_handle.is_cancel_requested:
                goal_handle.canceled()
            else:
                goal_handle.abort()
        except Exception as err:  # noqa: BLE001 - shutting down: the node is going away
            self.get_logger().warning(f"learn_nominal: could not report the result: {one_line(err)}")
        if outcome.success:  # two call sites: rclpy refuses one site logging at two severities
            self.get_logger().info(f"learn_nominal: {outcome.message}")
        else:
            self.get_logger().warning(f"learn_nominal: {outcome.message}")
        return result

    def _run_goal(self, goal_handle, goal) -> Outcome:
        selected = [
            i
            for i, c in enumerate(self._cameras)
            if not goal.cameras or {c.name, c.topic} & set(goal.cameras)
        ]
        compressed = all(self._cameras[i].compressed for i in selected)
        values = self._values
        options = backend_options(
            values["backend"], [int(v) for v in values["input_size"]], values["max_batch"],
            len(self._cameras), values["precision"],
        )  # fmt: skip
        serving = ServingModel(
            kind=values["backend"],
            path=Path(self._serving.path),
            identity=self._serving.identity,
            threshold=float(self._settings.threshold),
            follow_checkpoint="threshold" in self._filled_in
            and values["threshold"] == self._filled_in["threshold"],
            export_options={
                "input_size": options.get("input_size"),
                "dynamic_batch": options.get("dynamic_batch"),
            },
        )
        run = LearnRun(
            self._learn_dir,
            LearnGoal(
                list(goal.cameras),
                float(goal.duration_s),
                int(goal.max_frames),
                float(goal.max_rate_hz),
                int(goal.steps),
                str(goal.bag),
            ),  # fmt: skip
            serving,
            collect_live=lambda *args: self._collect_live(selected, compressed, *args),
            live_msgtype=COMPRESSED_TYPE if compressed else IMAGE_TYPE,
            swap=lambda path, reason: self.swap_model(str(path), reason),
            threads=int(values["learn_threads"]),
            nice=int(values["learn_nice"]),
            ap_margin=float(values["learn_ap_margin"]),
        )
        self._learn_run = run
        self.get_logger().info(
            f"learn_nominal: starting ({'bag ' + goal.bag if goal.bag else f'{len(selected)} camera(s)'}, "
            f"learn_dir {self._learn_dir}, serving {serving.identity[:12]})"
        )
        done = threading.Event()
        ticker = threading.Thread(target=self._feedback_loop, args=(goal_handle, run, done), daemon=True)
        ticker.start()
        try:
            return run.run()
        finally:
            done.set()
            ticker.join(5)

    def _feedback_loop(self, goal_handle, run: LearnRun, done: threading.Event) -> None:
        from flowclas_ros.action import LearnNominal

        while not done.wait(FEEDBACK_PERIOD_S):
            if goal_handle.is_cancel_requested and not run.stop.is_set() and run.state.phase != "swapping":
                run.request_stop("cancelled")
            state = run.state
            self._learning_phase = state.phase
            try:
                goal_handle.publish_feedback(
                    LearnNominal.Feedback(
                        phase=state.phase,
                        frames_collected=int(state.frames_collected),
                        step=int(state.step),
                        total_steps=int(state.total_steps),
                        loss=float(state.loss),
                        eta_s=float(state.eta_s),
                    )  # fmt: skip
                )
            except Exception:  # noqa: BLE001 - shutting down
                return

    # ------------------------------------------------------------------ live collection
    def _collect_live(
        self, selected: list[int], compressed: bool, recorder, budget, limiter, stop, state
    ) -> None:
        """Records frames of the ``selected`` cameras until the budget is spent or ``stop`` is set."""
        queue: deque = deque(maxlen=_QUEUE)
        arrived = threading.Event()
        qos = input_qos(self._values["qos_reliability"], int(self._values["qos_depth"]))
        subscriptions = []
        for index in selected:
            camera = self._cameras[index]

            def on_frame(data: bytes, index: int = index) -> None:  # O(1): the run's thread writes it
                queue.append((index, data, time.time_ns()))
                arrived.set()

            msg_type = CompressedImage if camera.compressed else Image
            subscriptions.append(
                self.create_subscription(
                    msg_type, camera.topic, on_frame, qos, callback_group=self._learn_group, raw=True
                )
            )
        start = time.monotonic()
        try:
            while not stop.is_set() and not budget.done(recorder.total, time.monotonic() - start):
                if self._state != "active":
                    raise RuntimeError(f"the node is {self._state}; live collection needs it active")
                arrived.wait(0.2)
                arrived.clear()
                while queue and not budget.done(recorder.total, time.monotonic() - start):
                    index, data, log_ns = queue.popleft()
                    if limiter.accept(index, log_ns):
                        recorder.write(
                            log_ns, self._frame_cdr(data, self._cameras[index].compressed, compressed)
                        )
                state.frames_collected = recorder.total
                state.eta_s = budget.eta_s(recorder.total, time.monotonic() - start)
        finally:
            for subscription in subscriptions:
                self.destroy_subscription(subscription)

    def _frame_cdr(self, data: bytes, frame_compressed: bool, compressed_bag: bool) -> bytes:
        """The frame as recorded: its own CDR, or (a compressed frame in a raw-image bag) as rgb8."""
        if compressed_bag or not frame_compressed:
            return bytes(data)
        msg = deserialize_message(data, CompressedImage)
        rgb = to_rgb(msg, max_side=int(self._values["max_image_side"]))
        height, width = rgb.shape[:2]
        image = Image(header=msg.header, height=height, width=width, encoding="rgb8", step=width * 3)
        image.data = rgb.tobytes()
        return serialize_message(image)


def _result_msg(result, outcome: Outcome):
    """Fills the action result from the run's outcome."""
    result.success, result.message = bool(outcome.success), outcome.message
    result.checkpoint, result.identity, result.run_dir = outcome.checkpoint, outcome.identity, outcome.run_dir
    result.frames_used, result.frames_train, result.frames_val = (
        int(outcome.frames_used), int(outcome.frames_train), int(outcome.frames_val),
    )  # fmt: skip
    for phase in PHASES:
        setattr(result, f"{phase}_s", float(outcome.seconds.get(phase, 0.0)))  # e.g. training_s
    result.false_alarm_rate_before = float(outcome.false_alarm_rate_before)
    result.false_alarm_rate_after = float(outcome.false_alarm_rate_after)
    result.ap_before, result.ap_after = float(outcome.ap_before), float(outcome.ap_after)
    result.threshold, result.image_threshold = float(outcome.threshold), float(outcome.image_threshold)
    return result
