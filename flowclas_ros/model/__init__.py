"""flowclas_ros.model."""
