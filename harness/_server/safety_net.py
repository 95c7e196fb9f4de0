"""The safety net: every live server is stopped when the runner goes away.

- At interpreter exit (atexit), every server still running is stopped
  gracefully, then the zygotes are closed.
- On SIGTERM and SIGINT the servers are stopped and the previous handler
  is chained to (a SIGTERM with the default action then still ends the
  runner by SIGTERM).  ``unittest`` skips ``addCleanup`` callbacks on
  Ctrl-C, so this is what keeps an interrupted run from leaking servers.
- SIGKILL cannot be caught: the lifeline does it (:mod:`.supervisor`).

The handlers are installed when the first server starts (from the main
thread; a server started from another thread is still covered by atexit
and the lifeline), never at import: importing harness -- which the pytest
plugin does in every session -- changes nothing.  A handler installed
*after* harness's is left alone.  When harness chains to a previous
handler it reinstalls that one for the duration of the call, so a handler
that checks it is the installed one -- unittest's ``-c`` (catch break)
does: its first Ctrl-C stops the run gracefully -- behaves as if harness
were not there.
"""
from __future__ import annotations

import atexit
import os
import signal
import threading
from typing import Any, Callable, Dict, List

from . import supervisor

_lock = threading.Lock()
_live: Dict[int, Any] = {}  # id(server) -> server, strong refs: a dropped server still stops
_owner_pid = os.getpid()
_previous: Dict[int, Any] = {}  # signal number -> the handler harness's replaced
_registered = False


def add(server: Any) -> None:
    """Track a launched server, and put the net up on the first one."""
    with _lock:
        _live[id(server)] = server
    install()


def discard(server: Any) -> None:
    with _lock:
        _live.pop(id(server), None)


def live() -> List[Any]:
    with _lock:
        return list(_live.values())


def stop_all(emergency: bool = False) -> None:
    """Stop every server this process started and has not stopped."""
    if os.getpid() != _owner_pid:
        return
    for server in live():
        try:
            if emergency:
                server._emergency_stop()
            else:
                server.stop()
        except Exception:  # a safety net must not stop half-way
            pass


def _at_exit() -> None:
    stop_all()
    supervisor.shutdown()


def _chain(sig: int, frame: Any, previous: Any, mine: Any) -> None:
    """Call ``previous`` as if it were still the installed handler."""
    if previous in (signal.SIG_DFL, None):
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return
    if not callable(previous):
        return  # SIG_IGN
    signal.signal(sig, previous)
    try:
        previous(sig, frame)
    finally:
        if signal.getsignal(sig) is previous:
            signal.signal(sig, mine)


def _handler_for(signum: int, previous: Any) -> Callable[[int, Any], None]:
    def handler(sig: int, frame: Any) -> None:
        if os.getpid() != _owner_pid:
            _chain(sig, frame, previous, handler)
            return
        if previous in (signal.SIG_DFL, None):
            stop_all(emergency=True)
            _chain(sig, frame, previous, handler)
            return
        try:
            _chain(sig, frame, previous, handler)
        except BaseException:
            # The previous handler ends the run (KeyboardInterrupt, SystemExit):
            # stop the servers now, cleanups that need them will not run.
            stop_all(emergency=True)
            raise
    handler.__name__ = f"harness_{signal.Signals(signum).name.lower()}_handler"
    return handler


def install() -> None:
    """Register the atexit hook, and the signal handlers from the main thread (once)."""
    global _registered
    with _lock:
        if not _registered:
            atexit.register(_at_exit)
            _registered = True
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        if signum in _previous:
            continue  # installed once; a handler put over ours is the runner's business
        current = signal.getsignal(signum)
        if current == signal.SIG_IGN:
            continue  # the runner chose to ignore it: so do we
        try:
            signal.signal(signum, _handler_for(signum, current))
        except (ValueError, OSError):  # not the main interpreter, or not allowed
            continue
        _previous[signum] = current


def _forget_in_child() -> None:
    global _owner_pid, _lock
    _lock = threading.Lock()
    _live.clear()
    _owner_pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
