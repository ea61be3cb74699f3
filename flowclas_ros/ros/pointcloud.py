"""``sensor_msgs/PointCloud2`` of the anomalous points (x, y, z, score), from a numpy structured array.

The layout is fixed: fields x, y, z, score as little-endian float32 at offsets
0, 4, 8, 12; ``point_step`` 16; an unorganised cloud (``height`` 1).
``is_dense`` is True when every value is finite, which holds for the clouds of
``runtime.geometry3d`` (invalid depth is dropped, never stored as NaN).

sensor_msgs_py's ``point_cloud2.create_cloud`` is the convention and is used
where it is installed (ROS from apt). It is not on PyPI, so the equivalent
numpy path below is used otherwise; both give the same message byte for byte
(test_pointcloud_markers.py checks that wherever sensor_msgs_py imports).
"""

from __future__ import annotations

import array
import sys

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from flowclas_ros.runtime.geometry3d import POINT_DTYPE

try:  # optional: ros-<distro>-sensor-msgs-py (apt), not available as a wheel
    from sensor_msgs_py.point_cloud2 import create_cloud as _create_cloud_sensor_msgs_py
except ImportError:
    _create_cloud_sensor_msgs_py = None

HAVE_SENSOR_MSGS_PY = _create_cloud_sensor_msgs_py is not None
"""True where sensor_msgs_py is importable (its ``create_cloud`` is then used)."""

POINT_FIELDS = tuple(
    PointField(name=name, offset=offset, datatype=PointField.FLOAT32, count=1)
    for name, offset in zip(POINT_DTYPE.names, (0, 4, 8, 12))
)
"""The cloud's fields, matching :data:`runtime.geometry3d.POINT_DTYPE`."""


def _create_cloud_numpy(header: Header, points: np.ndarray) -> PointCloud2:
    # The same message sensor_msgs_py.create_cloud builds for a 1-D structured array.
    data = array.array("B")
    data.frombytes(points.tobytes())
    cloud = PointCloud2(
        header=header,
        height=1,
        width=points.shape[0],
        is_dense=False,
        is_bigendian=False,
        fields=list(POINT_FIELDS),
        point_step=points.dtype.itemsize,
        row_step=points.dtype.itemsize * points.shape[0],
    )
    cloud.data = data  # array('B') is taken as is; bytes would be checked element by element
    return cloud


def anomaly_cloud_msg(
    header: Header, points: np.ndarray, *, use_sensor_msgs_py: bool | None = None
) -> PointCloud2:
    """The PointCloud2 of ``points`` with ``header`` (the colour image's stamp and optical frame).

    Args:
        header: Copied into the message.
        points: 1-D array of :data:`runtime.geometry3d.POINT_DTYPE` (an empty array gives an empty
            cloud, which tells subscribers that nothing is anomalous in this frame).
        use_sensor_msgs_py: Force the sensor_msgs_py (True) or numpy (False) path; None picks
            sensor_msgs_py when installed on a little-endian host.

    Raises:
        ValueError: ``points`` has another dtype or shape.
        RuntimeError: ``use_sensor_msgs_py`` is True but it is not installed.
    """
    points = np.asarray(points)
    if points.dtype != POINT_DTYPE or points.ndim != 1:
        raise ValueError(
            f"cloud points must be a 1-D array of geometry3d.POINT_DTYPE {POINT_DTYPE}, "
            f"got {points.dtype} with shape {points.shape}"
        )
    points = np.ascontiguousarray(points)
    if use_sensor_msgs_py is None:
        # create_cloud marks the data with the host's byte order; ours is always little-endian.
        use_sensor_msgs_py = HAVE_SENSOR_MSGS_PY and sys.byteorder == "little"
    if use_sensor_msgs_py:
        if _create_cloud_sensor_msgs_py is None:
            raise RuntimeError("sensor_msgs_py is not installed (it ships with ROS from apt, not as a wheel)")
        cloud = _create_cloud_sensor_msgs_py(header, list(POINT_FIELDS), points)
    else:
        cloud = _create_cloud_numpy(header, points)
    # create_cloud always says is_dense=False; ours holds no NaN/inf (checked, it is cheap).
    cloud.is_dense = bool(
        np.isfinite(points["x"]).all() and np.isfinite(points["y"]).all() and np.isfinite(points["z"]).all()
    )
    return cloud


def read_cloud_points(cloud: PointCloud2) -> np.ndarray:
    """The points of a cloud made by :func:`anomaly_cloud_msg`, as :data:`POINT_DTYPE` (a copy).

    Raises:
        ValueError: The cloud has another layout.
    """
    names = [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields]
    expected = [(f.name, f.offset, f.datatype, f.count) for f in POINT_FIELDS]
    if names != expected or cloud.point_step != POINT_DTYPE.itemsize or cloud.is_bigendian:
        raise ValueError(f"not an x, y, z, score float32 little-endian cloud: fields {names}")
    count = cloud.width * cloud.height
    buffer = memoryview(cloud.data).cast("B") if not isinstance(cloud.data, bytes) else cloud.data
    if len(buffer) != count * POINT_DTYPE.itemsize:
        raise ValueError(f"cloud data has {len(buffer)} bytes, expected {count * POINT_DTYPE.itemsize}")
    return np.frombuffer(buffer, dtype=POINT_DTYPE, count=count).copy()
