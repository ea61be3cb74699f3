"""anomaly_node's 3D outputs end to end: one node process (two cameras) for the module, real rclpy.

Camera ``cam_d`` has an aligned 32FC1 depth image and a CameraInfo with known intrinsics
(a plane at 2 m, a patch at 1 m, and invalid pixels: 0, NaN, beyond max_range); camera
``cam_n`` has no depth. The threshold starts far below every score, so every pixel is
anomalous and the cloud must hold exactly the pixels with valid depth.
"""

from __future__ import annotations

import array
import time
from types import SimpleNamespace

import numpy as np
import pytest
from ros_harness import (
    image_msg,
    now_stamp,
    running_node,
    stamp_ns,
    textured_image,
    write_params,
)
from tiny_checkpoints import tiny_checkpoint

pytestmark = pytest.mark.ros

NS = "/depth3d_test"
NODE = f"{NS}/anomaly_node"
TOPIC_D, TOPIC_N = "/depth3d_in/cam_d/image_raw", "/depth3d_in/cam_n/image_raw"
DEPTH_TOPIC, INFO_TOPIC = "/depth3d_in/cam_d/depth", "/depth3d_in/cam_d/camera_info"
H, W = 40, 56
FX, FY, CX, CY = 50.0, 45.0, 27.5, 19.5
MAX_RANGE = 10.0


def _scene_depth() -> np.ndarray:
    depth = np.full((H, W), 2.0, np.float32)  # the plane
    depth[10:22, 15:33] = 1.0  # the anomaly patch
    depth[0, :8] = 0.0  # no return
    depth[5, 3:9] = np.nan
    depth[30:33, 40:44] = MAX_RANGE + 2.0  # beyond max_range
    depth[34, 50] = np.inf
    return depth


def _depth_msg(depth: np.ndarray, frame_id: str, stamp):
    from sensor_msgs.msg import Image

    msg = Image(height=H, width=W, encoding="32FC1", is_bigendian=0, step=W * 4)
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    msg.data = array.array("B", depth.astype("<f4").tobytes())
    return msg


