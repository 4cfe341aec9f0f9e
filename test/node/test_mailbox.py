"""The one-slot mailbox between callbacks and the worker, with and without prefer_fresh."""

from __future__ import annotations

import threading
import time

from moa_depth_ros.node.mailbox import LatestMailbox


def test_mailbox_keeps_only_the_newest_and_counts_drops() -> None:
    box: LatestMailbox[int] = LatestMailbox()
    assert box.put(1) is False
    assert box.put(2) is True  # 1 was never taken
    assert box.put(3) is True
    assert box.take(0) == 3
    assert box.take(0) is None
    assert box.put(4) is False  # the slot was emptied by take: nothing dropped


def test_mailbox_close_wakes_a_waiting_take() -> None:
    box: LatestMailbox[int] = LatestMailbox()
    result: list[int | None] = []
    taker = threading.Thread(target=lambda: result.append(box.take(10)))
    taker.start()
    time.sleep(0.05)
    box.close()
    taker.join(2)
    assert not taker.is_alive() and result == [None]
    assert box.put(4) is False and box.take(0) is None  # closed: discarded
    box.open()
    box.put(5)
    assert box.take(0) == 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _mailbox_fed_every_100_ms(prefer_fresh: bool) -> tuple[LatestMailbox[int], FakeClock]:
    clock = FakeClock()
    box: LatestMailbox[int] = LatestMailbox(prefer_fresh=prefer_fresh, clock=clock)
    for item in range(4):  # arrivals at t = 0, 0.1, 0.2, 0.3 s: input period 0.1 s
        clock.now = item * 0.1
        box.put(item)
    return box, clock


def test_prefer_fresh_waits_for_the_next_frame_when_it_is_due_sooner() -> None:
    box, clock = _mailbox_fed_every_100_ms(prefer_fresh=True)
    clock.now = 0.37  # frame 3 has waited 70 ms; frame 4 is due in 30 ms
    threading.Timer(0.03, box.put, args=(4,)).start()
    started = time.monotonic()
    assert box.take(1) == 4
    assert time.monotonic() - started >= 0.02


def test_prefer_fresh_takes_the_waiting_frame_when_the_next_is_far() -> None:
    box, clock = _mailbox_fed_every_100_ms(prefer_fresh=True)
    clock.now = 0.32  # waited 20 ms, next due in 80 ms: waiting would cost more than it saves
    started = time.monotonic()
    assert box.take(1) == 3
    assert time.monotonic() - started < 0.02


def test_prefer_fresh_gives_up_when_the_next_frame_does_not_come() -> None:
    box, clock = _mailbox_fed_every_100_ms(prefer_fresh=True)
    clock.now = 0.37  # next due in 30 ms; waits at most that plus a quarter period
    started = time.monotonic()
    assert box.take(1) == 3
    assert 0.05 <= time.monotonic() - started < 0.5


def test_without_prefer_fresh_the_waiting_frame_is_taken_at_once() -> None:
    box, clock = _mailbox_fed_every_100_ms(prefer_fresh=False)
    clock.now = 0.37
    started = time.monotonic()
    assert box.take(1) == 3
    assert time.monotonic() - started < 0.02
