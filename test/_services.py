"""Helpers for the services' tests: skips with the reason, leftovers, other users."""
from __future__ import annotations

import os
import unittest
from typing import Iterable, Set

from harness.services import Memcached, Postgres, Redis


def needs(service_class: type, **kwargs: object) -> "unittest.case._SkipDecorator":  # type: ignore[name-defined]
    """Skip unless ``service_class(**kwargs)`` can start here (the reason says what to install)."""
    reason = service_class(**kwargs).unavailable()
    return unittest.skipIf(reason is not None, reason or "")


needs_postgres = needs(Postgres)
needs_redis = needs(Redis)
needs_memcached = needs(Memcached)


def shm_segments(creators: Iterable[int]) -> Set[str]:
    """The SysV shared-memory segments (``ipcs -m``) that one of ``creators`` made.

    By creator: other programs on a shared machine (another PostgreSQL)
    come and go meanwhile.
    """
    pids = {str(pid) for pid in creators}
    with open("/proc/sysvipc/shm") as f:
        rows = [line.split() for line in f.read().splitlines()[1:] if line.strip()]
    return {row[1] for row in rows if row[4] in pids}


def proc_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


IS_ROOT = os.geteuid() == 0
