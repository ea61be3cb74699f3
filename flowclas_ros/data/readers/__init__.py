"""Readers of public anomaly-segmentation benchmarks and Cityscapes in their released layouts."""
