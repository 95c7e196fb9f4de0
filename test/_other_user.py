"""Run a piece of a test as another user, or in a child that may hang.

Hostile-neighbour tests need a second user of the machine: one whose lock
files, listeners and leases the test process cannot read.  As root a forked
child drops to a throwaway uid (``OTHER_UID``, ``THIRD_UID``) that has no
passwd entry, so nothing is created on the machine and nothing needs
deleting; the child runs the same interpreter with the same imports (an
``exec`` would fail where the interpreter lives under a private home).
Tests that need this skip when not run as root (``needs_root``).

A call that hangs on the code before the fix (a FIFO opened for reading
blocks until a writer comes) is reported as ``hung`` at the deadline and
the child is killed, so the test fails instead of hanging the suite.
"""
from __future__ import annotations

import errno
import gc
import os
import pickle
import select
import signal
import sys
import time
import traceback
import unittest
import warnings
from typing import Any, Callable, NamedTuple, Optional

OTHER_UID = 61731
THIRD_UID = 61732
HANG = 20.0  # a hang-catcher: every call below returns in well under a second

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = unittest.skipUnless(IS_ROOT, "needs root to act as a second user")


class ChildResult(NamedTuple):
    """What a call in the child did: ``how`` is "returned", "raised", "hung" or "died"."""
    how: str
    value: Any = None
    error: str = ""          # the exception's class name
    message: str = ""        # str() of the exception
    errno: Optional[int] = None
    detail: str = ""         # the child's traceback, for failure messages

    def __str__(self) -> str:
        if self.how == "raised":
            return f"raised {self.error}: {self.message}\n{self.detail}"
        return f"{self.how}: {self.value!r}"


def run_as(uid: Optional[int], func: Callable[..., Any], *args: Any,
           umask: Optional[int] = None, timeout: float = HANG) -> ChildResult:
    """``func(*args)`` in a forked child running as ``uid`` (``None``: as we are).

    The return value must pickle.  An exception comes back as its class
    name, message and errno.
    """
    return start_as(uid, func, *args, umask=umask).result(timeout)


class Child:
    """A forked child running one call; :meth:`result` collects its outcome."""

    def __init__(self, pid: int, reader: int, release: Optional[int]) -> None:
        self.pid, self._reader, self._release = pid, reader, release
        self._outcome: Optional[ChildResult] = None

    def result(self, timeout: float = HANG) -> ChildResult:
        if self._outcome is not None:
            return self._outcome
        data = b""
        deadline = time.monotonic() + timeout
        hung = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                hung = True
                break
            ready, _, _ = select.select([self._reader], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._reader, 65536)
            if not chunk:
                break
            data += chunk
        os.close(self._reader)
        if hung:
            os.kill(self.pid, signal.SIGKILL)
        if hung or self._release is None:
            self.end()
        if hung:
            self._outcome = ChildResult("hung", f"no answer within {timeout:g}s")
        elif not data:
            self._outcome = ChildResult("died", "the child exited without an answer")
        else:
            self._outcome = pickle.loads(data)
        return self._outcome

    def end(self) -> None:
        """Let the child exit (if it waits for that) and reap it."""
        if self._release is not None:
            os.close(self._release)
            self._release = None
        if self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0


def start_as(uid: Optional[int], func: Callable[..., Any], *args: Any,
             umask: Optional[int] = None, hold: bool = False) -> Child:
    """Fork a child that runs ``func(*args)`` as ``uid`` and reports.

    With ``hold`` the child reports, then stays alive until :meth:`Child.end`
    (a lease it took stays held until then), and then exits without any
    clean-up of its own, as a killed process would: its locks are dropped by
    the kernel, its lock files stay.
    """
    reader, writer = os.pipe()
    hold_reader, hold_writer = os.pipe() if hold else (None, None)
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():  # 3.12+ warns about forking with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        # The child inherits the parent's garbage; collecting it here would
        # finalise (and warn about) the parent's objects, not ours.
        gc.disable()
        warnings.simplefilter("ignore")
        code = 0
        try:
            os.close(reader)
            if hold_writer is not None:
                os.close(hold_writer)
            try:
                if uid is not None and uid != os.getuid():
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                if umask is not None:
                    os.umask(umask)
                outcome = ChildResult("returned", func(*args))
            except BaseException as exc:  # reported to the parent
                outcome = ChildResult("raised", None, type(exc).__name__, str(exc),
                                  getattr(exc, "errno", None), traceback.format_exc())
            os.write(writer, pickle.dumps(outcome))
            os.close(writer)
            if hold_reader is not None:
                while os.read(hold_reader, 1):
                    pass
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(writer)
    if hold_reader is not None:
        os.close(hold_reader)
    return Child(pid, reader, hold_writer)


def describe_errno(number: Optional[int]) -> str:
    return errno.errorcode.get(number or 0, str(number))
