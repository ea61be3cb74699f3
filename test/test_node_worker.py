"""The inference worker in this process with real backends and real rclpy publishers.

Covers what an outside publisher cannot trigger: NaN model output and a failing forward.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_harness import Recorder, image_msg, require_ros, textured_image
from tiny_checkpoints import tiny_checkpoint

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    require_ros()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from flowclas_ros.msg import AnomalyResult
    from flowclas_ros.ros.frame_buffer import FrameSlots
    from flowclas_ros.ros.outputs import CameraOutputs
    from flowclas_ros.ros.params import PARAMETERS
    from flowclas_ros.ros.settings import CameraInput, CheckpointThresholds, runtime_settings
    from flowclas_ros.ros.stats import CameraStats
    from flowclas_ros.ros.worker import InferenceWorker, WorkerContext
    from flowclas_ros.runtime import create_backend

    tmp = tmp_path_factory.mktemp("worker")
    good = create_backend("torch", tiny_checkpoint(tmp / "good"))
    poisoned = create_backend("torch", tiny_checkpoint(tmp / "nan", nan_weights=True))
    context = rclpy.Context()
    rclpy.init(context=context)
    from rclpy.lifecycle import LifecycleNode

    node = LifecycleNode("worker_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    outputs = CameraOutputs.create(node, "cam")
    node.trigger_configure()
    node.trigger_activate()  # enables the lifecycle publishers
    results = Recorder()
    node.create_subscription(AnomalyResult, "/worker_test/cam/result", results, 10)
    values = {spec.name: spec.default for spec in PARAMETERS}
    settings = runtime_settings(values, CheckpointThresholds(good.threshold))
    errors: list[str] = []
    ctx = WorkerContext(
        backend=good,
        cameras=[CameraInput("/cam/image_raw", False, "cam")],
        outputs=[outputs],
        stats=[CameraStats()],
        slots=FrameSlots(1),
        settings=lambda: settings,
        max_image_side=4096,
        logger=node.get_logger(),
        on_model_error=errors.append,
    )
    worker = InferenceWorker(ctx)  # not started: the test calls process() directly
    yield {"ctx": ctx, "worker": worker, "good": good, "poisoned": poisoned, "results": results,
           "errors": errors, "executor": executor}  # fmt: skip
    executor.shutdown()
    node.destroy_node()
    context.try_shutdown()


def _frame(frame_id: str):
    from rclpy.clock import Clock

    from flowclas_ros.ros.frame_buffer import Frame

    msg = image_msg(textured_image(40, 56, seed=1), "rgb8", frame_id, Clock().now().to_msg())
    return Frame(0, msg, time.monotonic_ns())


def _spin_until(setup, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        setup["executor"].spin_once(timeout_sec=0.05)
    return condition()


def test_nan_output_is_reported_not_published(setup):
    ctx, worker = setup["ctx"], setup["worker"]
    ctx.backend = setup["poisoned"]
    worker.process([_frame("poisoned")])
    assert ctx.stats[0].nonfinite == 1 and ctx.stats[0].processed == 0
    ctx.backend = setup["good"]
    worker.process([_frame("healthy")])
    assert _spin_until(setup, lambda: setup["results"].snapshot())
    # Same publisher, reliable, in order: had the NaN frame been published it would come first.
    assert [m.header.frame_id for m in setup["results"].snapshot()] == ["healthy"]
    assert ctx.stats[0].processed == 1


def test_model_failure_is_caught_and_reported(setup):
    worker, backend = setup["worker"], setup["good"]
    processed = setup["ctx"].stats[0].processed
    saved = backend.config.preprocess.input_size
    backend.config.preprocess.input_size = (0, 0)  # the forward now raises inside the backend
    try:
        worker.process([_frame("broken")])
    finally:
        backend.config.preprocess.input_size = saved
    assert setup["errors"] and "resize" in setup["errors"][-1] and "\n" not in setup["errors"][-1]
    assert setup["ctx"].stats[0].processed == processed


class _RecordingStage:
    """A frame stage (duck-typed: the worker calls only for_frame and skip) that records what it gets."""

    def __init__(self):
        self.seen, self.skipped = [], []

    def for_frame(self, camera, settings):
        def stage(header, score_map, mask, regions):
            self.seen.append((camera, settings, header, score_map, mask, regions))

        return stage

    def skip(self, camera, header):
        self.skipped.append((camera, header.frame_id))


def test_frame_stage_gets_each_frame_and_skips_nonfinite_ones(setup):
    ctx, worker = setup["ctx"], setup["worker"]
    ctx.stages = [stage := _RecordingStage()]
    try:
        worker.process([_frame("staged")])
        ctx.backend = setup["poisoned"]
        worker.process([_frame("poisoned")])
    finally:
        ctx.stages, ctx.backend = [], setup["good"]
    ((camera, settings, header, score_map, mask, regions),) = stage.seen
    assert camera == 0 and header.frame_id == "staged" and mask.shape == score_map.shape == (40, 56)
    np.testing.assert_array_equal(mask > 0, score_map >= settings.threshold)
    assert stage.skipped == [(0, "poisoned")]  # NaN scores: the stage clears what it showed


class _FailingStage:
    """Raises in every hook the worker calls."""

    def for_frame(self, camera, settings):
        def fail(header, score_map, mask, regions):
            raise RuntimeError(f"stage failed on {header.frame_id}")

        return fail

    def skip(self, camera, header):
        raise RuntimeError("skip failed")


def test_a_stage_that_raises_is_counted_and_the_frame_still_goes_out(setup):
    ctx, worker, stats = setup["ctx"], setup["worker"], setup["ctx"].stats[0]
    ctx.stages = [_FailingStage(), recording := _RecordingStage()]
    processed, failed = stats.processed, stats.stage_errors
    try:
        worker.process([_frame("failing_stage")])
        ctx.backend = setup["poisoned"]
        worker.process([_frame("failing_skip")])
    finally:
        ctx.stages, ctx.backend = [], setup["good"]
    assert stats.stage_errors == failed + 2  # the frame's call, then the NaN frame's skip
    assert stats.processed == processed + 1, "the result went out despite the stage"
    assert [seen[2].frame_id for seen in recording.seen] == ["failing_stage"], "later stages still ran"
    assert recording.skipped == [(0, "failing_skip")]
    assert _spin_until(setup, lambda: setup["results"].find(lambda m: m.header.frame_id == "failing_stage"))


def test_outputs_are_lifecycle_publishers_silent_until_activated():
    require_ros()
    import rclpy
    from rclpy.lifecycle import LifecycleNode, LifecyclePublisher

    from flowclas_ros.msg import AnomalyResult
    from flowclas_ros.ros.outputs import CameraOutputs

    context = rclpy.Context()
    rclpy.init(context=context)
    node = LifecycleNode("silent_outputs_test", context=context)
    try:
        outputs = CameraOutputs.create(node, "cam")
        publishers = [outputs.result, outputs.score_map, outputs.mask, outputs.overlay]
        assert all(isinstance(p, LifecyclePublisher) and not p.is_activated for p in publishers)
        outputs.result.publish(AnomalyResult())  # inactive: dropped, no error
        node.trigger_configure()
        node.trigger_activate()
        assert all(p.is_activated for p in publishers)
        node.trigger_deactivate()
        assert not any(p.is_activated for p in publishers)
        outputs.destroy(node)
    finally:
        node.destroy_node()
        context.try_shutdown()


def test_parameters_apply_without_post_set_callbacks_like_on_humble():
    """Humble's rclpy has no add_post_set_parameters_callback: the node applies values in the check."""
    require_ros()
    import rclpy
    from rclpy.parameter import Parameter

    from flowclas_ros.ros.anomaly_node import AnomalyNode

    class HumbleLikeNode(AnomalyNode):
        @property
        def add_post_set_parameters_callback(self):
            raise AttributeError("not in Humble")

    context = rclpy.Context()
    rclpy.init(context=context, args=["x", "--ros-args", "-p", "autostart:=false"])
    node = HumbleLikeNode(context=context)
    try:
        (ok,) = node.set_parameters([Parameter("overlay_alpha", Parameter.Type.DOUBLE, 0.25)])
        assert ok.successful and node._values["overlay_alpha"] == 0.25  # noqa: SLF001
        (bad,) = node.set_parameters([Parameter("overlay_alpha", Parameter.Type.DOUBLE, 3.0)])
        assert not bad.successful and node._values["overlay_alpha"] == 0.25  # noqa: SLF001
    finally:
        node.destroy_node()
        context.try_shutdown()


