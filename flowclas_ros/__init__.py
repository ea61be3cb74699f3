"""flowclas_ros: pixel-wise anomaly detection (FlowCLAS) for ROS 2 robots.

The core (``model``, ``data``, ``training``, ``evaluation``, ``export``,
``runtime``) imports no ROS; ``flowclas_ros.ros`` is the only rclpy adapter.
When built with colcon, the generated ``flowclas_ros.msg`` lives beside it.
"""

__version__ = "0.1.0"
