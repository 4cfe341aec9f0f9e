"""Error text and the checks every layer shares (no ROS, no torch)."""

from __future__ import annotations

import sys
from collections.abc import Callable


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


#: Exit status of a user's mistake in a command (a bad option, file or data).
EXIT_ERROR = 2
#: Exit status after Ctrl-C (SIGINT), as shells report it: 128 + 2.
EXIT_INTERRUPTED = 130


def report_interrupted(prog: str) -> int:
    """Ctrl-C in a command: one line on stderr instead of a traceback; the status to exit with."""
    print(f"{prog}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def run_command(prog: str, body: Callable[[], int], errors: tuple[type[BaseException], ...]) -> int:
    """A command's ``body()`` and its exit status: Ctrl-C is one line and 130, ``errors`` one
    line and 2, never a traceback (every command of both packages runs through it)."""
    try:
        return body()
    except KeyboardInterrupt:
        return report_interrupted(prog)
    except errors as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
