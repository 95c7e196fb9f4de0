"""The safety net: every live server is stopped when the runner goes away.

- At interpreter exit (atexit), every server still running is stopped.
- On SIGTERM and SIGINT the servers are stopped and the previous handler
  is chained to (a SIGTERM with the default action then still ends the
  runner by SIGTERM).  ``unittest`` skips ``addCleanup`` callbacks on
  Ctrl-C, so this is what keeps an interrupted run from leaking servers.
- SIGKILL cannot be caught: :mod:`harness._server.watchdog` covers it.

Handlers can only be installed from the main thread: they are installed
when ``harness.process`` is imported (normally from the main thread; they do
nothing but chain while no server runs) and again, if replaced, at each
launch from the main thread.  A server started from another thread is
covered either way.
"""
from __future__ import annotations

import atexit
import os
import signal
import threading
from typing import Any, Callable, Dict, List, Optional

from . import watchdog

_lock = threading.Lock()
_live: Dict[int, Any] = {}  # id(server) -> server, strong refs: a dropped server still stops
_owner_pid = os.getpid()
_atexit_done = False
_installed: Dict[int, Any] = {}  # signal number -> previous handler


def add(server: Any) -> None:
    with _lock:
        _live[id(server)] = server
    _install_handlers()


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
    watchdog.shutdown()


atexit.register(_at_exit)


def _handler_for(signum: int, previous: Any) -> Callable[[int, Any], None]:
    def handler(sig: int, frame: Any) -> None:
        if os.getpid() != _owner_pid:
            _chain(sig, frame, previous)
            return
        if previous in (signal.SIG_DFL, None):
            stop_all(emergency=True)
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            return
        try:
            _chain(sig, frame, previous)
        except BaseException:
            # The previous handler ends the run (KeyboardInterrupt, SystemExit):
            # stop the servers now, cleanups that need them will not run.
            stop_all(emergency=True)
            raise
    handler.__name__ = f"harness_{signal.Signals(signum).name.lower()}_handler"
    return handler


def _chain(sig: int, frame: Any, previous: Any) -> None:
    if callable(previous):
        previous(sig, frame)
    elif previous in (signal.SIG_DFL, None):
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)


def _install_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        current = signal.getsignal(signum)
        if getattr(current, "__name__", "").startswith("harness_"):
            continue
        if current == signal.SIG_IGN:
            continue  # the runner chose to ignore it: so do we
        try:
            signal.signal(signum, _handler_for(signum, current))
        except (ValueError, OSError):  # not the main interpreter, or not allowed
            continue
        _installed[signum] = current


def install() -> None:
    """Install the signal handlers now if this is the main thread."""
    _install_handlers()


def _forget_in_child() -> None:
    global _owner_pid, _lock
    _lock = threading.Lock()
    _live.clear()
    _owner_pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def previous_handler(signum: int) -> Optional[Any]:
    return _installed.get(signum)
