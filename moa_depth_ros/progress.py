"""Progress bars people can read wherever the output goes.

On a terminal: tqdm as usual. Anywhere else (a launch log, CI, ``> file``) tqdm's carriage
returns pile up into one line of hundreds of kilobytes; there a plain line is written every
``LOG_INTERVAL`` seconds instead (and the final state when the bar closes).
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

__all__ = ["LOG_INTERVAL", "progress_bar"]

#: Seconds between progress lines when the output is not a terminal.
LOG_INTERVAL = 5.0
#: The cursor moves tqdm writes around nested bars ("\x1b[A"): meaningless in a log.
_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Lines:
    """A text stream for tqdm that writes a redraw as one line at most every ``interval``
    seconds (tqdm's own throttle is bypassed by every ``set_postfix``), and the last state
    when the bar closes; a redraw that only updates the timing is dropped."""

    def __init__(self, stream: IO[str], interval: float) -> None:
        self.stream = stream
        self.interval = interval
        self.written = ""  # the state last written
        self.pending = ""  # the newest line, not yet written
        self.last_time = -math.inf

    def write(self, text: str) -> None:
        line = _CURSOR_MOVES.sub("", text).replace("\r", "").strip()
        if not line:  # the newline a closing bar ends with: its final state goes out
            self._emit()
            return
        self.pending = line
        if time.monotonic() - self.last_time >= self.interval:
            self._emit()

    def _emit(self) -> None:
        state = self.pending.split(" [")[0]  # "desc:  50%|#####     | 5/10", no timing
        if self.pending and state != self.written:
            self.stream.write(self.pending + "\n")
            self.written, self.last_time = state, time.monotonic()
        self.pending = ""

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def progress_bar(
    iterable: Iterable[Any] | None = None,
    stream: IO[str] | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar on ``stream`` (default stderr), line-by-line when it is not a terminal;
    ``kwargs`` are tqdm's (total, desc, unit, disable, leave, ...)."""
    stream = sys.stderr if stream is None else stream
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    interval = kwargs.pop("mininterval", LOG_INTERVAL)
    kwargs.setdefault("ncols", 100)
    # leave: a finished bar's last line stays in the log (it says how long the stage took).
    kwargs["leave"] = True
    return tqdm(iterable, file=_Lines(stream, interval), ascii=True, mininterval=interval, **kwargs)
