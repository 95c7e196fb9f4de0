"""How harness marks what it starts, so orphans can be found and nothing else is touched.

Every server process harness launches gets two environment variables,
inherited by everything it spawns (even a child that escapes the process
group with ``setsid``):

- ``HARNESS_OWNER``: the :class:`~harness._os.identity.ProcessId` of the
  test runner that launched it (pid, start time and PID namespace, as
  text).  A server whose owner no longer names a live process is an orphan.
- ``HARNESS_SERVER_ID``: a random token naming one server launch, so a
  stop can find exactly that server's escaped descendants.

Every private temp directory harness creates is named ``harness-*`` in
:func:`tempfile.gettempdir` and holds a file ``owner`` with the owner token,
so ``python -m harness reap`` can remove those of dead runners.
"""
from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile
from typing import Optional, Tuple

from .._os import procinfo
from .._os.identity import ProcessId, own_pid_namespace
from ..errors import HarnessError

OWNER_ENV = "HARNESS_OWNER"
SERVER_ID_ENV = "HARNESS_SERVER_ID"
TEMP_PREFIX = "harness-"
OWNER_FILE = "owner"


def owner_id() -> ProcessId:
    """The identity of the current process (the test runner), with its PID namespace."""
    me = procinfo.identity(os.getpid())
    # Without /proc or psutil there is no start time: the pid alone still
    # lets reap skip live runners, at the price of trusting pid reuse less.
    start = me.start if me is not None else None
    return ProcessId(os.getpid(), start, own_pid_namespace())


def owner_token() -> str:
    """:func:`owner_id` as the text written into markers."""
    return str(owner_id())


def new_server_id() -> str:
    return secrets.token_hex(8)


def make_private_dir(base: Optional[str] = None) -> str:
    """A new 0700 temp directory with an unpredictable name, tagged with its owner
    (in ``base``, default the temp dir)."""
    base = base or tempfile.gettempdir()
    try:
        path = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=base)  # 0700, random name, O_EXCL
    except OSError as exc:
        raise HarnessError(f"cannot create a private directory in {base}: {exc}; free space "
                           f"there or point TMPDIR at a writable directory") from None
    try:
        fd = os.open(os.path.join(path, OWNER_FILE),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(owner_token() + "\n")
    except OSError as exc:
        shutil.rmtree(path, ignore_errors=True)
        raise HarnessError(f"cannot write in the private directory {path}: {exc}; free space "
                           f"in {base} or point TMPDIR at a writable directory") from None
    return path


def base_for(uid: Optional[int], gid: Optional[int]) -> str:
    """Where to make a private dir that user ``uid`` (``user=``) must enter.

    The temp dir, unless the user cannot reach it (a runner's private
    ``TMPDIR``, a home directory of mode 0700): then the first of ``/tmp``,
    ``/var/tmp`` and ``/dev/shm`` it can reach.  The dir made there is 0700
    and the user's, so nobody else gets in either way.
    """
    base = tempfile.gettempdir()
    if uid is None or _reachable(base, uid, gid):
        return base
    for other in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(other) and _reachable(other, uid, gid):
            return other
    raise HarnessError(f"user {uid} cannot reach the temp dir {base} (a directory on the way "
                       f"is closed to it) nor /tmp: point TMPDIR at a directory other users "
                       f"can pass through")


def _reachable(path: str, uid: int, gid: Optional[int]) -> bool:
    """Whether ``uid`` may pass through every directory from ``/`` down to ``path``."""
    path = os.path.abspath(path)
    while True:
        try:
            info = os.stat(path)
        except OSError:
            return False
        if info.st_uid == uid:
            allowed = info.st_mode & 0o100
        elif gid is not None and info.st_gid == gid:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return False
        if path == os.path.dirname(path):
            return True
        path = os.path.dirname(path)


def give_to(path: str, uid: Optional[int], gid: Optional[int]) -> None:
    """Hand a private dir and what is in it (not below) to the server's ``user=``.

    It stays 0700: the server's user alone (and root) can enter it.  The
    log is not handed over: the server writes it through the descriptor
    it inherits.
    """
    if uid is None:
        return
    os.chown(path, uid, -1 if gid is None else gid, follow_symlinks=False)
    for entry in os.scandir(path):
        if entry.name != OWNER_FILE and not entry.name.endswith(".log"):
            os.chown(entry.path, uid, -1 if gid is None else gid, follow_symlinks=False)


# Never through a symlink, never blocking on a planted FIFO.
_SAFE_READ = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
              | getattr(os, "O_CLOEXEC", 0))


def read_owner(path: str) -> Optional[ProcessId]:
    """The owner recorded in a harness temp dir, or ``None``."""
    return owner_of(path)[0]


def owner_of(path: str) -> Tuple[Optional[ProcessId], str]:
    """The owner recorded in a harness temp dir, or ``None`` and why there is none."""
    try:
        fd = os.open(os.path.join(path, OWNER_FILE), _SAFE_READ)
    except FileNotFoundError:
        return None, "it has no owner file"
    except OSError as exc:
        return None, f"its owner file cannot be read ({exc.strerror})"
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, "its owner file is not a regular file"
        text = f.read(200).decode(errors="replace").strip()
    if not text:
        return None, "its owner file is empty"
    owner = ProcessId.parse(text)
    return (owner, "") if owner is not None else (None, "its owner file names no process")


def write_private(path: str, data: bytes) -> str:
    """Create ``path`` (0600, never through a symlink, never an existing file) holding ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path
