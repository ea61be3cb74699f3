"""flowclas_ros.runtime."""
