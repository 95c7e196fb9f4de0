"""A watchdog that ends this runner's servers if the runner is killed outright.

atexit and signal handlers cannot run on SIGKILL (or an OOM kill, or a
segfault).  So on its first launch harness starts one small watchdog process
per runner, holding the read end of a pipe whose write end only the runner
has.  The kernel closes that pipe when the runner dies, however it dies;
the watchdog then reads EOF and ends every process carrying the runner's
``HARNESS_OWNER`` marker (found through /proc on Linux, so children that
escaped with setsid are found too) and the process groups the runner
registered through the pipe (the only way elsewhere), then removes the
temp dirs the runner registered and had not removed (kept failure logs
are unregistered, so they stay).

Why not ``PR_SET_PDEATHSIG``: it needs code between fork and exec
(``preexec_fn`` is unsafe with threads), it fires when the parent *thread*
exits (a server started from a worker thread would die with that thread),
and it does not reach descendants that escaped.  The pipe belongs to the
process, not a thread, so servers started from any thread are covered.
On a normal exit the runner stops its servers first and then closes the
pipe; the watchdog finds nothing left and exits.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Optional

from . import marker

# Runs with ``python -I -S``: no site, no harness import, no psutil; starts fast.
_CODE = r"""
import os, signal, sys, time
owner = sys.argv[1]
needle = ("HARNESS_OWNER=" + owner).encode()
groups = set()
dirs = set()
buf = b""
while True:
    try:
        data = os.read(0, 65536)
    except OSError:
        break
    if not data:
        break
    buf += data
    lines = buf.split(b"\n")
    buf = lines.pop()
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
        elif line[:1] == b"d":
            dirs.add(line[1:])
        elif line[:1] == b"r":
            dirs.discard(line[1:])

def marked():
    found = []
    if not os.path.isdir("/proc/self"):
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                env = f.read()
        except OSError:
            continue
        if (b"\0" + env + b"\0").find(b"\0" + needle + b"\0") >= 0:
            found.append(int(entry))
    return found

def send(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass

def send_groups(sig):
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass

have_proc = os.path.isdir("/proc/self")
victims = marked()
if victims or groups:
    # One SIGTERM per process: by marker where /proc shows it, else by group.
    if have_proc:
        send(victims, signal.SIGCONT); send(victims, signal.SIGTERM)
    else:
        send_groups(signal.SIGCONT); send_groups(signal.SIGTERM)
    end = time.monotonic() + 1.0
    delay = 0.002
    while time.monotonic() < end and (marked() if victims else False):
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    for _ in range(3):
        send_groups(signal.SIGKILL)
        left = marked()
        if not left:
            break
        send(left, signal.SIGKILL)
if dirs:
    import shutil
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
"""

_lock = threading.Lock()
_owner_pid: Optional[int] = None
_proc: Optional[subprocess.Popen] = None
_wfd: Optional[int] = None


def ensure() -> None:
    """Start the watchdog for this process if it is not running yet."""
    global _owner_pid, _proc, _wfd
    with _lock:
        if _owner_pid == os.getpid() and _wfd is not None:
            return
        rfd, wfd = os.pipe()  # both non-inheritable (PEP 446)
        env = {k: v for k, v in os.environ.items()
               if k not in (marker.OWNER_ENV, marker.SERVER_ID_ENV)}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _CODE, marker.owner_token()],
                stdin=rfd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env, close_fds=True, start_new_session=True, cwd="/")
        except OSError:
            os.close(wfd)
            raise
        finally:
            os.close(rfd)
        _owner_pid, _proc, _wfd = os.getpid(), proc, wfd


def _send(line: bytes) -> None:
    global _wfd
    with _lock:
        if _wfd is None or _owner_pid != os.getpid():
            return
        try:
            os.write(_wfd, line)
        except OSError:  # the watchdog is gone; the next launch starts a new one
            os.close(_wfd)
            _wfd = None


def register(pgid: int) -> None:
    _send(b"+%d\n" % pgid)


def unregister(pgid: int) -> None:
    _send(b"-%d\n" % pgid)


def register_dir(path: str) -> None:
    """A temp dir the watchdog removes if the runner dies before it does."""
    if "\n" not in path:
        _send(b"d" + os.fsencode(path) + b"\n")


def unregister_dir(path: str) -> None:
    if "\n" not in path:
        _send(b"r" + os.fsencode(path) + b"\n")


def shutdown(timeout: float = 2.0) -> None:
    """Close the pipe (the runner is exiting cleanly) and reap the watchdog."""
    global _wfd, _proc, _owner_pid
    with _lock:
        wfd, proc, owner = _wfd, _proc, _owner_pid
        _wfd, _proc, _owner_pid = None, None, None
    if owner != os.getpid():
        return
    if wfd is not None:
        os.close(wfd)
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def watchdog_pid() -> Optional[int]:
    """The watchdog's pid (for tests and diagnostics)."""
    return _proc.pid if _proc is not None and _owner_pid == os.getpid() else None


def _forget_in_child() -> None:
    """After fork: the child is not the runner the watchdog guards."""
    global _wfd, _proc, _owner_pid, _lock
    _lock = threading.Lock()  # another thread may have held it at fork time
    if _wfd is not None:
        try:
            os.close(_wfd)
        except OSError:
            pass
    _wfd, _proc, _owner_pid = None, None, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
