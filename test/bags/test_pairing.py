"""One-to-one pairing by header stamp."""

from __future__ import annotations

from moa_depth_ros.bags.pairing import pair_by_stamp


def test_pairing_is_one_to_one_and_closest_first() -> None:
    # 105 is closest to 100 and 110; 100 gets it, 110 pairs with nothing else within slop 6.
    assert pair_by_stamp([100, 110, 200], [105, 199, 400], 6) == [(0, 0), (2, 1)]
    assert pair_by_stamp([5, 5], [5], 0) == [(0, 0)]  # a repeated stamp is used once
    assert pair_by_stamp([], [1], 10) == []