def _info_msg(frame_id: str, stamp):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo(width=W, height=H, distortion_model="plumb_bob")
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    msg.d = [0.0] * 5
    msg.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    msg.p = [FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from visualization_msgs.msg import MarkerArray

    from flowclas_ros.msg import AnomalyResult

    tmp = tmp_path_factory.mktemp("depth3d")
    params = write_params(
        tmp / "params.yaml",
        {
            "checkpoint": str(tiny_checkpoint(tmp / "ckpt")),
            "image_topics": [TOPIC_D, TOPIC_N],
            "camera_names": ["cam_d", "cam_n"],
            "depth_topics": [DEPTH_TOPIC, ""],
            "camera_info_topics": [INFO_TOPIC, ""],
            "threshold": -1e9,  # every pixel anomalous
            "min_region_area": 1,
            "max_range": MAX_RANGE,
            "depth_sync_tolerance": 0.05,
            "no_frame_warning_s": 60.0,
        },
    )
    with running_node(params, NS, tmp / "node.log", "depth3d_tester") as (proc, client):
        base_d, base_n = f"{NODE}/cam_d", f"{NODE}/cam_n"
        rec = SimpleNamespace(
            result_d=client.subscribe(f"{base_d}/result", AnomalyResult),
            points_d=client.subscribe(f"{base_d}/anomaly_points", PointCloud2),
            markers_d=client.subscribe(f"{base_d}/anomaly_markers", MarkerArray),
            result_n=client.subscribe(f"{base_n}/result", AnomalyResult),
            points_n=client.subscribe(f"{base_n}/anomaly_points", PointCloud2),
        )
        pubs = SimpleNamespace(
            image_d=client.publisher(TOPIC_D, Image),
            image_n=client.publisher(TOPIC_N, Image),
            depth=client.publisher(DEPTH_TOPIC, Image),
            info=client.publisher(INFO_TOPIC, CameraInfo),
        )
        for publisher in vars(pubs).values():
            client.wait_matched(publisher)  # subscribed = configured and active
        for topic in ("result", "anomaly_points", "anomaly_markers"):
            client.wait_subscribed(f"{base_d}/{topic}")
        client.wait_subscribed(f"{base_n}/result")
        yield SimpleNamespace(client=client, proc=proc, rec=rec, pubs=pubs, base_n=base_n)


def _frame_id(msg) -> str | None:
    if hasattr(msg, "markers"):  # MarkerArray: no header of its own
        return msg.markers[0].header.frame_id if msg.markers else None
    return msg.header.frame_id


def _find(recorder, frame_id: str):
    return recorder.find(lambda m: _frame_id(m) == frame_id)


def _send_until(env, messages: list[tuple[object, object]], recorder, frame_id: str, timeout: float = 30.0):
    """Publishes each (publisher, msg), again every 0.5 s (inputs are best effort), until ``frame_id``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for publisher, msg in messages:
            publisher.publish(msg)
        resend_at = time.monotonic() + 0.5
        while time.monotonic() < resend_at:
            found = _find(recorder, frame_id)
            if found is not None:
                return found
            env.proc.check_alive()
            time.sleep(0.005)
    pytest.fail(f"no output for frame {frame_id!r} within {timeout} s\n{env.proc.output()[-3000:]}")


def _wait(env, recorder, frame_id: str):
    return env.client.wait_for(lambda: _find(recorder, frame_id), 20.0, f"output for {frame_id}")


def _scene(env, frame_id: str, stamp, depth_stamp=None) -> list[tuple[object, object]]:
    depth_stamp = stamp if depth_stamp is None else depth_stamp
    return [
        (env.pubs.depth, _depth_msg(_scene_depth(), frame_id, depth_stamp)),
        (env.pubs.info, _info_msg(frame_id, depth_stamp)),
        (env.pubs.image_d, image_msg(textured_image(H, W, seed=4), "rgb8", frame_id, stamp)),
    ]


def test_cloud_points_regions_and_markers_match_the_scene(env):
    from visualization_msgs.msg import Marker

    from flowclas_ros.ros.pointcloud import read_cloud_points

    stamp = now_stamp(env.client)
    cloud = _send_until(env, _scene(env, "scene_optical", stamp), env.rec.points_d, "scene_optical")
    result = _wait(env, env.rec.result_d, "scene_optical")
    assert stamp_ns(cloud.header.stamp) == stamp_ns(stamp) == stamp_ns(result.header.stamp)

    depth = _scene_depth()
    valid = np.isfinite(depth) & (depth > 0) & (depth <= MAX_RANGE)
    rows, cols = np.nonzero(valid)  # row-major, the cloud's order without voxels
    points = read_cloud_points(cloud)
    assert points.size == int(valid.sum()) == cloud.width * cloud.height
    z = depth[rows, cols]
    np.testing.assert_allclose(points["z"], z, atol=0.01)
    np.testing.assert_allclose(points["x"], (cols - CX) * z / FX, atol=0.01)
    np.testing.assert_allclose(points["y"], (rows - CY) * z / FY, atol=0.01)
    # Each point projects back onto its own pixel.
    u = np.rint(points["x"] * FX / points["z"] + CX).astype(int)
    v = np.rint(points["y"] * FY / points["z"] + CY).astype(int)
    np.testing.assert_array_equal(u, cols)
    np.testing.assert_array_equal(v, rows)
    assert np.isfinite(points["score"]).all() and cloud.is_dense

    # The whole image is one region; its 3D box spans the plane and the patch.
    assert len(result.regions) == 1
    region = result.regions[0]
    assert region.has_3d and region.num_points == points.size
    assert region.extent.z == pytest.approx(1.0, abs=0.01)
    assert region.box_center.z == pytest.approx(1.5, abs=0.01)
    assert region.centroid.z == pytest.approx(float(z.mean()), abs=0.01)

    markers = _wait(env, env.rec.markers_d, "scene_optical")
    assert all(stamp_ns(m.header.stamp) == stamp_ns(stamp) for m in markers.markers)
    cubes = [m for m in markers.markers if m.type == Marker.CUBE]
    labels = [m for m in markers.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert len(cubes) == len(labels) == 1 and cubes[0].action == Marker.ADD
    assert cubes[0].pose.position.z == pytest.approx(1.5, abs=0.01)
    assert labels[0].text == f"{region.peak_score:.2f}"
    # A finite lifetime by default (two frame periods, clamped), so a dead node leaves no boxes.
    lifetimes = {m.lifetime.sec + m.lifetime.nanosec * 1e-9 for m in markers.markers}
    assert all(0.0 < t <= 10.0 for t in lifetimes), lifetimes


def test_frame_without_matching_depth_still_gets_2d_outputs(env):
    # Depth from the previous test is still buffered: keep this frame's stamp well past its tolerance.
    time.sleep(0.2)
    stamp = now_stamp(env.client)
    depth_stamp = now_stamp(env.client)
    depth_stamp.sec += 10  # far outside depth_sync_tolerance
    result = _send_until(env, _scene(env, "late_depth", stamp, depth_stamp), env.rec.result_d, "late_depth")
    assert result.regions and not any(r.has_3d for r in result.regions)
    time.sleep(0.5)  # the cloud would have been sent before the result
    assert _find(env.rec.points_d, "late_depth") is None
    _check_markers_deleted(env, "late_depth")  # no usable depth: the old boxes must go


def _check_markers_deleted(env, frame_id: str) -> None:
    from visualization_msgs.msg import Marker

    markers = _wait(env, env.rec.markers_d, frame_id)
    assert markers.markers and all(m.action == Marker.DELETE for m in markers.markers)
    assert {(m.ns, m.id) for m in markers.markers} == {
        ("anomaly/cam_d/boxes", 0),
        ("anomaly/cam_d/labels", 0),
    }


def test_markers_deleted_when_depth_stops(env):
    stamp = now_stamp(env.client)
    _send_until(env, _scene(env, "depth_shown", stamp), env.rec.markers_d, "depth_shown")
    # Colour frames only (the depth stream stopped): the next frame deletes the shown markers.
    time.sleep(0.2)
    rgb = textured_image(H, W, seed=4)
    msg = env.client.image(rgb, "depth_gone")
    _send_until(env, [(env.pubs.image_d, msg)], env.rec.result_d, "depth_gone")
    _check_markers_deleted(env, "depth_gone")


def test_markers_deleted_and_cloud_empty_when_the_anomaly_leaves(env):
    time.sleep(0.2)
    _send_until(env, _scene(env, "scene_shown", now_stamp(env.client)), env.rec.markers_d, "scene_shown")
    (answer,) = env.client.set_parameters(NODE, {"threshold": 1e9})
    assert answer.successful, answer.reason
    time.sleep(0.2)
    stamp = now_stamp(env.client)
    _send_until(env, _scene(env, "scene_clear", stamp), env.rec.markers_d, "scene_clear")
    _check_markers_deleted(env, "scene_clear")
    cloud = _wait(env, env.rec.points_d, "scene_clear")
    assert cloud.width * cloud.height == 0 and stamp_ns(cloud.header.stamp) == stamp_ns(stamp)
    assert _wait(env, env.rec.result_d, "scene_clear").regions == []
    # A depth parameter set that DepthSettings rejects is refused with its reason.
    (answer,) = env.client.set_parameters(NODE, {"min_range": 20.0})
    assert not answer.successful and "min_range" in answer.reason
    (answer,) = env.client.set_parameters(NODE, {"threshold": -1e9})
    assert answer.successful, answer.reason


def test_camera_without_depth_publishes_no_3d(env):
    stamp = now_stamp(env.client)
    msg = image_msg(textured_image(H, W, seed=5), "rgb8", "plain_optical", stamp)
    result = _send_until(env, [(env.pubs.image_n, msg)], env.rec.result_n, "plain_optical")
    assert result.regions and not any(r.has_3d for r in result.regions)
    assert env.client.node.count_publishers(f"{env.base_n}/anomaly_points") == 0
    assert env.client.node.count_publishers(f"{env.base_n}/anomaly_markers") == 0
    assert env.rec.points_n.snapshot() == []