def test_a_batch_hands_its_image_jobs_over_after_its_last_result(setup):
    """Image jobs started before the other cameras' results took the GIL and a core from them."""
    import dataclasses

    from flowclas_ros.ros.frame_buffer import Frame, FrameSlots
    from flowclas_ros.ros.settings import CameraInput
    from flowclas_ros.ros.stats import CameraStats
    from flowclas_ros.ros.worker import InferenceWorker

    base = setup["ctx"]
    stats = [CameraStats(), CameraStats()]
    ctx = dataclasses.replace(
        base,
        cameras=[CameraInput("/a/image_raw", False, "cam"), CameraInput("/b/image_raw", False, "cam")],
        outputs=[base.outputs[0], base.outputs[0]],
        stats=stats,
        slots=FrameSlots(2),
    )
    worker = InferenceWorker(ctx)  # its image thread is not started: jobs stay pending
    results_out_at_submit: list[list[int]] = []
    submit = worker.images.submit

    def recording_submit(camera, job):
        results_out_at_submit.append([s.processed for s in stats])
        submit(camera, job)

    worker.images.submit = recording_submit
    frames = [_frame("batch_0"), _frame("batch_1")]
    frames[1] = Frame(1, frames[1].msg, frames[1].received_ns)
    worker.process(frames)
    assert results_out_at_submit == [[1, 1], [1, 1]]  # both results published before any image job
