"""Helpers shared by the project's own tests."""
from __future__ import annotations

import inspect
import os
import random
import socket
import subprocess
import sys
import unittest
from typing import TYPE_CHECKING, Any, Dict, List

if TYPE_CHECKING:
    from harness._server.spec import ServerSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_env() -> dict:
    """The environment for a child Python that must import this checkout's harness."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


# Python installs its KeyboardInterrupt handler at start-up only where SIGINT
# is at its default disposition, and an ignored SIGINT is inherited through
# fork and exec.  So a test runner started with SIGINT ignored (a background
# job, nohup, some CI agents) would start children that ignore the Ctrl-C a
# test sends them, and the test would hang until its timeout.  A child that
# a test interrupts runs this first: it then starts as it would from a
# terminal, whatever the runner inherited.  (A handler, unlike SIG_IGN, is
# reset by exec: the child's own children start with the default again.)
DEFAULT_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)"


def python_m(module: str, *args: str) -> List[str]:
    """argv for ``python -m module *args`` whose SIGINT is Python's default
    (see ``DEFAULT_SIGINT``), for tests that press Ctrl-C on it."""
    code = (f"{DEFAULT_SIGINT}\nimport runpy\n"
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", code] + list(args)


def spawn_python(code: str, **kwargs) -> subprocess.Popen:
    """Start ``python -c code`` with this checkout importable and pipes for stdio."""
    kwargs.setdefault("stdin", subprocess.PIPE)
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-c", code], env=python_env(),
                            universal_newlines=True, **kwargs)


class ChildProcessesMixin:
    """Processes a test appends to ``self.procs`` are killed, reaped and their
    pipes closed when the test ends, whatever happened in it."""

    procs: List[subprocess.Popen]

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.procs = []
        self.addCleanup(self._end_procs)  # type: ignore[attr-defined]

    def _end_procs(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(60)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def quiet_window(size: int, low: int = 4000, high: int = 8999, *,
                 test: unittest.TestCase) -> range:
    """A random window of ``size`` free ports below harness's default range.

    Tests that exhaust a range use one nobody else's leases fall into
    (harness's default range starts at 10000).  "Free now" is not enough when
    this suite runs in several processes at once (seen: two of them picked
    overlapping windows and one found its window exhausted), so each port
    of the window is also locked with an abstract Unix socket (Linux) that
    other copies of this function respect, until ``test``'s cleanup.
    """
    from harness import is_port_free
    for _ in range(200):
        start = random.randint(low, high - size)
        window = range(start, start + size)
        locks: List[socket.socket] = []
        try:
            if sys.platform.startswith("linux"):
                for port in window:
                    locks.append(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
                    locks[-1].bind(f"\0harness-test-window-{port}")
            if all(is_port_free(p) for p in window):
                for lock in locks:
                    test.addCleanup(lock.close)
                return window
        except OSError:  # another process of this suite holds part of it
            pass
        for lock in locks:
            lock.close()
    raise RuntimeError(f"no free window of {size} ports in {low}-{high}")


def ipv6_available() -> bool:
    from harness._os.procinfo import has_ipv6_loopback
    return has_ipv6_loopback()


def server_arguments(**overrides: Any) -> Dict[str, Any]:
    """``ServerProcess``'s arguments by name, as its ``__init__`` hands them to
    ``ServerSpec.checked``: the signature's defaults, then ``overrides`` (an
    ``app_code`` server unless told otherwise)."""
    from harness import ServerProcess
    given = {name: parameter.default
             for name, parameter in inspect.signature(ServerProcess).parameters.items()}
    given["app_code"] = "print('serving')"
    given.update(overrides)
    return given


def server_spec(**overrides: Any) -> "ServerSpec":
    """The checked spec of ``ServerProcess(**server_arguments(**overrides))``."""
    from harness._server.spec import ServerSpec
    return ServerSpec.checked(server_arguments(**overrides))


def open_fds() -> List[int]:
    """This process's open file descriptors (Linux), for leak checks."""
    try:
        return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    except OSError:
        return []


def time_wait_overflows() -> int:
    """How often the kernel found its TIME_WAIT table full (TcpExt TCPTimeWaitOverflow;
    0 where it cannot be read).  A test that needs a TIME_WAIT entry checks that
    this did not rise: when it did, the kernel kept none (another process on the
    machine filled the table), and the test has nothing to test with."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table.get("TCPTimeWaitOverflow", 0))
    return 0
