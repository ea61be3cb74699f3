"""``~/load_model`` and ``~/rollback_model``: swap the serving model while the node keeps serving.

A mixin of :class:`flowclas_ros.ros.anomaly_node.AnomalyNode`. The new backend is built and
warmed on a service thread (the node runs a multi-threaded executor; these services have their
own callback group, so camera callbacks keep running), then installed between two batches of
the inference thread (:meth:`InferenceWorker.between_batches`): backend and thresholds change
together, no frame is answered by a half-loaded model. On any failure the old model keeps
serving and the response says why in one line. The swap history is kept in ``learn_dir``
(:class:`flowclas_ros.learning.history.SwapHistory`).
"""

from __future__ import annotations

import gc
import math
import threading
from pathlib import Path

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from flowclas_ros.learning.history import ServedModel, SwapHistory, model_identity
from flowclas_ros.learning.layout import resolve_learn_dir
from flowclas_ros.learning.swap import BackendRecipe, BuiltModel, build_backend
from flowclas_ros.ros.oneline import one_line
from flowclas_ros.ros.settings import CheckpointThresholds, backend_options, runtime_settings
from flowclas_ros.srv import LoadModel


class SwapError(RuntimeError):
    """A swap that did not happen; the message is one line for the caller."""


class ModelSwapMixin:
    """Hot model swap and rollback (see the module docstring)."""

    _serving: ServedModel | None = None
    _learn_dir: Path | None = None
    _learning_phase: str = "idle"

    @property
    def learning_phase(self) -> str:
        """``idle``, or the phase of the running ``~/learn_nominal`` goal (shown on /diagnostics)."""
        return self._learning_phase

    def _create_model_services(self) -> None:
        """Creates the services (in __init__), in a group of their own: they may block for seconds."""
        self._swap_group = MutuallyExclusiveCallbackGroup()
        self._swap_busy = threading.Lock()  # one load / rollback / learned swap at a time
        self._install_lock = threading.RLock()  # install vs cleanup of the model
        self.create_service(LoadModel, "~/load_model", self._on_load_model, callback_group=self._swap_group)
        self.create_service(
            Trigger, "~/rollback_model", self._on_rollback_model, callback_group=self._swap_group
        )

    # ------------------------------------------------------------ configure hooks
    def _start_history(self) -> None:
        """Called after configure: the serving model's identity and the learn directory."""
        values = self._values
        self._learn_dir = resolve_learn_dir(values["learn_dir"], values["checkpoint"])
        path = Path(values["checkpoint"]).expanduser().resolve()
        try:
            self._serving = ServedModel(str(path), model_identity(path))
        except Exception as err:  # noqa: BLE001 - a backend loaded it; identity is only informative
            self._serving = ServedModel(str(path), "")
            self.get_logger().warning(f"cannot read the model identity of {path}: {one_line(err)}")
            return
        try:
            SwapHistory(self._learn_dir).start(self._serving)
        except (OSError, ValueError) as err:
            self.get_logger().warning(f"swap history in {self._learn_dir} not writable: {one_line(err)}")

    def _backend_recipe(self) -> BackendRecipe:
        values = self._values
        size = [int(v) for v in values["input_size"]]
        return BackendRecipe(
            kind=values["backend"],
            device=values["device"],
            options=backend_options(
                values["backend"], size, values["max_batch"], len(self._cameras), values["precision"]
            ),
            input_size=tuple(size) if size != [0, 0] and values["backend"] == "torch" else None,
            prompt_set=values["prompt_set"],
        )

    @property
    def serving_identity(self) -> str:
        """The identity of the serving model ('' when none is loaded)."""
        return self._serving.identity if self._serving is not None and self._backend is not None else ""

    # ------------------------------------------------------------ services
    def _on_load_model(self, request: LoadModel.Request, response: LoadModel.Response) -> LoadModel.Response:
        try:
            response.message = self.swap_model(request.path, reason="load_model")
            response.success = True
        except Exception as err:  # noqa: BLE001 - every failure is a one-line answer
            response.success, response.message = False, one_line(err)
            self.get_logger().error(f"load_model {request.path!r} refused: {response.message}")
        response.identity = self.serving_identity
        return response

    def _on_rollback_model(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            response.message = self.rollback_model()
            response.success = True
        except Exception as err:  # noqa: BLE001
            response.success, response.message = False, one_line(err)
            self.get_logger().error(f"rollback_model refused: {response.message}")
        return response

    # ------------------------------------------------------------ swapping
    def _check_swappable(self) -> None:
        if self._backend is None or self._state not in ("inactive", "active"):
            raise SwapError(f"the node is {self._state}: configure it first (lifecycle configure)")

    def swap_model(self, path: str, reason: str) -> str:
        """Builds ``path`` and swaps it in; returns the one-line outcome.

        Raises:
            Exception: The swap did not happen (the old model still serves); one line.
        """
        if not str(path).strip():
            raise SwapError("path is empty: give a checkpoint directory or an exported model file")
        if not self._swap_busy.acquire(blocking=False):
            raise SwapError("another model load or rollback is in progress; try again when it ends")
        try:
            return self._swap_locked(Path(path), reason)
        finally:
            self._swap_busy.release()

    def _swap_locked(self, path: Path, reason: str, rollback: bool = False) -> str:
        self._check_swappable()
        start_backend, learn_dir = self._backend, self._learn_dir
        cache = learn_dir / "exports" if learn_dir is not None else None
        built = build_backend(self._backend_recipe(), path, cache)  # the slow part; old model serves
        try:
            values, filled = self._thresholds_for(built)
            settings = runtime_settings(values, self._thresholds_of(built))
        except ValueError as err:
            built.backend.close()
            raise SwapError(f"{path}: {one_line(err)}") from err
        previous = self._serving
        with self._install_lock:
            if self._backend is not start_backend:  # cleaned up / reconfigured meanwhile
                built.backend.close()
                raise SwapError("the node was reconfigured while the model loaded; not swapped")
            old = self._install(built, settings)
        self._update_threshold_parameters(filled)
        new = ServedModel(str(built.path), built.identity)
        if learn_dir is not None and previous is not None:
            try:
                history = SwapHistory(learn_dir)
                if rollback:
                    history.pop()
                else:
                    history.push(new, previous, reason)
            except (OSError, ValueError) as err:
                self.get_logger().error(f"swap history in {learn_dir} not updated: {one_line(err)}")
        old.close()
        del old
        gc.freeze()  # as the worker does at start: the new model's objects out of the collector's way
        before = previous.identity[:12] if previous is not None else "?"
        message = (
            f"{'rolled back' if rollback else 'swapped'} model {before} -> {built.identity[:12]} "
            f"({built.path}, {reason}); threshold {settings.threshold:.4g}, "
            f"image_threshold {settings.image_threshold:.4g}"
        )
        self.get_logger().info(message)
        return message

    def _install(self, built: BuiltModel, settings) -> object:
        """Puts ``built`` in service between two batches; returns the old backend."""
        old = self._backend

        def apply() -> None:
            self._backend, self._settings = built.backend, settings
            self._serving = ServedModel(str(built.path), built.identity)
            if self._worker is not None:
                self._worker.ctx.backend = built.backend

        worker = self._worker
        if worker is not None:
            worker.between_batches(apply)
        else:
            apply()
        return old

    @staticmethod
    def _thresholds_of(built: BuiltModel) -> CheckpointThresholds:
        return CheckpointThresholds(built.backend.threshold, built.backend.image_threshold)

    def _thresholds_for(self, built: BuiltModel) -> tuple[dict, dict[str, float]]:
        """Parameter values for the new model: thresholds filled in from the old checkpoint follow it.

        Returns:
            (values to build the settings from, {parameter: new value} to set afterwards).
        """
        values = dict(self._values)
        follow = [n for n, v in self._filled_in.items() if values[n] == v]
        for name in follow:
            values[name] = math.nan
        settings = runtime_settings(values, self._thresholds_of(built))  # ValueError: no threshold
        new = {"threshold": settings.threshold, "image_threshold": settings.image_threshold}
        return values, {name: new[name] for name in follow}

    def _update_threshold_parameters(self, filled: dict[str, float]) -> None:
        if not filled:
            return
        self.set_parameters([Parameter(n, Parameter.Type.DOUBLE, float(v)) for n, v in filled.items()])
        self._filled_in = dict(filled)

    def rollback_model(self) -> str:
        """Swaps back to the model that served before the last swap (kept in learn_dir).

        Raises:
            Exception: Nothing to roll back to, or the old model cannot be loaded (one line).
        """
        if not self._swap_busy.acquire(blocking=False):
            raise SwapError("another model load or rollback is in progress; try again when it ends")
        try:
            self._check_swappable()
            if self._learn_dir is None:
                raise SwapError("no learn_dir: nothing to roll back to")
            target = SwapHistory(self._learn_dir).rollback_target()
            if target is None:
                raise SwapError(f"nothing to roll back to: no swap recorded in {self._learn_dir}")
            return self._swap_locked(Path(target.path), "rollback_model", rollback=True)
        finally:
            self._swap_busy.release()
