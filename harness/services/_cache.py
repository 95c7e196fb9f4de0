"""The per-user cache of prepared directories (an ``initdb`` cluster), and spare copies.

A service's preparation (``Service.prepare``) runs once per key into the
cache, ``$HARNESS_CACHE_DIR`` or ``~/.cache/harness`` (``$XDG_CACHE_HOME``),
made 0700::

    <cache>/<key>.lock        flock: one builder at a time, across processes
    <cache>/<key>/ready/      the prepared directory, never written again
    <cache>/<key>/spares/*    pristine copies of it, made in the background

A build runs in a private temp dir and is renamed into place when it is
complete, so a reader sees a whole directory or none; a pytest-xdist worker
that finds a build under way waits for it (one that finds none prepares its
server's own directory, and the cache is built after its start).  A server takes
a spare copy by renaming it (one winner, microseconds, when the cache and
the temp dir share a file system), else copies ``ready``; spares are made
again in a background thread.  Temporary copies are registered with the
zygote, which removes them if the runner dies mid-copy.
"""
from __future__ import annotations

import atexit
import errno
import fcntl
import logging
import os
import secrets
import shutil
import stat
import threading
import time
from typing import Dict, List, Optional

from .._os.users import describe_user
from .._server import supervisor
from .._wait import Deadline, pause, poll_interval
from ..errors import HarnessError

CACHE_ENV = "HARNESS_CACHE_DIR"
_log = logging.getLogger("harness.services")
_refills: Dict[str, threading.Thread] = {}
_refill_lock = threading.Lock()
_exiting = threading.Event()   # no new copy
_stopping = threading.Event()  # and the copy under way stops
_exit_hook = False
EXIT_WAIT = 3.0
# A copy takes seconds; an unfinished one this old was left by a dead process.
STALE_COPY = 600.0


