"""flowclas_ros.evaluation."""
