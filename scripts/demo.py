"""``make demo``: the whole mission end to end on embedded defaults (see flowclas_ros/demo/).

Generates the synthetic rover-scene dataset, trains with config/train/demo.yaml, evaluates
the held-out split with torch, replays it as a rosbag live through the real anomaly_node,
exports to ONNX and re-evaluates with ONNX Runtime, then writes runs/demo/report.md and
report.html. Stages whose inputs did not change are skipped. ``--help`` lists the options.
"""

from __future__ import annotations

import sys

from flowclas_ros.demo.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