def cache_root() -> str:
    """The cache directory (created 0700 on first use)."""
    path = os.environ.get(CACHE_ENV, "").strip()
    if not path:
        base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(
            os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "harness")
    path = os.path.abspath(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError as exc:
        raise HarnessError(f"cannot create the cache directory {path}: {exc}; point "
                           f"{CACHE_ENV} at a writable directory") from None
    # What is in it is run (a prepared cluster's configuration): it must be ours alone.
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.geteuid() or mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise HarnessError(f"the cache directory {path} (mode {mode:04o}, owner "
                           f"{describe_user(info.st_uid)}) is not yours alone: another user "
                           f"could plant a prepared directory that services would run; point "
                           f"{CACHE_ENV} at a directory of your own (mode 0700)")
    return path


class Entry:
    """One prepared directory of the cache, by key."""

    def __init__(self, key: str, root: Optional[str] = None) -> None:
        self.root = root or cache_root()
        self.dir = os.path.join(self.root, key)
        self.ready = os.path.join(self.dir, "ready")
        self.spares = os.path.join(self.dir, "spares")
        self.lock_path = os.path.join(self.root, key + ".lock")

    def exists(self) -> bool:
        return os.path.isdir(self.ready)

    # ----------------------------------------------------------------------
    # Locking

    def try_lock(self) -> Optional[int]:
        """The builder's lock, if free now (a descriptor to :meth:`unlock`), else ``None``."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return None
            raise
        return fd

    def lock(self, deadline: Deadline) -> int:
        """Wait for the builder's lock (another process may be building)."""
        while True:
            fd = self.try_lock()
            if fd is not None:
                return fd
            if deadline.expired:
                raise HarnessError(f"waited {deadline.seconds:.0f} s for another process to "
                                   f"build {self.dir}; is one stuck? (its lock: "
                                   f"{self.lock_path})")
            pause(deadline.cap(poll_interval(deadline.elapsed(), cap=0.05)))

    @staticmethod
    def unlock(fd: int) -> None:
        os.close(fd)  # the kernel drops the flock with the last descriptor

    # ----------------------------------------------------------------------
    # Filling

    def install(self, built: str) -> None:
        """Move a complete build into place (the caller holds the lock)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        staging = os.path.join(self.dir, ".build-" + secrets.token_hex(6))
        supervisor.register_dir(staging)
        try:
            try:
                os.rename(built, staging)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.copytree(built, staging, symlinks=True)
            os.rename(staging, self.ready)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            supervisor.register_dir(staging, add=False)

    # ----------------------------------------------------------------------
    # Copies

    def take_copy(self, dest: str) -> bool:
        """Put a pristine copy of ``ready`` at ``dest``; True if a spare was taken
        (a rename), False if it was copied now."""
        if os.path.isdir(self.spares) and _same_device(self.spares, os.path.dirname(dest)):
            for name in sorted(os.listdir(self.spares)):
                if name.startswith("."):
                    continue
                try:
                    os.rename(os.path.join(self.spares, name), dest)
                    return True
                except OSError:
                    continue  # another process took it first
        shutil.copytree(self.ready, dest, symlinks=True)
        return False

    def refill(self, wanted: int, uid: Optional[int] = None, gid: Optional[int] = None) -> None:
        """Make spare copies in a background thread until ``wanted`` are there."""
        global _exit_hook
        if wanted <= 0:
            return
        with _refill_lock:
            if not _exit_hook:
                # After the safety net's handler, so it runs first: a copy is cut
                # short at exit, before the zygote removes its temp dir.
                atexit.register(_stop_refills)
                _exit_hook = True
            running = _refills.get(self.dir)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(target=self._refill, args=(wanted, uid, gid), daemon=True,
                                      name=f"harness-spares-{os.path.basename(self.dir)}")
            if _started(thread):  # (spares are for later runs: none at interpreter exit)
                _refills[self.dir] = thread

    def _spares(self) -> List[str]:
        """The finished spare copies; unfinished ones left by a dead process go."""
        found = []
        for name in os.listdir(self.spares):
            path = os.path.join(self.spares, name)
            if not name.startswith("."):
                found.append(path)
                continue
            if _stale(name):
                shutil.rmtree(path, ignore_errors=True)
        return found

    def _refill(self, wanted: int, uid: Optional[int], gid: Optional[int]) -> None:
        try:
            os.makedirs(self.spares, mode=0o700, exist_ok=True)
            while self.exists() and len(self._spares()) < wanted and not _exiting.is_set():
                token = secrets.token_hex(6)
                temp = os.path.join(self.spares, f".copy-{int(time.time())}-{token}")
                supervisor.register_dir(temp)  # gone with the runner if it dies mid-copy
                try:
                    shutil.copytree(self.ready, temp, symlinks=True, copy_function=_copy)
                    chown_tree(temp, uid, gid)  # the next server's user, most likely
                    os.rename(temp, os.path.join(self.spares, token))
                finally:
                    shutil.rmtree(temp, ignore_errors=True)
                    supervisor.register_dir(temp, add=False)
        except _Stopped:
            pass
        except Exception as exc:  # a spare is an optimisation: say it, go on without
            _log.warning("could not make a spare copy of %s: %s", self.ready, exc)


def _stale(name: str) -> bool:
    """Whether a temp entry (``.copy-<time>-<token>``, ``.<time>-<token>``) was made
    more than STALE_COPY ago: its maker died.  The time is in the name: a copy's
    mtime is its source's (copystat)."""
    try:
        made = int(name.lstrip(".").split("-")[-2])
    except (IndexError, ValueError):
        return False
    return time.time() - made > STALE_COPY


class _Stopped(Exception):
    """The runner is exiting: the copy stops (not an OSError, so copytree lets it out)."""


def _copy(source: str, target: str) -> str:
    if _stopping.is_set():
        raise _Stopped()
    return str(shutil.copy2(source, target))


def _stop_refills() -> None:
    """At exit: let a copy under way finish (the next run starts from it), start no
    other, and cut it short after EXIT_WAIT."""
    _exiting.set()
    with _refill_lock:
        threads = list(_refills.values())
    deadline = Deadline(EXIT_WAIT)
    for thread in threads:
        thread.join(deadline.remaining())
    _stopping.set()
    for thread in threads:
        thread.join(10.0)
    with _refill_lock:
        removals = list(_removals)
    for thread in removals:  # what stopped servers left is gone before we are
        thread.join(60.0)


_removals: List[threading.Thread] = []


def remove_later(path: str) -> None:
    """Remove a stopped server's private directory off the caller's path.

    It is renamed at once to a sibling (the same file system, so the
    rename cannot fail for want of one; its old path is gone when this
    returns) and deleted by a background thread: deleting some thousand
    files took 150-1100 ms on a loaded disk.  The new name is registered
    with the zygote in place of the old one (removed if the runner dies;
    it keeps the ``harness-`` name and owner file ``reap`` knows), and the
    deletion is waited for at exit.
    """
    global _exit_hook
    target = f"{path}.removed-{secrets.token_hex(4)}"
    _register(target)
    try:
        os.rename(path, target)
    except OSError:
        _register(target, add=False)
        shutil.rmtree(path, ignore_errors=True)
        _register(path, add=False)
        return
    _register(path, add=False)

    def remove() -> None:
        shutil.rmtree(target, ignore_errors=True)
        _register(target, add=False)
    thread = threading.Thread(target=remove, daemon=True, name="harness-remove")
    with _refill_lock:
        if not _exit_hook:
            atexit.register(_stop_refills)
            _exit_hook = True
        if not _started(thread):
            remove()  # at interpreter exit: no new thread, so here and now
            return
        _removals[:] = [t for t in _removals if t.is_alive()] + [thread]


def _register(path: str, add: bool = True) -> None:
    """Tell the zygote about a dir to remove if the runner dies (or to forget it)."""
    try:
        supervisor.register_dir(path, add)
    except Exception:  # (at interpreter exit, no zygote may be had: the removal goes on)
        pass


def _started(thread: threading.Thread) -> bool:
    """Start ``thread``; False when the interpreter is exiting (Python 3.12 on refuses new
    threads then, and an atexit handler may be what stops a service)."""
    try:
        thread.start()
    except RuntimeError:
        return False
    return True


def wait_refills(timeout: float) -> None:
    """Wait for the background copies (a benchmark's quiet start; tests)."""
    deadline = Deadline(timeout)
    with _refill_lock:
        threads = list(_refills.values()) + list(_removals)
    for thread in threads:
        thread.join(deadline.remaining())


def _same_device(a: str, b: str) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def chown_tree(path: str, uid: Optional[int], gid: Optional[int]) -> None:
    """Give ``path`` and everything below it to ``uid``:``gid`` (``None``: leave as is)."""
    if uid is None or os.lstat(path).st_uid == uid:
        return  # a tree is handed over whole: its top says for all of it
    group = -1 if gid is None else gid
    os.chown(path, uid, group, follow_symlinks=False)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(top, name), uid, group, follow_symlinks=False)
