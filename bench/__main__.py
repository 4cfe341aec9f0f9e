"""Run every benchmark module: `python -m bench [name ...]` (names without the bench_ prefix)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from bench.common import emit, machine_info


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if n.removeprefix("bench_") in argv]
    emit({"bench": "machine", **machine_info()})
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
