"""Added per-frame latency of the 3D stage (issue #10) at 640x480 with 10% anomalous pixels.

Usage: python benchmarks/geometry3d_latency.py [--width 640] [--height 480] [--fraction 0.1] [--repeats 30]

Times, per frame, what the node adds when depth is present: 16UC1 decode + metres, back-projection,
region boxes, optional voxel grid, the PointCloud2 and the MarkerArray (message construction,
not DDS). The scene: a plane at 2 m with anomalous blobs (about ``fraction`` of the pixels, a few
regions) at 1-1.5 m, and 1% invalid depth. Prints min/p50/p90 in milliseconds per stage and in
total for each voxel size (min: the least disturbed by other load), and the cloud size. "labels"
is the connected-component pass that anomalies_3d repeats unless the caller hands it the labels
of postprocess.find_regions. Runs without rclpy if it is missing (messages skipped).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import cv2
import numpy as np

from flowclas_ros.data.images.codec import decode_float
from flowclas_ros.runtime.depth_camera import PinholeIntrinsics, depth_to_metres
from flowclas_ros.runtime.geometry3d import DepthSettings, anomalies_3d, region_labels
from flowclas_ros.runtime.postprocess import anomaly_mask, find_regions

try:
    from std_msgs.msg import Header

    from flowclas_ros.ros.markers import MarkerTracker
    from flowclas_ros.ros.pointcloud import anomaly_cloud_msg
except ImportError:  # no ROS environment: time the ROS-free part only
    Header = None


def make_scene(width: int, height: int, fraction: float, seed: int = 0) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.zeros((height, width), np.float32)
    depth = np.full((height, width), 2000, np.uint16)
    target = fraction * width * height
    while np.count_nonzero(scores) < target:
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        radius = int(rng.integers(15, 45))
        blob = np.zeros_like(scores, dtype=np.uint8)
        cv2.circle(blob, (int(cx), int(cy)), radius, 1, -1)
        scores[blob > 0] = rng.uniform(2.0, 5.0)
        depth[blob > 0] = int(rng.uniform(1000, 1500))
    invalid = rng.random((height, width)) < 0.01
    depth[invalid] = 0
    return depth.tobytes(), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    w, h = args.width, args.height
    depth_bytes, scores = make_scene(w, h, args.fraction)
    k = PinholeIntrinsics(fx=600.0, fy=600.0, cx=(w - 1) / 2, cy=(h - 1) / 2, width=w, height=h)
    mask = anomaly_mask(scores, 1.0)
    regions = find_regions(scores, 1.0, 20, mask=mask)
    print(
        f"{platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {w}x{h}, "
        f"{np.count_nonzero(mask) / mask.size:.1%} anomalous, {len(regions)} regions, "
        f"messages {'built' if Header else 'skipped (no ROS)'}"
    )
    tracker = MarkerTracker() if Header else None
    for voxel in (0.0, 0.01, 0.05):
        settings = DepthSettings(voxel_size=voxel, max_range=10.0)
        stages: dict[str, list[float]] = {}
        size = 0
        for _ in range(args.repeats):
            marks = [("start", time.perf_counter())]
            depth = depth_to_metres(decode_float("16UC1", h, w, w * 2, depth_bytes, 0), "16UC1")
            marks.append(("decode", time.perf_counter()))
            labels = region_labels(mask, regions)  # inside anomalies_3d unless the caller has them
            marks.append(("labels", time.perf_counter()))
            out = anomalies_3d(scores, mask, regions, depth, k, settings, labels=labels)
            marks.append(("3d", time.perf_counter()))
            if Header is not None:
                header = Header(frame_id="camera_optical_frame")
                anomaly_cloud_msg(header, out.points)
                marks.append(("cloud", time.perf_counter()))
                tracker.update("camera", header, out.regions)
                marks.append(("markers", time.perf_counter()))
            for (_, t0), (name, t1) in zip(marks, marks[1:]):
                stages.setdefault(name, []).append((t1 - t0) * 1e3)
            stages.setdefault("total", []).append((marks[-1][1] - marks[0][1]) * 1e3)
            size = out.points.size
        text = "  ".join(
            f"{name} {min(v):.2f}/{np.median(v):.2f}/{np.percentile(v, 90):.2f}" for name, v in stages.items()
        )
        print(f"voxel {voxel:4.2f} m, cloud {size:5d} points; ms min/p50/p90: {text}")


if __name__ == "__main__":
    main()
