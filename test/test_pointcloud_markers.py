"""ROS messages of the 3D stage: PointCloud2 bytes, region markers and the AnomalyRegion 3D fields.

Messages are built and (de)serialised with the real generated types and rclpy's serializer; no
node or DDS traffic is needed here (the node's end-to-end 3D test lives with the node tests).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy_serialization = pytest.importorskip("rclpy.serialization", reason="needs the ROS environment")
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from flowclas_ros.msg import AnomalyRegion, AnomalyResult  # noqa: E402
from flowclas_ros.ros.markers import MarkerStyle, MarkerTracker  # noqa: E402
from flowclas_ros.ros.pointcloud import (  # noqa: E402
    HAVE_SENSOR_MSGS_PY,
    POINT_FIELDS,
    anomaly_cloud_msg,
    read_cloud_points,
)
from flowclas_ros.ros.region_3d import fill_region_3d  # noqa: E402
from flowclas_ros.runtime.depth_camera import PinholeIntrinsics  # noqa: E402
from flowclas_ros.runtime.geometry3d import POINT_DTYPE, DepthSettings, Region3D, anomalies_3d  # noqa: E402
from flowclas_ros.runtime.postprocess import anomaly_mask, find_regions  # noqa: E402


def make_header(sec: int = 12, nanosec: int = 345, frame_id: str = "front_color_optical_frame") -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def random_points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = np.empty(n, POINT_DTYPE)
    for name in POINT_DTYPE.names:
        points[name] = rng.normal(size=n).astype(np.float32)
    return points


def roundtrip(msg: object) -> object:
    return rclpy_serialization.deserialize_message(rclpy_serialization.serialize_message(msg), type(msg))


def test_cloud_layout_and_numpy_roundtrip() -> None:
    points = random_points(257)
    header = make_header()
    cloud = anomaly_cloud_msg(header, points, use_sensor_msgs_py=False)
    assert cloud.header == header
    assert (cloud.height, cloud.width) == (1, 257)
    assert cloud.point_step == 16 and cloud.row_step == 16 * 257
    assert cloud.is_dense is True and cloud.is_bigendian is False
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1),
        ("y", 4, 7, 1),
        ("z", 8, 7, 1),
        ("score", 12, 7, 1),
    ]
    # Decode the raw bytes independently: little-endian float32 quadruples.
    raw = np.frombuffer(bytes(cloud.data), dtype="<f4").reshape(-1, 4)
    expected = np.stack([points[n] for n in ("x", "y", "z", "score")], axis=1)
    np.testing.assert_array_equal(raw, expected)
    # And after serialisation through the C typesupport, as a subscriber gets it.
    received = roundtrip(cloud)
    np.testing.assert_array_equal(read_cloud_points(received), points)
    assert received.header.frame_id == header.frame_id and received.header.stamp == header.stamp


def test_empty_cloud_and_bad_input() -> None:
    cloud = anomaly_cloud_msg(make_header(), np.zeros(0, POINT_DTYPE))
    assert cloud.width == 0 and len(cloud.data) == 0 and cloud.row_step == 0
    assert read_cloud_points(roundtrip(cloud)).size == 0
    with pytest.raises(ValueError, match="POINT_DTYPE"):
        anomaly_cloud_msg(make_header(), np.zeros((3, 4), np.float32))
    nan_points = random_points(3)
    nan_points["z"][1] = np.nan
    assert anomaly_cloud_msg(make_header(), nan_points).is_dense is False
    wrong = PointCloud2(fields=list(POINT_FIELDS)[:3], point_step=12)
    with pytest.raises(ValueError, match="x, y, z, score"):
        read_cloud_points(wrong)


def test_point_dtype_matches_the_fields_as_sensor_msgs_py_reads_them() -> None:
    # sensor_msgs_py.create_cloud asserts points.dtype == dtype_from_fields(fields): names,
    # formats (the PointField type's numpy dtype, little-endian here) and offsets.
    assert sys.byteorder == "little" or not HAVE_SENSOR_MSGS_PY
    from_fields = np.dtype(
        {
            "names": [f.name for f in POINT_FIELDS],
            "formats": [np.dtype(np.float32).str] * len(POINT_FIELDS),
            "offsets": [f.offset for f in POINT_FIELDS],
        }
    )
    assert from_fields == POINT_DTYPE


@pytest.mark.skipif(not HAVE_SENSOR_MSGS_PY, reason="sensor_msgs_py is not installed (not on PyPI)")
def test_cloud_is_byte_identical_with_sensor_msgs_py() -> None:
    points = random_points(1000, seed=3)
    header = make_header()
    ours = anomaly_cloud_msg(header, points, use_sensor_msgs_py=False)
    theirs = anomaly_cloud_msg(header, points, use_sensor_msgs_py=True)
    # Every field equal (the generated __eq__ compares all of them, data included). Serialised
    # bytes are not compared: the CDR alignment padding after the frame_id is not zeroed.
    assert ours == theirs
    assert bytes(ours.data) == bytes(theirs.data)
    assert ours.is_dense is True


def region(center: tuple, extent: tuple, peak: float, n: int = 10) -> Region3D:
    lo = tuple(c - e / 2 for c, e in zip(center, extent))
    hi = tuple(c + e / 2 for c, e in zip(center, extent))
    return Region3D(centroid=center, box_min=lo, box_max=hi, num_points=n, peak_score=peak)


def by_key(markers: list[Marker]) -> dict[tuple[str, int], Marker]:
    return {(m.ns, m.id): m for m in markers}


def test_markers_boxes_labels_and_deletion_of_vanished_regions() -> None:
    tracker = MarkerTracker(MarkerStyle(lifetime_s=1.5, min_size=0.02))
    header = make_header()
    first = tracker.update(
        "front",
        header,
        [region((0.1, -0.2, 1.0), (0.2, 0.1, 0.0), 3.25), region((1, 0, 2), (0.5, 0.5, 0.5), 2)],
    )
    markers = by_key(first.markers)
    assert set(markers) == {
        ("anomaly/front/boxes", 0),
        ("anomaly/front/labels", 0),
        ("anomaly/front/boxes", 1),
        ("anomaly/front/labels", 1),
    }
    box = markers[("anomaly/front/boxes", 0)]
    assert box.type == Marker.CUBE and box.action == Marker.ADD
    assert box.header == header
    assert (box.pose.position.x, box.pose.position.y, box.pose.position.z) == pytest.approx((0.1, -0.2, 1.0))
    assert box.pose.orientation.w == 1.0
    # A flat patch gets the minimum thickness so RViz still draws it.
    assert (box.scale.x, box.scale.y, box.scale.z) == pytest.approx((0.2, 0.1, 0.02))
    assert (box.lifetime.sec, box.lifetime.nanosec) == (1, 500_000_000)
    label = markers[("anomaly/front/labels", 0)]
    assert label.type == Marker.TEXT_VIEW_FACING and label.text == "3.25"
    assert label.pose.position.y < box.pose.position.y - box.scale.y / 2  # above the box in the image
    assert tracker.published_ids("front") == {0, 1}

    # Region 1 leaves the view: its two markers are deleted, region 0 is updated in place.
    second = by_key(
        tracker.update("front", make_header(13), [region((0.1, -0.2, 1.1), (0.2, 0.1, 0.1), 3)]).markers
    )
    assert {k: m.action for k, m in second.items()} == {
        ("anomaly/front/boxes", 0): Marker.ADD,
        ("anomaly/front/labels", 0): Marker.ADD,
        ("anomaly/front/boxes", 1): Marker.DELETE,
        ("anomaly/front/labels", 1): Marker.DELETE,
    }
    assert second[("anomaly/front/boxes", 1)].header.stamp.sec == 13
    # A region that lost its depth (None) is deleted too; nothing else is sent twice.
    third = by_key(tracker.update("front", make_header(14), [None]).markers)
    assert {k: m.action for k, m in third.items()} == {
        ("anomaly/front/boxes", 0): Marker.DELETE,
        ("anomaly/front/labels", 0): Marker.DELETE,
    }
    assert tracker.update("front", make_header(15), []).markers == []
    assert tracker.published_ids("front") == frozenset()


def test_markers_are_tracked_per_camera_and_cleared() -> None:
    tracker = MarkerTracker()
    header = make_header()
    tracker.update("left", header, [region((0, 0, 1), (0.1, 0.1, 0.1), 2)])
    right = tracker.update("right", header, [region((0, 0, 1), (0.1, 0.1, 0.1), 2)] * 2)
    assert {m.ns for m in right.markers} == {"anomaly/right/boxes", "anomaly/right/labels"}
    # An empty frame on one camera deletes only that camera's markers.
    cleared = tracker.update("left", header, [])
    assert {(m.ns, m.id, m.action) for m in cleared.markers} == {
        ("anomaly/left/boxes", 0, Marker.DELETE),
        ("anomaly/left/labels", 0, Marker.DELETE),
    }
    assert tracker.published_ids("right") == {0, 1}
    assert len(tracker.clear("right", header).markers) == 4
    assert tracker.published_ids("right") == frozenset()
    roundtrip(right)  # serialises (valid MarkerArray)
    with pytest.raises(ValueError):
        MarkerStyle(lifetime_s=-1.0)


def test_region_3d_fields_fill_and_survive_serialisation() -> None:
    r3d = region((0.05, -0.02, 1.0), (0.2, 0.1, 0.0), 3.1, n=321)
    filled = fill_region_3d(AnomalyRegion(x_offset=4, width=3, height=2, area=5), r3d)
    empty = fill_region_3d(AnomalyRegion(area=7), None)
    result = roundtrip(AnomalyResult(header=make_header(), regions=[filled, empty]))
    got, none = result.regions
    assert got.has_3d and got.num_points == 321 and got.x_offset == 4 and got.area == 5
    assert (got.centroid.x, got.centroid.y, got.centroid.z) == pytest.approx((0.05, -0.02, 1.0))
    assert (got.box_center.x, got.box_center.y, got.box_center.z) == pytest.approx((0.05, -0.02, 1.0))
    assert (got.extent.x, got.extent.y, got.extent.z) == pytest.approx((0.2, 0.1, 0.0))
    assert not none.has_3d and none.num_points == 0 and none.area == 7
    assert (none.centroid.x, none.extent.z) == (0.0, 0.0)


def test_synthetic_scene_through_cloud_bytes_within_1cm() -> None:
    """Plane at 2 m, anomaly patch at 1 m: the published cloud's points lie where the scene is."""
    width, height = 96, 72
    k = PinholeIntrinsics(fx=120.0, fy=120.0, cx=47.5, cy=35.5, width=width, height=height)
    v, u = np.mgrid[0:height, 0:width]
    patch = (u >= 30) & (u < 60) & (v >= 20) & (v < 40)
    depth = np.where(patch, 1.0, 2.0).astype(np.float32)
    scores = np.where(patch, 5.0, 0.0).astype(np.float32)
    mask = anomaly_mask(scores, 1.0)
    regions = find_regions(scores, 1.0, 1, mask=mask)
    out = anomalies_3d(scores, mask, regions, depth, k, DepthSettings(max_range=3.0))
    cloud = roundtrip(anomaly_cloud_msg(make_header(), out.points))
    points = read_cloud_points(cloud)
    assert points.size == 30 * 20
    np.testing.assert_allclose(points["z"], 1.0, atol=0.01)
    # Patch spans pixel columns 30..59 and rows 20..39 at 1 m.
    assert points["x"].min() == pytest.approx((30 - 47.5) / 120, abs=0.01)
    assert points["x"].max() == pytest.approx((59 - 47.5) / 120, abs=0.01)
    assert points["y"].min() == pytest.approx((20 - 35.5) / 120, abs=0.01)
    assert points["y"].max() == pytest.approx((39 - 35.5) / 120, abs=0.01)
    assert cloud.header.frame_id == "front_color_optical_frame" and cloud.header.stamp.sec == 12
    # Voxel downsampling shrinks the message and keeps the points on the patch.
    coarse = anomalies_3d(scores, mask, regions, depth, k, DepthSettings(voxel_size=0.05))
    assert 0 < coarse.points.size < points.size
    np.testing.assert_allclose(coarse.points["z"], 1.0, atol=0.01)
    assert coarse.regions[0].num_points == points.size  # region stats use the full-resolution points
