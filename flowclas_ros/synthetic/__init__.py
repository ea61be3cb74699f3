"""Synthetic worlds that need no real data.

The demo's rover scenes, and the Perlin noise and shapes that synthetic Outlier Exposure
pastes. Not a data reader: real-data readers, codecs and bags live in ``data/``.
"""
