"""ROS 2 adapter: the only place rclpy is imported."""
