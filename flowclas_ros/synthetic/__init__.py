"""Synthetic worlds that need no real data: the demo's rover scenes and ``flowclas-make-dataset``.

Not a data reader: real-data readers, codecs, bags and Outlier Exposure (with the Perlin noise
and random shapes it pastes, which the scenes reuse) live in ``data/``; this package imports
``data``, never the other way round.
"""
