"""One-to-one pairing of two message streams by header stamp, within a tolerance (offline).

Evaluation pairs predictions with ground truth by ``header.stamp`` (docs/ros.md), never by bag
receive time: a node's output arrives one inference later than the ground truth it belongs to.
Unlike the node's online camera_info lookup (``time_sync``), each message is used at most once,
so a dropped frame shows up as unmatched instead of being paired with its neighbour.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

__all__ = ["pair_by_stamp"]


def pair_by_stamp(left: Sequence[int], right: Sequence[int], slop_ns: int) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` with ``|left[i] - right[j]| <= slop_ns``, each index used once.

    Closest pairs win (greedy by stamp difference; ties by position), which is optimal for
    the usual case of the slop being smaller than half the frame period. Stamps may come in any
    order and repeat (a bag recorded over a looping replay). Pairs are sorted by ``i``.
    """
    if slop_ns < 0:
        raise ValueError(f"slop must be >= 0, got {slop_ns} ns")
    order = sorted(range(len(right)), key=lambda j: right[j])
    sorted_right = [right[j] for j in order]
    candidates: list[tuple[int, int, int]] = []
    for i, stamp in enumerate(left):
        lo = bisect.bisect_left(sorted_right, stamp - slop_ns)
        hi = bisect.bisect_right(sorted_right, stamp + slop_ns)
        candidates.extend((abs(sorted_right[k] - stamp), i, order[k]) for k in range(lo, hi))
    candidates.sort()
    used_left: set[int] = set()
    used_right: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _, i, j in candidates:
        if i not in used_left and j not in used_right:
            used_left.add(i)
            used_right.add(j)
            pairs.append((i, j))
    pairs.sort()
    return pairs
