"""flowclas_ros.model: the FlowCLAS model core (no ROS imports)."""

from flowclas_ros.model.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, save_checkpoint
from flowclas_ros.model.config import (
    CONFIG_VERSION,
    BackboneConfig,
    FlowConfig,
    ModelConfig,
    PreprocessConfig,
    ScoreConfig,
)
from flowclas_ros.model.flowclas.torch_model import FlowCLAS

__all__ = [
    "CONFIG_VERSION",
    "BackboneConfig",
    "CheckpointError",
    "FlowCLAS",
    "FlowConfig",
    "LoadedCheckpoint",
    "ModelConfig",
    "PreprocessConfig",
    "ScoreConfig",
    "load_checkpoint",
    "save_checkpoint",
]
