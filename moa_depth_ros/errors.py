"""Error text and the checks every layer shares (no ROS, no torch)."""

from __future__ import annotations

import sys


def one_line(exc: BaseException) -> str:
    """An exception as one line of text (messages and logs say one line per problem)."""
    text = " ".join(str(exc).split()).rstrip(".")
    return text or type(exc).__name__


def check_depth_range(min_depth: float, max_depth: float, what: str = "depth range") -> None:
    """ValueError unless 0 < min_depth < max_depth (both finite numbers), naming ``what``."""
    try:
        ok = 0 < float(min_depth) < float(max_depth) < float("inf")
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"{what}: need 0 < min_depth < max_depth, got min_depth {min_depth!r}, "
            f"max_depth {max_depth!r}"
        )


#: Exit status after Ctrl-C (SIGINT), as shells report it: 128 + 2.
EXIT_INTERRUPTED = 130


def report_interrupted(prog: str) -> int:
    """Ctrl-C in a command: one line on stderr instead of a traceback; the status to exit with."""
    print(f"{prog}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED
