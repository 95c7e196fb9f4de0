"""Helpers for the services' tests: skips with the reason, leftovers, other users."""
from __future__ import annotations

import glob
import os
import subprocess
import unittest
from typing import Set

from harness.services import Memcached, Postgres, Redis


def needs(service_class: type, **kwargs: object) -> "unittest.case._SkipDecorator":  # type: ignore[name-defined]
    """Skip unless ``service_class(**kwargs)`` can start here (the reason says what to install)."""
    reason = service_class(**kwargs).unavailable()
    return unittest.skipIf(reason is not None, reason or "")


needs_postgres = needs(Postgres)
needs_redis = needs(Redis)
needs_memcached = needs(Memcached)


def shm_segments() -> Set[str]:
    """The SysV shared-memory segment ids (``ipcs -m``; /proc/sysvipc/shm)."""
    try:
        with open("/proc/sysvipc/shm") as f:
            lines = f.read().splitlines()[1:]
        return {line.split()[1] for line in lines if line.strip()}
    except OSError:
        out = subprocess.run(["ipcs", "-m"], stdout=subprocess.PIPE,
                             universal_newlines=True).stdout
        return {line.split()[1] for line in out.splitlines() if line[:2] == "0x"}


def dev_shm() -> Set[str]:
    return set(glob.glob("/dev/shm/*"))


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
