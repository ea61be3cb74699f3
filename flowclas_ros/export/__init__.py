"""flowclas_ros.export: ONNX export (verified against torch) and TensorRT engine building (no ROS imports).

``flowclas-export`` is :func:`main`. What an export remembers about its checkpoint is
read and written by :mod:`flowclas_ros.model.checkpoint_meta` (torch-free).
"""

from flowclas_ros.export.cli import main
from flowclas_ros.export.onnx_export import ExportError, ExportReport, export_onnx
from flowclas_ros.export.verify import ExportVerificationError, VerificationResult

__all__ = [
    "ExportError",
    "ExportReport",
    "ExportVerificationError",
    "VerificationResult",
    "export_onnx",
    "main",
]
