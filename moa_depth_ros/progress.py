"""Progress bars people can read wherever the output goes.

On a terminal: tqdm as usual. Anywhere else (a launch log, CI, ``> file``) tqdm's carriage
returns pile up into one line of hundreds of kilobytes; there a plain line is written every
``LOG_INTERVAL`` seconds instead (and the final state when the bar closes).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

__all__ = ["LOG_INTERVAL", "progress_bar"]

#: Seconds between progress lines when the output is not a terminal.
LOG_INTERVAL = 5.0


class _Lines:
    """A text stream for tqdm that turns each redraw into one line; a redraw that only updates
    the timing (the bar closing, say) is dropped."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        state = line.split(" [")[0]  # "desc:  50%|#####     | 5/10", without the timing
        if line and state != self.last:
            self.stream.write(line + "\n")
            self.last = state

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
    kwargs.setdefault("mininterval", LOG_INTERVAL)
    kwargs.setdefault("ncols", 100)
    # leave: a finished bar's last line stays in the log (it says how long the stage took).
    kwargs["leave"] = True
    return tqdm(iterable, file=_Lines(stream), ascii=True, **kwargs)
