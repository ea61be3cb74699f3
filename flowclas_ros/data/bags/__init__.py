"""rosbag2 recordings: read frames (and masks), write bags, salvage damaged ones, the flowclas-bag CLI."""
