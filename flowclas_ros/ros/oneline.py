"""``one_line``: an exception as one log line (shared by the node, its worker and its 3D stage)."""

from __future__ import annotations


def one_line(err: BaseException) -> str:
    """``Type: message`` on one line (OpenCV and others put newlines in their messages)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
