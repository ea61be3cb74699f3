"""``visualization_msgs/MarkerArray`` of the anomalous regions' 3D boxes, without stale markers in RViz.

Per region (index ``i`` in the frame's region list, largest first) two markers:

* ``CUBE`` in namespace ``<prefix>/<camera>/boxes``, id ``i``: pose = the box
  centre, scale = the box extent (at least ``min_size`` per axis, so a flat
  patch stays visible), semi-transparent;
* ``TEXT_VIEW_FACING`` in ``<prefix>/<camera>/labels``, id ``i``: the peak
  score, just above the box (optical frame: -y is up in the image).

Stale markers: :class:`MarkerTracker` remembers the ids it published per
camera and, on the next update, sends ``DELETE`` for every id that has no
region any more (a region that left the view, or lost its valid depth).
Explicit deletes were chosen over ``DELETEALL`` + re-add: a namespaced
DELETEALL is honoured only by RViz 2 since Humble (ros2/rviz#685), other
consumers clear every namespace (other cameras' markers too), and re-creating
every marker each frame makes the boxes flicker; per-id DELETE touches only
what vanished and works with any MarkerArray consumer.
``lifetime`` is an extra guard for when the node stops publishing altogether
(camera gone, node killed): the node gives a finite one per update (by default
two frame periods), ``MarkerStyle.lifetime_s`` (0 = forever) is the fallback;
:meth:`MarkerTracker.clear` deletes everything, e.g. on deactivate or on a frame
without usable depth.

Header: frame_id and stamp are the colour image's (the camera optical frame).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from flowclas_ros.runtime.geometry3d import Region3D


@dataclass(frozen=True)
class MarkerStyle:
    """How region markers look.

    Attributes:
        namespace: Prefix of the marker namespaces.
        lifetime_s: Marker lifetime in seconds; 0 keeps markers until deleted.
        min_size: Smallest box side in metres (a planar region has zero thickness).
        text_height: Height of the label text in metres.
        box_rgba: Box colour (red, green, blue, alpha in [0, 1]).
        text_rgba: Label colour.
    """

    namespace: str = "anomaly"
    lifetime_s: float = 0.0
    min_size: float = 0.02
    text_height: float = 0.05
    box_rgba: tuple[float, float, float, float] = (1.0, 0.2, 0.1, 0.45)
    text_rgba: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lifetime_s) and self.lifetime_s >= 0):
            raise ValueError(f"marker lifetime_s must be finite and >= 0, got {self.lifetime_s}")
        if not (self.min_size > 0 and self.text_height > 0):
            raise ValueError("marker min_size and text_height must be > 0")


def _namespaces(style: MarkerStyle, camera: str) -> tuple[str, str]:
    return f"{style.namespace}/{camera}/boxes", f"{style.namespace}/{camera}/labels"


def _base_marker(header: Header, ns: str, marker_id: int, style: MarkerStyle) -> Marker:
    marker = Marker(header=header, ns=ns, id=marker_id, action=Marker.ADD)
    marker.pose.orientation.w = 1.0
    nanoseconds = int(round(style.lifetime_s * 1e9))
    marker.lifetime.sec, marker.lifetime.nanosec = divmod(nanoseconds, 1_000_000_000)
    return marker


def box_marker(header: Header, ns: str, marker_id: int, region: Region3D, style: MarkerStyle) -> Marker:
    """The CUBE marker of one region's 3D box."""
    marker = _base_marker(header, ns, marker_id, style)
    marker.type = Marker.CUBE
    center = region.box_center
    marker.pose.position.x, marker.pose.position.y, marker.pose.position.z = center
    size = [max(float(e), style.min_size) for e in region.extent]
    marker.scale.x, marker.scale.y, marker.scale.z = size
    marker.color = ColorRGBA(
        r=style.box_rgba[0], g=style.box_rgba[1], b=style.box_rgba[2], a=style.box_rgba[3]
    )
    return marker


def label_marker(header: Header, ns: str, marker_id: int, region: Region3D, style: MarkerStyle) -> Marker:
    """The TEXT_VIEW_FACING marker with the region's peak score, above its box."""
    marker = _base_marker(header, ns, marker_id, style)
    marker.type = Marker.TEXT_VIEW_FACING
    center = region.box_center
    half_height = max(region.extent[1], style.min_size) / 2.0
    marker.pose.position.x = center[0]
    marker.pose.position.y = center[1] - half_height - style.text_height  # optical frame: y points down
    marker.pose.position.z = center[2]
    marker.scale.z = style.text_height  # only z is used: the height of a capital letter
    marker.color = ColorRGBA(
        r=style.text_rgba[0], g=style.text_rgba[1], b=style.text_rgba[2], a=style.text_rgba[3]
    )
    marker.text = f"{region.peak_score:.2f}"
    return marker


def delete_marker(header: Header, ns: str, marker_id: int) -> Marker:
    """A DELETE for one (ns, id)."""
    return Marker(header=header, ns=ns, id=marker_id, action=Marker.DELETE)


class MarkerTracker:
    """Builds each camera's MarkerArray and deletes the markers of regions that disappeared.

    Not thread-safe; call it from the one worker thread that publishes the markers.
    """

    def __init__(self, style: MarkerStyle | None = None):
        self.style = style or MarkerStyle()
        self._published: dict[str, set[int]] = {}

    def published_ids(self, camera: str) -> frozenset[int]:
        """Region ids whose markers are currently shown for ``camera``."""
        return frozenset(self._published.get(camera, ()))

    def update(
        self,
        camera: str,
        header: Header,
        regions: Sequence[Region3D | None],
        lifetime_s: float | None = None,
    ) -> MarkerArray:
        """Markers for this frame's regions (None entries get none) plus DELETEs for vanished ones.

        Args:
            camera: Camera name (part of the namespaces; ids are tracked per camera).
            header: The colour image's header (frame_id and stamp).
            regions: The frame's 3D regions in region order (``Anomalies3D.regions``).
            lifetime_s: Lifetime of the added markers; None uses the style's.
        """
        style = self.style if lifetime_s is None else dataclasses.replace(self.style, lifetime_s=lifetime_s)
        boxes_ns, labels_ns = _namespaces(style, camera)
        current = {i for i, region in enumerate(regions) if region is not None}
        markers: list[Marker] = []
        for i in sorted(self._published.get(camera, set()) - current):
            markers += [delete_marker(header, boxes_ns, i), delete_marker(header, labels_ns, i)]
        for i in sorted(current):
            region = regions[i]
            assert region is not None
            markers += [
                box_marker(header, boxes_ns, i, region, style),
                label_marker(header, labels_ns, i, region, style),
            ]
        self._published[camera] = current
        return MarkerArray(markers=markers)

    def clear(self, camera: str, header: Header) -> MarkerArray:
        """DELETEs for every marker shown for ``camera`` (e.g. on deactivate); forgets them."""
        return self.update(camera, header, [])
