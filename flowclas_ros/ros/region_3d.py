"""Fill the optional 3D fields of ``flowclas_ros/msg/AnomalyRegion`` from a ``geometry3d.Region3D``."""

from __future__ import annotations

from flowclas_ros.msg import AnomalyRegion
from flowclas_ros.runtime.geometry3d import Region3D


def fill_region_3d(msg: AnomalyRegion, region: Region3D | None) -> AnomalyRegion:
    """Sets ``has_3d``, ``centroid``, ``box_center``, ``extent`` and ``num_points`` of ``msg``.

    ``region`` None (no depth for the frame, or no valid depth in the region) leaves
    ``has_3d`` false and the 3D fields zero, as the message documents. Returns ``msg``.
    """
    if region is None:
        msg.has_3d = False
        msg.centroid.x = msg.centroid.y = msg.centroid.z = 0.0
        msg.box_center.x = msg.box_center.y = msg.box_center.z = 0.0
        msg.extent.x = msg.extent.y = msg.extent.z = 0.0
        msg.num_points = 0
        return msg
    msg.has_3d = True
    msg.centroid.x, msg.centroid.y, msg.centroid.z = (float(v) for v in region.centroid)
    msg.box_center.x, msg.box_center.y, msg.box_center.z = (float(v) for v in region.box_center)
    msg.extent.x, msg.extent.y, msg.extent.z = (float(v) for v in region.extent)
    msg.num_points = int(region.num_points)
    return msg
