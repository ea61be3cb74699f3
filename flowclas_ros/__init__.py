"""flowclas_ros: pixel-wise anomaly detection (FlowCLAS) for ROS 2 robots.

The core (``model``, ``data``, ``synthetic``, ``runtime``, ``evaluation``, ``export``,
``importer``, ``training``) imports no ROS; ``flowclas_ros.ros`` is the only rclpy adapter.
docs/ARCHITECTURE.md maps the layers.
When built with colcon, the generated ``flowclas_ros.msg`` lives beside it.
"""

# The generated messages (flowclas_ros.msg and its typesupport modules) may live in a
# second `flowclas_ros` directory: the colcon install tree of the dev environment
# (scripts/env.sh puts it on PYTHONPATH after the source tree). Extending __path__
# lets one package span both, so source edits take effect without a rebuild.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
