"""flowclas_ros.model: the model core, methods behind one seam (``method.py``; no ROS imports).

Names are resolved lazily (PEP 562): ``flowclas_ros.model.config`` is read by
the torch-free runtime, and importing this package must not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CONFIG_VERSION": "flowclas_ros.model.config",
    "BackboneConfig": "flowclas_ros.model.config",
    "FlowConfig": "flowclas_ros.model.config",
    "ModelConfig": "flowclas_ros.model.config",
    "PreprocessConfig": "flowclas_ros.model.config",
    "ScoreConfig": "flowclas_ros.model.config",
    "CheckpointError": "flowclas_ros.model.checkpoint_meta",
    "LoadedCheckpoint": "flowclas_ros.model.checkpoint",
    "load_checkpoint": "flowclas_ros.model.checkpoint",
    "save_checkpoint": "flowclas_ros.model.checkpoint",
    "FlowCLAS": "flowclas_ros.model.flowclas.torch_model",
    "AnomalyMethod": "flowclas_ros.model.method",
    "create_method": "flowclas_ros.model.method",
    "register_method": "flowclas_ros.model.method",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'flowclas_ros.model' has no attribute {name!r}")
