"""Helpers shared by the project's own tests."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_env() -> dict:
    """The environment for a child Python that must import this checkout's harness."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


def spawn_python(code: str, **kwargs) -> subprocess.Popen:
    """Start ``python -c code`` with this checkout importable and pipes for stdio."""
    kwargs.setdefault("stdin", subprocess.PIPE)
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-c", code], env=python_env(),
                            universal_newlines=True, **kwargs)


def quiet_window(size: int, low: int = 4000, high: int = 8999) -> range:
    """A random window of ``size`` ports below harness's default range, all free now.

    Tests that exhaust a range use one nobody else's leases fall into
    (harness's default range starts at 10000).
    """
    from harness import is_port_free
    for _ in range(200):
        start = random.randint(low, high - size)
        window = range(start, start + size)
        if all(is_port_free(p) for p in window):
            return window
    raise RuntimeError(f"no free window of {size} ports in {low}-{high}")


def ipv6_available() -> bool:
    from harness._procinfo import has_ipv6_loopback
    return has_ipv6_loopback()


def open_fds() -> List[int]:
    """This process's open file descriptors (Linux), for leak checks."""
    try:
        return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    except OSError:
        return []
