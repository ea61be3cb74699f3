"""Field learning (issue 25), without ROS: the learn directory, swap history, training child and gate.

The ROS adapter is :mod:`flowclas_ros.ros.learn_action` (the ``~/learn_nominal`` action) and
:mod:`flowclas_ros.ros.model_swap` (``~/load_model`` / ``~/rollback_model``).
"""
