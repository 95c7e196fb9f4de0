"""Waiting without fixed sleeps: a deadline and a short, growing poll interval."""
from __future__ import annotations

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


def backoff(first: float = 0.001, cap: float = 0.05, factor: float = 1.5) -> Iterator[float]:
    """Poll intervals: ``first``, then growing by ``factor`` up to ``cap``.

    Fast at first, because most conditions come true within milliseconds,
    and gentle later, so a slow start does not burn a core.
    """
    interval = first
    while True:
        yield interval
        interval = min(cap, interval * factor)
