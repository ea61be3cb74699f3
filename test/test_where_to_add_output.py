"""ARCHITECTURE.md "Where to add: an output", proven: a frame stage added by a parameter alone.

A real ``anomaly_node`` process loads a tiny checkpoint and two stages from a module outside the
package (``test/output_stages.py``) through ``extra_stages``: one publishes a new topic per frame,
the other raises on every frame. An image goes in; the new topic carries the input's header, the
result still goes out, and the failing stage is logged and counted on /diagnostics, not fatal.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from output_stages import ECHO_OUTPUT
from ros_harness import (
    diagnostic_values,
    image_msg,
    now_stamp,
    running_node,
    stamp_ns,
    textured_image,
    write_params,
)
from tiny_checkpoints import tiny_checkpoint

from flowclas_ros.ros.frame_stages import load_stage
from flowclas_ros.ros.param_validation import validate

pytestmark = pytest.mark.ros

NS, TOPIC = "/output_test", "/output_test_in/image_raw"
NODE = f"{NS}/anomaly_node"
STAGES = ["output_stages:FailingStage", "output_stages:HeaderEchoStage"]  # the failing one first
TEST_DIR = Path(__file__).resolve().parent


def test_an_extra_stage_publishes_with_the_input_header_and_a_failing_one_is_counted(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from flowclas_ros.msg import AnomalyResult

    params = write_params(
        tmp_path / "params.yaml",
        {"checkpoint": str(tiny_checkpoint(tmp_path / "ckpt")), "image_topics": [TOPIC],
         "camera_names": ["cam"], "extra_stages": STAGES, "diagnostics_period_s": 0.5,
         "no_frame_warning_s": 60.0},
    )  # fmt: skip
    # The node imports the stages by name, like a user's module: test/ on its PYTHONPATH.
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(TEST_DIR), os.environ.get("PYTHONPATH", "")) if p)}
    with running_node(params, NS, tmp_path / "node.log", "output_tester", env=env) as (proc, client):
        echoed = client.subscribe(f"{NODE}/cam/{ECHO_OUTPUT}", Header)
        results = client.subscribe(f"{NODE}/cam/result", AnomalyResult)
        diagnostics = client.subscribe("/diagnostics", DiagnosticArray)
        pub = client.publisher(TOPIC, Image)
        client.wait_matched(pub)
        client.wait_subscribed(f"{NODE}/cam/{ECHO_OUTPUT}")
        stamp = now_stamp(client)
        msg = image_msg(textured_image(48, 64, seed=1), "rgb8", "stage_optical", stamp)

        def echoed_header():
            pub.publish(msg)  # best-effort input: resend until answered
            return echoed.find(lambda h: h.frame_id == "stage_optical")

        header = client.wait_for(echoed_header, 60.0, f"a Header on ~/cam/{ECHO_OUTPUT}")
        assert stamp_ns(header.stamp) == stamp_ns(stamp), "the input's stamp"
        result = client.wait_for(
            lambda: results.find(lambda r: r.header.frame_id == "stage_optical"), 20.0, "a result"
        )
        assert stamp_ns(result.header.stamp) == stamp_ns(stamp)

        def counted():
            for array in reversed(diagnostics.snapshot()):
                found = diagnostic_values(array, ": cam")
                if found is not None and int(found[2]["stage_errors"]) >= 1:
                    return found
            return None

        level, message, _ = client.wait_for(counted, 20.0, "stage_errors >= 1 on /diagnostics")
        assert "frame stage error" in message and level == 1, message  # WARN, with the reason
        proc.check_alive()
    out = proc.output()
    assert "frame stage FailingStage failed on" in out and "deliberate failure on stage_optical" in out, out


def test_a_wrong_entry_is_one_line_before_anything_is_built():
    assert "is not 'module:Class'" in validate("extra_stages", ["output_stages.HeaderEchoStage"])
    assert validate("extra_stages", STAGES) is None
    with pytest.raises(ValueError, match="cannot load 'no_such_module:Stage'"):
        load_stage("no_such_module:Stage", None, [])
    with pytest.raises(ValueError, match="not a subclass of flowclas_ros.ros.frame_stages.FrameStage"):
        load_stage("pathlib:Path", None, [])
