"""What every training command does with a failure: one line on stderr, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from moa_depth_ros.errors import one_line, report_interrupted

__all__ = ["EXIT_ERROR", "run_command"]

#: Exit status of a user's mistake (a bad option, file or data).
EXIT_ERROR = 2


def run_command(prog: str, body: Callable[[], int], errors: tuple[type[BaseException], ...]) -> int:
    """``body()``'s exit status; Ctrl-C is one line and 130, ``errors`` one line and 2."""
    try:
        return body()
    except KeyboardInterrupt:
        return report_interrupted(prog)
    except errors as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
