"""The node's ROS-free pieces: frame slots, parameter table/validation, health verdicts."""

from __future__ import annotations

import math
import threading
import time

import pytest

from flowclas_ros.ros.frame_buffer import Frame, FrameSlots
from flowclas_ros.ros.param_validation import parameter_names, validate
from flowclas_ros.ros.params import PARAMETERS, SPECS
from flowclas_ros.ros.settings import CheckpointThresholds, camera_inputs, runtime_settings
from flowclas_ros.ros.stats import ERROR, OK, WARN, CameraStats, WindowReport, assess


def test_slots_keep_only_the_newest_frame_and_count_drops():
    slots = FrameSlots(2)
    for i in range(5):
        slots.put(Frame(0, f"a{i}", i))
    slots.put(Frame(1, "b0", 0))
    taken = slots.take(max_count=4, timeout=0.1)
    assert [f.msg for f in taken] == ["a4", "b0"]
    received, dropped = slots.counts()
    assert received == [5, 1] and dropped == [4, 0]
    assert slots.take(max_count=4, timeout=0.01) == []  # nothing new: empty after the timeout


def test_slots_rotate_cameras_when_the_batch_is_smaller():
    slots = FrameSlots(3)
    order = []
    for _ in range(3):
        for camera in range(3):
            slots.put(Frame(camera, camera, 0))
        order.append([f.camera for f in slots.take(max_count=2, timeout=0.1)])
        order.append([f.camera for f in slots.take(max_count=2, timeout=0.1)])
    firsts = {batch[0] for batch in order if batch}
    assert firsts == {0, 1, 2}, order  # every camera gets to lead a batch: no starvation


def test_slots_wake_the_worker_and_close():
    slots = FrameSlots(1)
    got = []
    worker = threading.Thread(target=lambda: got.append(slots.take(1, timeout=10.0)))
    worker.start()
    time.sleep(0.05)
    slots.put(Frame(0, "x", 0))
    worker.join(5)
    assert [f.msg for f in got[0]] == ["x"]
    closer = threading.Thread(target=lambda: got.append(slots.take(1, timeout=10.0)))
    closer.start()
    slots.close()
    closer.join(5)
    assert not closer.is_alive() and got[1] == []


def test_parameter_table_is_consistent():
    names = [spec.name for spec in PARAMETERS]
    assert len(names) == len(set(names))
    assert "use_sim_time" in parameter_names()
    for spec in PARAMETERS:
        assert spec.description, spec.name
        assert spec.default is not None, f"{spec.name}: every parameter needs a typed default"
        assert validate(spec.name, spec.default) is None, spec.name
    runtime = {spec.name for spec in PARAMETERS if spec.runtime}
    assert {"threshold", "image_threshold", "overlay_alpha", "publish_overlay", "min_region_area"} <= runtime
    assert not {"checkpoint", "backend", "image_topics", "qos_reliability"} & runtime


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("overlay_alpha", 1.5, "above the maximum"),
        ("max_batch", 0, "below the minimum"),
        ("backend", "tflite", "not one of"),
        ("qos_reliability", "sometimes", "not one of"),
        ("input_size", [224], "[height, width]"),
        ("input_size", [0, 224], "[height, width]"),
        ("overlay_score_range", [1.0, 1.0], "low < high"),
        ("image_topics", [], "at least one"),
        ("overlay_alpha", math.nan, "NaN"),
        ("no_frame_warning_s", math.inf, "finite"),
        ("nonexistent", 1, "unknown parameter"),
    ],
)
def test_validate_rejects_with_a_reason(name, value, fragment):
    reason = validate(name, value)
    assert reason is not None and fragment in reason and name in reason


def test_validate_accepts():
    assert validate("threshold", math.nan) is None  # NaN = the checkpoint's
    assert validate("threshold", -3.5) is None  # NLL / likelihood scores may be negative
    assert validate("input_size", [448, 448]) is None
    assert validate("overlay_score_range", [0.0, 0.0]) is None
    assert validate("image_threshold", math.nan) is None
    assert validate("compressed", []) is None
    assert "required" in validate("compressed", None)


def _values(**over):
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update(over)
    return values


def test_runtime_settings_threshold_source():
    old, new = CheckpointThresholds(0.7), CheckpointThresholds(0.7, 2.5)
    assert runtime_settings(_values(), old).threshold == 0.7
    assert runtime_settings(_values(threshold=0.2), old).threshold == 0.2
    with pytest.raises(ValueError, match="no calibrated threshold"):
        runtime_settings(_values(), CheckpointThresholds(None))
    settings = runtime_settings(_values(overlay_score_range=[1.0, 3.0]), old)
    assert settings.overlay_score_range == (1.0, 3.0)
    assert runtime_settings(_values(), old).overlay_score_range is None
    # Image threshold: the parameter, else the checkpoint's, else (old checkpoint) the pixel one.
    assert runtime_settings(_values(), new).image_threshold == 2.5
    assert runtime_settings(_values(image_threshold=3.0), new).image_threshold == 3.0
    assert runtime_settings(_values(threshold=0.2), old).image_threshold == 0.2


