"""Error text helpers shared by every layer (no ROS, no torch)."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An exception as one line of text (messages and logs say one line per problem)."""
    text = " ".join(str(exc).split()).rstrip(".")
    return text or type(exc).__name__
