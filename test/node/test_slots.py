"""The frame slots between callbacks and the worker, with and without prefer_fresh."""

from __future__ import annotations

import threading
import time

from moa_depth_ros.node.slots import FrameSlots

CAM = "camera"


def test_slot_keeps_only_the_newest_and_counts_drops() -> None:
    box: FrameSlots[int] = FrameSlots([CAM])
    assert box.put(CAM, 1) is False
    assert box.put(CAM, 2) is True  # 1 was never taken
    assert box.put(CAM, 3) is True
    assert box.take(0) == {CAM: 3}
    assert box.take(0) is None
    assert box.put(CAM, 4) is False  # the slot was emptied by take: nothing dropped


def test_slot_close_wakes_a_waiting_take() -> None:
    box: FrameSlots[int] = FrameSlots([CAM])
    result: list[int | None] = []
    taker = threading.Thread(target=lambda: result.append(box.take(10)))
    taker.start()
    time.sleep(0.05)
    box.close()
    taker.join(2)
    assert not taker.is_alive() and result == [None]
    assert box.put(CAM, 4) is False and box.take(0) is None  # closed: discarded
    box.open()
    box.put(CAM, 5)
    assert box.take(0) == {CAM: 5}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _slot_fed_every_100_ms(prefer_fresh: bool) -> tuple[FrameSlots[int], FakeClock]:
    clock = FakeClock()
    box: FrameSlots[int] = FrameSlots([CAM], prefer_fresh, clock)
    for item in range(4):  # arrivals at t = 0, 0.1, 0.2, 0.3 s: input period 0.1 s
        clock.now = item * 0.1
        box.put(CAM, item)
    return box, clock


def test_prefer_fresh_waits_for_the_next_frame_when_it_is_due_sooner() -> None:
    box, clock = _slot_fed_every_100_ms(prefer_fresh=True)
    clock.now = 0.37  # frame 3 has waited 70 ms; frame 4 is due in 30 ms
    threading.Timer(0.03, box.put, args=(CAM, 4)).start()
    started = time.monotonic()
    assert box.take(1) == {CAM: 4}
    assert time.monotonic() - started >= 0.02


def test_prefer_fresh_takes_the_waiting_frame_when_the_next_is_far() -> None:
    box, clock = _slot_fed_every_100_ms(prefer_fresh=True)
    clock.now = 0.32  # waited 20 ms, next due in 80 ms: waiting would cost more than it saves
    started = time.monotonic()
    assert box.take(1) == {CAM: 3}
    assert time.monotonic() - started < 0.02


def test_prefer_fresh_gives_up_when_the_next_frame_does_not_come() -> None:
    box, clock = _slot_fed_every_100_ms(prefer_fresh=True)
    clock.now = 0.37  # next due in 30 ms; waits at most that plus a quarter period
    started = time.monotonic()
    assert box.take(1) == {CAM: 3}
    assert 0.05 <= time.monotonic() - started < 0.5


def test_without_prefer_fresh_the_waiting_frame_is_taken_at_once() -> None:
    box, clock = _slot_fed_every_100_ms(prefer_fresh=False)
    clock.now = 0.37
    started = time.monotonic()
    assert box.take(1) == {CAM: 3}
    assert time.monotonic() - started < 0.02


def _slots_fed(periods: dict[str, float], prefer_fresh: bool, until: float):
    """FrameSlots with each key put every ``periods[key]`` s up to ``until`` (fake clock)."""
    from moa_depth_ros.node.slots import FrameSlots

    clock = FakeClock()
    slots: FrameSlots[str] = FrameSlots(periods, prefer_fresh, clock)
    events = sorted((k * p, key) for key, p in periods.items() for k in range(int(until / p) + 1))
    for t, key in events:
        clock.now = t
        slots.put(key, f"{key}@{t:.2f}")
    return slots, clock


def test_slots_take_the_newest_of_every_camera_at_once() -> None:
    slots, _ = _slots_fed({"left": 0.1, "right": 0.25}, prefer_fresh=False, until=1.0)
    assert slots.take(0) == {"left": "left@1.00", "right": "right@1.00"}
    assert slots.take(0) is None  # both slots emptied


def test_a_fast_camera_does_not_starve_a_slow_one() -> None:
    from moa_depth_ros.node.slots import FrameSlots

    clock = FakeClock()
    slots: FrameSlots[int] = FrameSlots(["fast", "slow"], clock=clock)
    slots.put("slow", 0)
    for i in range(50):  # the fast camera floods its slot
        assert slots.put("fast", i) is (i > 0)
    assert slots.take(0) == {"fast": 49, "slow": 0}


def test_a_waiting_frame_rides_along_with_one_that_goes() -> None:
    """prefer_fresh with several cameras: left's frame is 0.09 s old and its next is due in
    0.01 s, but right's fresh frame starts a forward anyway, and left's goes in the same batch
    (cheaper than a forward of its own after its successor arrives)."""
    slots, clock = _slots_fed({"left": 0.1, "right": 0.1}, prefer_fresh=True, until=0.9)
    clock.now = 0.99  # both last put at 0.9: waited 0.09, next due in 0.01 → both would wait
    slots.put("right", "right@0.99")
    assert slots.take(0) == {"left": "left@0.90", "right": "right@0.99"}


def test_put_on_an_unknown_camera_is_an_error() -> None:
    import pytest

    from moa_depth_ros.node.slots import FrameSlots

    slots: FrameSlots[int] = FrameSlots(["a"])
    with pytest.raises(KeyError):
        slots.put("b", 1)
