"""Outlier Exposure: pasting foreign objects (COCO, synthetic shapes, Perlin noise) into inlier images."""