def test_camera_inputs_compressed_auto_and_explicit():
    topics = ["/a/image_raw", "/b/image_raw/compressed"]
    auto = camera_inputs(topics, [], ["a", "b"])
    assert [c.compressed for c in auto] == [False, True]
    explicit = camera_inputs(topics, [True, False], ["a", "b"])
    assert [c.compressed for c in explicit] == [True, False]
    with pytest.raises(ValueError, match="one per topic"):
        camera_inputs(topics, [True], ["a", "b"])


def _report(**over) -> WindowReport:
    base = dict(
        input_hz=30.0, processed_hz=10.0, received=30, dropped=0, malformed=0, nonfinite=0,
        total_received=30, total_processed=30, total_dropped=0, total_malformed=0, total_nonfinite=0,
        latency_p50_ms=40.0, latency_p95_ms=60.0, model_p50_ms=30.0, seconds_since_frame=0.1,
    )  # fmt: skip
    base.update(over)
    return WindowReport(**base)


@pytest.mark.parametrize(
    ("report", "model_error", "level", "fragment"),
    [
        (_report(), None, OK, "ok"),
        (_report(dropped=20), None, WARN, "high drop rate"),
        (_report(received=3, dropped=2), None, OK, "ok"),  # too few frames to judge
        (_report(malformed=2), None, WARN, "malformed"),
        (_report(seconds_since_frame=12.0), None, WARN, "no frames for 12 s"),
        (_report(seconds_since_frame=None), None, WARN, "no frames for 20 s"),
        (_report(nonfinite=1), None, ERROR, "NaN"),
        (_report(), "RuntimeError: CUDA out of memory", ERROR, "model failure"),
    ],
)
def test_assess_levels(report, model_error, level, fragment):
    got_level, message = assess(
        report, active_for_s=20.0, no_frame_warning_s=5.0, drop_warn_fraction=0.5, model_error=model_error
    )
    assert got_level == level and fragment in message


def test_camera_stats_window_rates_and_percentiles():
    stats = CameraStats()
    for latency in range(1, 101):
        stats.record_result(float(latency), 10.0)
    stats.record_malformed()
    first = stats.report(received_total=150, dropped_total=49, now=time.monotonic())
    assert first.total_processed == 100 and first.total_malformed == 1
    assert first.latency_p50_ms == pytest.approx(50.5) and first.latency_p95_ms == pytest.approx(95.05)
    later = stats.report(received_total=160, dropped_total=55, now=time.monotonic() + 2.0)
    assert later.received == 10 and later.dropped == 6 and later.malformed == 0
    assert later.input_hz == pytest.approx(5.0, rel=0.05)
    assert SPECS["drop_warn_fraction"].runtime


def test_backend_options_follow_backend_kind():
    from flowclas_ros.ros.settings import backend_options

    assert backend_options("torch", [448, 448], 4, 2) == {"precision": "auto", "threads": "auto"}
    assert backend_options("onnxruntime", [0, 0], 4, 1) == {"intra_op_threads": "auto"}
    expected = {"input_size": (448, 448), "dynamic_batch": True, "intra_op_threads": 3}
    assert backend_options("onnxruntime", [448, 448], 4, 2, num_threads=3) == expected
    assert backend_options("tensorrt", [0, 0], 4, 3) == {"max_batch": 3, "precision": "auto"}
    assert backend_options("tensorrt", [0, 0], 2, 3, "f16") == {"max_batch": 2, "precision": "f16"}
    assert backend_options("openvino", [0, 0], 1, 1, "bf16", 2) == {"precision": "bf16", "threads": 2}
    with pytest.raises(ValueError, match="the onnxruntime backend runs auto, f32"):
        backend_options("onnxruntime", [0, 0], 1, 1, "int8")


def test_slots_gather_frames_of_cameras_triggered_together():
    slots = FrameSlots(2)
    slots.put(Frame(1, "b_old", 0))  # camera 1 is active
    slots.take(2, timeout=0.1)
    slots.put(Frame(0, "a", 0))
    late = threading.Timer(0.05, lambda: slots.put(Frame(1, "b", 0)))
    late.start()
    taken = slots.take(max_count=2, timeout=1.0, gather_s=2.0)
    late.join()
    assert sorted(f.msg for f in taken) == ["a", "b"]  # one batch, not a at once and b a forward later


def test_slots_do_not_wait_for_inactive_cameras():
    slots = FrameSlots(2)  # camera 1 never sent anything
    slots.put(Frame(0, "a", 0))
    start = time.monotonic()
    assert [f.msg for f in slots.take(max_count=2, timeout=1.0, gather_s=2.0)] == ["a"]
    assert time.monotonic() - start < 1.0
    slots.put(Frame(0, "a2", 0))
    assert [f.msg for f in slots.take(max_count=2, timeout=1.0, gather_s=0.0)] == ["a2"]
