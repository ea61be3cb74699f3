"""flowclas_ros.runtime: inference backends behind one interface (no ROS imports).

The backend API is imported lazily (PEP 562) so that light submodules such as
``runtime.postprocess`` or ``runtime.geometry3d`` do not pull in torch: that
import costs the node 10-20 s of start-up and makes ``--help`` slow.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BACKENDS", "InferenceBackend", "Prediction", "create_backend", "register_backend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("flowclas_ros.runtime.base"), name)
    raise AttributeError(f"module 'flowclas_ros.runtime' has no attribute {name!r}")
