"""Waiting without fixed sleeps: nothing in harness waits any other way.

Every wait is "until a condition, or a deadline" on ``time.monotonic()``
(the wall clock can be stepped by NTP and would end a deadline early or
never).  Between looks at the condition harness pauses with one of two
interval policies:

* :func:`poll_interval` -- proportional to the time already waited (4 % of
  it, 1 ms to a cap): for waiting on *someone else* (a server to become
  ready, a process to exit), so a start that takes T is seen at most 4 % of
  T late and costs O(log T) looks;
* :func:`backoff` -- geometric from a first interval: for retrying *our
  own* cheap checks where the first milliseconds matter most.

:func:`pause` is the one way to pause: ``select()`` on no descriptors sleeps
exactly the time asked, and is never a fixed sleep because every caller
passes a deadline-capped interval.
"""
from __future__ import annotations

import select
import time
from typing import Iterator, Optional


class Deadline:
    """A point in ``time.monotonic()`` time; ``None`` seconds means never."""

    def __init__(self, seconds: Optional[float]) -> None:
        self.start = time.monotonic()
        self.seconds = seconds
        self.at = None if seconds is None else self.start + seconds

    def remaining(self) -> float:
        """Seconds left, never negative (``inf`` without a deadline)."""
        if self.at is None:
            return float("inf")
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def cap(self, seconds: float) -> float:
        """``seconds``, or less if the deadline comes first."""
        return min(seconds, self.remaining())

    def polls(self, cap: float = 0.05) -> Iterator[float]:
        """Proportional pauses (:func:`poll_interval`), each cut to the time left.

        Ends once the deadline has passed, so ``for pause in d.polls(): if
        done(): break; pause(...)`` always terminates.
        """
        while not self.expired:
            yield self.cap(poll_interval(self.elapsed(), cap=cap))


def poll_interval(elapsed: float, first: float = 0.001, cap: float = 0.05,
                  share: float = 0.04) -> float:
    """How long to wait before the next look, after ``elapsed`` seconds of waiting.

    Proportional to the time already waited (``share`` of it), between
    ``first`` and ``cap``: a server that takes T to start is seen ready at
    most ``share * T`` late, and a slow start costs O(log T) probes.
    """
    return min(cap, max(first, elapsed * share))


def backoff(first: float = 0.001, cap: float = 0.05, factor: float = 1.5) -> Iterator[float]:
    """Poll intervals: ``first``, then growing by ``factor`` up to ``cap``.

    Fast at first, because most conditions come true within milliseconds,
    and gentle later, so a slow start does not burn a core.
    """
    interval = first
    while True:
        yield interval
        interval = min(cap, interval * factor)


def pause(seconds: float) -> None:
    """Sleep ``seconds`` (a deadline-capped poll interval; nothing if <= 0)."""
    if seconds > 0:
        select.select([], [], [], seconds)
