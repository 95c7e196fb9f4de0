"""Raw process facts from Linux's ``/proc``: stdlib only, nothing else of harness.

The zygote and its keepers (:mod:`harness._server.zygote`) load this module
without the rest of the package, so it imports only the standard library
and :mod:`.identity`.  Everything here answers "unknown" (``None`` or an
empty result) where ``/proc`` is missing; :mod:`.procinfo` adds psutil on
top for the runner.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Set

from .identity import ProcessId

HAVE_PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self")

# Indexes into stat_fields() (field number in proc(5) minus 3).
STATE, PPID, STARTTIME = 0, 1, 19


def read_text(path: str) -> Optional[str]:
    """The text of a /proc (or /sys) file, ``None`` if it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def stat_fields(pid: int) -> Optional[List[bytes]]:
    """Fields 3 on of /proc/<pid>/stat (state first), or ``None`` if it is gone.

    The command name (field 2) may hold spaces and parentheses, so the
    fields after it are split from the last ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def identity(pid: int) -> Optional[ProcessId]:
    """``pid`` with its start time (clock ticks since boot), or ``None`` if it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else ProcessId(pid, fields[STARTTIME].decode())


def is_dead(pid: int) -> bool:
    """True if ``pid`` is gone or a zombie (it has exited, only its status remains)."""
    fields = stat_fields(pid)
    return fields is None or fields[STATE] in (b"Z", b"X")


def alive(target: ProcessId) -> bool:
    """True if ``target`` still runs: same pid and start time, and not a zombie."""
    fields = stat_fields(target.pid)
    return (fields is not None and fields[STATE] not in (b"Z", b"X")
            and fields[STARTTIME].decode() == target.start)


def parent(pid: int) -> Optional[int]:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[PPID])


def children(pid: int) -> Optional[List[int]]:
    """The children of ``pid`` from /proc/<pid>/task/*/children, without a scan of /proc.

    Empty if ``pid`` is gone; ``None`` if the kernel does not offer the
    file (CONFIG_PROC_CHILDREN) or there is no /proc: then the caller scans.
    """
    if not HAVE_PROC:
        return None
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    except OSError:
        return None
    found: List[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                found.extend(int(child) for child in f.read().split())
        except FileNotFoundError:
            if os.path.exists(f"/proc/{pid}/task/{task}"):
                return None  # the thread is there, its children file is not
        except OSError:
            continue
    return found


def subtree(pid: int) -> Optional[List[int]]:
    """Every descendant of ``pid``, parents before children; ``None`` if unknown.

    Read through the children files, so it costs a few reads per process of
    the tree, not a walk over every process of the machine.
    """
    found: List[int] = []
    seen = {pid}
    todo = [pid]
    while todo:
        kids = children(todo.pop(0))
        if kids is None:
            return None
        for kid in kids:
            if kid not in seen:
                seen.add(kid)
                found.append(kid)
                todo.append(kid)
    return found


def scan_children() -> Dict[int, List[int]]:
    """parent pid -> child pids for every visible process (the slow, full scan)."""
    tree: Dict[int, List[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return tree
    for entry in entries:
        if entry.isdigit():
            ppid = parent(int(entry))
            if ppid is not None:
                tree.setdefault(ppid, []).append(int(entry))
    return tree


def socket_inodes(pid: int) -> Set[int]:
    """Inodes of the sockets ``pid`` has open (empty if it cannot be read)."""
    inodes: Set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def environ(pid: int) -> Optional[bytes]:
    """The raw environment block of ``pid`` (NUL separated), ``None`` if unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return None


def has_env(block: bytes, needle: bytes) -> bool:
    """True if the environment ``block`` holds the entry ``needle`` (``NAME=value``)."""
    return (block == needle or block.startswith(needle + b"\0")
            or (b"\0" + needle + b"\0") in block or block.endswith(b"\0" + needle))


def thread_count(pid: int) -> Optional[int]:
    """How many OS threads ``pid`` has (``None`` if unknown)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None
