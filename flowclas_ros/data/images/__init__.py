"""Images: the codec the node and the readers share, folder datasets, preprocessing transforms."""
