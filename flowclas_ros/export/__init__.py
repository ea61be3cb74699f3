"""flowclas_ros.export: ONNX export (verified against torch) and TensorRT engine building (no ROS imports).

``flowclas-export`` is :func:`main`.
"""

from flowclas_ros.export.cli import main
from flowclas_ros.export.metadata import (
    CheckpointIdentity,
    ExportMetadata,
    ModelMismatchError,
    check_matches,
    read_checkpoint_identity,
    read_onnx_metadata,
)
from flowclas_ros.export.onnx_export import ExportError, ExportReport, ensure_onnx, export_onnx
from flowclas_ros.export.verify import ExportVerificationError, VerificationResult

__all__ = [
    "CheckpointIdentity",
    "ExportError",
    "ExportMetadata",
    "ExportReport",
    "ExportVerificationError",
    "ModelMismatchError",
    "VerificationResult",
    "check_matches",
    "ensure_onnx",
    "export_onnx",
    "main",
    "read_checkpoint_identity",
    "read_onnx_metadata",
]
