"""Real-data readers and writers: folder datasets, image codecs, rosbag2 bags, Outlier Exposure.

The demo's rendered scenes are in ``flowclas_ros.synthetic``, which builds on this package.
"""
