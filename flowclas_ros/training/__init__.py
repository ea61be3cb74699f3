"""flowclas_ros.training."""
