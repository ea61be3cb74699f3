"""``precision`` / ``num_threads`` of a real ``anomaly_node`` process with the OpenVINO backend.

The node runs on a CPU without bf16 (stood in for with ``FLOWCLAS_CPU_CAPS``, inherited by
the node process): ``precision: auto`` picks f32 and says why in the log and /diagnostics, and
``precision: bf16`` is refused with one line naming the CPU's capabilities, while the node keeps
serving on its current model; started with bf16 it exits 2 with that line.
"""

from __future__ import annotations

import subprocess

import pytest
from ros_harness import (
    diagnostic_values,
    node_executable,
    running_node,
    textured_image,
    write_params,
)

pytest.importorskip("openvino")
pytestmark = pytest.mark.ros

NS = "/precision_test"
NODE = f"{NS}/anomaly_node"
TOPIC = "/precision_in/image_raw"


@pytest.fixture(scope="module")
def exported(tiny):
    return tiny.export()  # read only: shared through the session cache


def _params(path, onnx_file, **extra):
    values = {"checkpoint": str(onnx_file), "backend": "openvino", "image_topics": [TOPIC], **extra}
    values.setdefault("camera_names", ["camera"])
    return write_params(path, values)


def test_bf16_refused_while_serving_and_auto_says_why(exported, tmp_path, cpu_without_bf16):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from flowclas_ros.msg import AnomalyResult

    params = _params(tmp_path / "p.yaml", exported, num_threads=1)  # precision: auto (the default)
    with running_node(params, NS, tmp_path / "node.log", "precision_tester") as (proc, client):
        results = client.subscribe(f"{NODE}/camera/result", AnomalyResult)
        diagnostics = client.subscribe("/diagnostics", DiagnosticArray)
        pub = client.publisher(TOPIC, Image)
        client.wait_matched(pub)
        rgb = textured_image(56, 56, seed=1)

        def served(frame_id: str) -> None:
            def got():
                pub.publish(client.image(rgb, frame_id))
                return results.find(lambda m: m.header.frame_id == frame_id)

            client.wait_for(got, 60, f"a result for {frame_id}")

        served("before")

        def node_status():
            found = [diagnostic_values(m, "anomaly_node: node") for m in diagnostics.snapshot()]
            return next((v for v in reversed(found) if v and "precision" in v[2]), None)

        status = client.wait_for(node_status, 30, "the node's diagnostics with its precision")
        _, _, values = status
        assert values["precision"].startswith("f32 (auto: no native bf16"), values
        assert "openvino-f32" in values["model"]
        assert "precision auto -> f32" in proc.output() or "auto: no native bf16" in proc.output()

        (result,) = client.set_parameters(NODE, {"precision": "bf16"})
        assert not result.successful
        assert "precision bf16 is not supported natively by this CPU" in result.reason
        assert "OpenVINO CPU: BIN, EXPORT_IMPORT, FP32, INT8" in result.reason and "auto" in result.reason
        assert client.get_parameters(NODE, ["precision"])["precision"] == "auto"
        served("after")  # still serving on its model


def test_started_with_bf16_on_a_cpu_without_it_exits_with_one_line(exported, tmp_path, cpu_without_bf16):
    params = _params(tmp_path / "p.yaml", exported, precision="bf16", autostart=False)
    proc = subprocess.run(
        [node_executable(), "--ros-args", "--params-file", str(params)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "not supported natively" in line]
    assert len(lines) == 1 and "use precision auto" in lines[0], output
