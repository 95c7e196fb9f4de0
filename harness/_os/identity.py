"""``ProcessId``: a process, told apart from a later one that gets the same pid.

A pid alone is a weak name: once a process is reaped the kernel hands its
number to the next process that starts.  harness never signals a bare pid
it did not just prove is still the same process, so it names processes by
pid *and* start time (the kernel's start time in clock ticks since boot on
Linux, psutil's ``create_time`` elsewhere).

``HARNESS_OWNER`` and the ``owner`` files of private dirs carry the test
runner's ``ProcessId`` as text (``str(pid_id)``), plus the runner's PID
namespace, because a pid means nothing outside its namespace: ``reap`` run
on a host must not judge a containerised runner dead because the host has
no process with that number.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Tuple, Union


class ProcessId:
    """``pid`` plus ``start`` (``None``: unknown); ``pidns`` is not part of equality.

    The text form, ``"1234:567890"`` or ``"1234:567890:4026531836"`` with the
    namespace, is the wire format of the markers (``?`` for an unknown start).
    Immutable and hashable.  (A plain class: the zygote imports this module,
    and ``dataclasses`` would add 10 ms to its start.)
    """

    __slots__ = ("pid", "start", "pidns")
    pid: int
    start: Optional[str]
    pidns: Optional[int]

    def __init__(self, pid: int, start: Optional[str], pidns: Optional[int] = None) -> None:
        object.__setattr__(self, "pid", pid)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "pidns", pidns)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ProcessId is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProcessId):
            return NotImplemented
        return (self.pid, self.start) == (other.pid, other.start)

    def __hash__(self) -> int:
        return hash((self.pid, self.start))

    def __repr__(self) -> str:
        return f"ProcessId(pid={self.pid}, start={self.start!r}, pidns={self.pidns!r})"

    def __str__(self) -> str:
        text = f"{self.pid}:{self.start or '?'}"
        return text if self.pidns is None else f"{text}:{self.pidns}"

    def __reduce__(self) -> Tuple[Any, Tuple[int, Optional[str], Optional[int]]]:
        return (ProcessId, (self.pid, self.start, self.pidns))

    @classmethod
    def parse(cls, text: object) -> Optional["ProcessId"]:
        """The ``ProcessId`` written as ``text``, or ``None`` if it is not one."""
        if not isinstance(text, str):
            return None
        parts = text.strip().split(":")
        if not 2 <= len(parts) <= 3 or not parts[0].isdigit() or int(parts[0]) <= 0:
            return None
        start: Optional[str] = parts[1] if parts[1] not in ("", "?") else None
        pidns = int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else None
        return cls(int(parts[0]), start, pidns)

    @classmethod
    def coerce(cls, value: Union["ProcessId", str]) -> Optional["ProcessId"]:
        """``value`` if it is a ``ProcessId``, else :meth:`parse` of it."""
        return value if isinstance(value, ProcessId) else cls.parse(value)


def own_pid_namespace() -> Optional[int]:
    """The inode of this process's PID namespace (Linux), or ``None``."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
