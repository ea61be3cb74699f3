"""The worker's image-output thread (newest per camera, round robin, no queue) and its GC freeze (17.5)."""

from __future__ import annotations

import gc
import logging
import threading

import pytest

pytestmark = pytest.mark.ros


def _thread(cameras: int):
    from flowclas_ros.ros.worker import ImageOutputThread

    return ImageOutputThread(cameras, logging.getLogger("test"))


def test_image_thread_keeps_the_newest_job_per_camera_and_serves_cameras_in_turn():
    images = _thread(2)
    gate, ran = threading.Event(), []
    images.submit(0, lambda: (gate.wait(10), ran.append("a0")))
    images.start()
    try:
        for job in ("a1", "a2", "b1"):  # while a0 runs: a1 is replaced by a2, b1 waits beside it
            images.submit(0 if job[0] == "a" else 1, lambda job=job: ran.append(job))
        assert images.replaced == 1
        gate.set()
        deadline = threading.Event()
        for _ in range(200):
            if len(ran) == 3:
                break
            deadline.wait(0.01)
        assert ran == ["a0", "b1", "a2"], ran  # camera 1 next (round robin), then camera 0's newest
    finally:
        images.stop()
    assert not images.is_alive()
    images.submit(0, lambda: ran.append("late"))  # after stop: dropped, never run
    assert ran == ["a0", "b1", "a2"]


def test_a_failing_job_is_logged_and_the_thread_keeps_serving():
    images = _thread(1)
    done, errors = threading.Event(), []

    class Logger:  # the rclpy logger's signature (throttle keyword)
        def error(self, message, throttle_duration_sec=None):
            errors.append(message)

    images._logger = Logger()
    images.start()
    try:
        images.submit(0, lambda: 1 / 0)
        for _ in range(500):
            if errors:
                break
            done.wait(0.01)
        images.submit(0, done.set)
        assert done.wait(5)
    finally:
        images.stop()
    assert errors and errors[0].startswith("publishing image outputs failed: ZeroDivisionError")


def test_worker_freezes_the_model_out_of_the_gc_while_running():
    from flowclas_ros.ros.frame_buffer import FrameSlots
    from flowclas_ros.ros.params import PARAMETERS
    from flowclas_ros.ros.settings import CameraInput, CheckpointThresholds, runtime_settings
    from flowclas_ros.ros.worker import InferenceWorker, WorkerContext

    settings = runtime_settings({spec.name: spec.default for spec in PARAMETERS}, CheckpointThresholds(1.0))

    ctx = WorkerContext(
        backend=None,  # never called: no frame arrives
        cameras=[CameraInput("/cam/image_raw", False, "cam")],
        outputs=[],
        stats=[],
        slots=FrameSlots(1),
        settings=lambda: settings,
        max_image_side=4096,
        logger=logging.getLogger("test"),
        on_model_error=lambda reason: None,
    )
    assert gc.get_freeze_count() == 0
    worker = InferenceWorker(ctx)
    worker.start()
    try:
        assert gc.get_freeze_count() > 1000  # this process's objects, the model's in the node
    finally:
        worker.stop()
    assert gc.get_freeze_count() == 0 and not worker.is_alive() and not worker.images.is_alive()
