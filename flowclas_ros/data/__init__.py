"""flowclas_ros.data."""
