"""flowclas_ros.runtime: inference backends behind one interface (no ROS imports)."""

from flowclas_ros.runtime.base import (
    BACKENDS,
    InferenceBackend,
    Prediction,
    create_backend,
    register_backend,
)

__all__ = ["BACKENDS", "InferenceBackend", "Prediction", "create_backend", "register_backend"]
