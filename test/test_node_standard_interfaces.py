"""anomaly_node through the standard ROS 2 interfaces a robot stack uses, in a separate process.

One namespaced node with ``autostart: false`` for the module, driven like nav2's
lifecycle_manager drives nodes (``~/change_state`` / ``~/get_state``), inspected like
``ros2 param dump`` / ``get`` / ``describe`` do (ListParameters + GetParameters +
DescribeParameters), fed on its default *relative* input topic (resolves in its namespace).
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from ros_harness import (
    STARTUP_TIMEOUT_S,
    running_node,
    textured_image,
    write_params,
)
from tiny_checkpoints import tiny_checkpoint

pytestmark = pytest.mark.ros

NS = "/std_test"
NODE = f"{NS}/anomaly_node"
INPUT = f"{NS}/image_raw"  # the default image_topics ["image_raw"], resolved in the namespace
RESULT = f"{NODE}/camera/result"
CKPT_THRESHOLD, CKPT_IMAGE_THRESHOLD = 100.0, 7.5
CONFIGURE, CLEANUP, ACTIVATE, DEACTIVATE = 1, 2, 3, 4  # lifecycle_msgs/msg/Transition ids


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from sensor_msgs.msg import Image

    from flowclas_ros.msg import AnomalyResult

    tmp = tmp_path_factory.mktemp("std")
    checkpoint = tiny_checkpoint(tmp / "ckpt", threshold=CKPT_THRESHOLD, image_threshold=CKPT_IMAGE_THRESHOLD)
    params = write_params(
        tmp / "params.yaml",
        {
            "checkpoint": str(checkpoint),
            "autostart": False,
            "compressed": [False],  # a YAML array still overrides a typed empty default
            "depth_topics": [],  # an empty YAML list (rcl: no value) still ends up a typed []
            "no_frame_warning_s": 60.0,
        },
    )
    with running_node(params, NS, tmp / "node.log", "std_tester") as (proc, client):
        results = client.subscribe(RESULT, AnomalyResult)
        pub = client.publisher(INPUT, Image)
        client.wait_for(lambda: client.get_state(NODE), STARTUP_TIMEOUT_S, "the lifecycle services")
        yield SimpleNamespace(client=client, proc=proc, results=results, pub=pub)


def _transition(env, transition: int, expected_state: str) -> None:
    assert env.client.change_state(NODE, transition), env.proc.output()[-3000:]
    assert env.client.get_state(NODE) == expected_state


def _publish_for(env, seconds: float, frame_id: str) -> None:
    rgb = textured_image(48, 64, seed=5)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        env.pub.publish(env.client.image(rgb, frame_id))
        time.sleep(0.1)


def _result_for(env, frame_id: str, timeout: float = 60.0):
    rgb = textured_image(48, 64, seed=5)

    def answered():
        env.pub.publish(env.client.image(rgb, frame_id))
        time.sleep(0.1)  # best-effort input: resend until answered
        return env.results.find(lambda m: m.header.frame_id == frame_id)

    return env.client.wait_for(answered, timeout, f"a result for {frame_id}")


def test_every_parameter_is_listed_gettable_and_described(env):
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters

    from flowclas_ros.ros.declare import descriptor
    from flowclas_ros.ros.params import PARAMETERS, SPECS

    client = env.client
    listed = client.call(ListParameters, f"{NODE}/list_parameters", ListParameters.Request()).result.names
    assert set(SPECS) | {"use_sim_time"} <= set(listed)
    # What `ros2 param dump` does: one GetParameters request with every listed name.
    values = client.call(GetParameters, f"{NODE}/get_parameters", GetParameters.Request(names=listed)).values
    assert len(values) == len(listed), "GetParameters answered without values: some parameter is unset"
    by_name = dict(zip(listed, values))
    assert not [n for n, v in by_name.items() if v.type == ParameterType.PARAMETER_NOT_SET]
    described = client.call(
        DescribeParameters, f"{NODE}/describe_parameters", DescribeParameters.Request(names=listed)
    ).descriptors
    assert [d.name for d in described] == list(listed)
    for desc in described:
        if desc.name in SPECS:
            assert desc.type == descriptor(SPECS[desc.name]).type == by_name[desc.name].type, desc.name
            assert desc.description == SPECS[desc.name].description
    got = client.get_parameters(NODE, [spec.name for spec in PARAMETERS])
    assert got["camera_names"] == [] and got["depth_topics"] == [] and got["compressed"] == [False]
    assert got["image_topics"] == ["image_raw"]
    assert math.isnan(got["threshold"]) and math.isnan(got["image_threshold"])  # unconfigured


def test_external_lifecycle_control_thresholds_and_silence_while_inactive(env):
    client = env.client
    assert client.get_state(NODE) == "unconfigured"
    _transition(env, CONFIGURE, "inactive")
    got = client.get_parameters(NODE, ["threshold", "image_threshold"])
    assert got == {"threshold": CKPT_THRESHOLD, "image_threshold": CKPT_IMAGE_THRESHOLD}
    _transition(env, CLEANUP, "unconfigured")  # filled-in values go back to "the checkpoint's"
    got = client.get_parameters(NODE, ["threshold", "image_threshold"])
    assert math.isnan(got["threshold"]) and math.isnan(got["image_threshold"])
    _transition(env, CONFIGURE, "inactive")
    # Configured and inactive: the result publisher exists but publishes nothing.
    client.wait_for(lambda: client.node.count_publishers(RESULT) > 0, 30, "the result publisher")
    _publish_for(env, 3.0, "while_inactive")
    assert not env.results.snapshot()
    _transition(env, ACTIVATE, "active")
    client.wait_for(
        lambda: client.node.count_subscribers(INPUT) > 0, 30, "a subscription on the relative input"
    )
    first = _result_for(env, "active")
    assert first.threshold == pytest.approx(CKPT_THRESHOLD) and first.image_threshold == CKPT_IMAGE_THRESHOLD
    assert first.is_anomalous == (first.image_score >= CKPT_IMAGE_THRESHOLD)
    # is_anomalous follows the image threshold, independently of the pixel threshold.
    score = first.image_score
    results = client.set_parameters(NODE, {"threshold": score + 1.0, "image_threshold": score - 0.01})
    assert all(r.successful for r in results), [r.reason for r in results]
    flagged = _result_for(env, "image_below")
    assert flagged.is_anomalous and flagged.anomalous_fraction == 0.0
    (result,) = client.set_parameters(NODE, {"image_threshold": score + 0.01})
    assert result.successful, result.reason
    assert not _result_for(env, "image_above").is_anomalous
    # `ros2 param set /anomaly_node image_threshold .nan` while active: back to the checkpoint's,
    # and the parameter shows the number in use again (as after configure).
    results = client.set_parameters(NODE, {"threshold": math.nan, "image_threshold": math.nan})
    assert all(r.successful for r in results), [r.reason for r in results]
    got = client.get_parameters(NODE, ["threshold", "image_threshold"])
    assert got == {"threshold": CKPT_THRESHOLD, "image_threshold": CKPT_IMAGE_THRESHOLD}
    restored = _result_for(env, "nan_restores_checkpoint")
    assert restored.threshold == pytest.approx(CKPT_THRESHOLD)
    assert restored.image_threshold == CKPT_IMAGE_THRESHOLD
    assert restored.is_anomalous == (restored.image_score >= CKPT_IMAGE_THRESHOLD)
    _transition(env, DEACTIVATE, "inactive")
    env.results.clear()
    _publish_for(env, 3.0, "after_deactivate")
    assert not env.results.snapshot()
    _transition(env, CLEANUP, "unconfigured")  # values filled in at runtime go back to NaN too
    got = client.get_parameters(NODE, ["threshold", "image_threshold"])
    assert math.isnan(got["threshold"]) and math.isnan(got["image_threshold"])
    out = env.proc.output()
    for word in ("configuring", "activating", "deactivating", "inactive:", "cleaning up", "unconfigured:"):
        assert any("[INFO]" in line and word in line for line in out.splitlines()), (word, out[-3000:])


def test_value_error_in_a_callback_is_not_reported_as_bad_parameters(tmp_path):
    """Exit code 2 means "bad parameters" (at construction); a callback's error is not that."""
    script = (
        "import sys\n"
        "from flowclas_ros.ros import anomaly_node, node\n"
        "def boom(self):\n"
        "    raise ValueError('boom from a timer callback')\n"
        "anomaly_node.AnomalyNode._publish_diagnostics = boom\n"
        "sys.exit(node.main(['flowclas-node', '--ros-args', '-p', 'autostart:=false',"
        " '-p', 'diagnostics_period_s:=0.2', '-r', '__ns:=/callback_error']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode not in (0, 2), proc.stdout + proc.stderr
    assert "ValueError: boom from a timer callback" in proc.stderr, proc.stderr
