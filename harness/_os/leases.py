"""Port leases: the one implementation of the protocol, for ``ports`` and ``reap``.

A lease is a lock with exactly a port's scope that the kernel drops when
its holder dies.  On Linux it is a Unix socket bound in the *abstract*
namespace under ``harness-port-<port>``: abstract names belong to a
network namespace (the scope of a TCP port), need no file, and vanish the
moment their last holder exits, even by SIGKILL.  Elsewhere (or with
``lease_dir``/``HARNESS_LEASE_DIR``) it is an ``fcntl.flock`` on a lock
file in a machine-wide lease directory that every user shares, so nothing
in it is trusted: see "File leases among other users" below.

This module takes, finds and removes leases; ``ports`` decides which port
to lease (probing, ranges, the allocator) and keeps this process's leases.
"""
from __future__ import annotations

import enum
import errno
import os
import re
import socket
import stat
import sys
import tempfile
from typing import List, Optional, Set, Tuple, Union

from .. import _config
from ..errors import HarnessError
from . import proc, procinfo
from .users import describe_user

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

HAVE_FLOCK = fcntl is not None
LEASE_NAME_PREFIX = "harness-port-"
_USE_ABSTRACT = sys.platform.startswith("linux")
_PERMISSION_ERRNOS = (errno.EACCES, errno.EPERM)


def default_lease_dir() -> str:
    """The lease directory used by file leases (``HARNESS_LEASE_DIR`` overrides).

    One directory for the whole machine, because ports are shared by every
    user; sticky like /tmp so nobody can remove another user's lock files.
    """
    configured = os.environ.get(_config.LEASE_DIR_VAR, "").strip()
    return configured or os.path.join(tempfile.gettempdir(), "harness-leases")


def lease_dir_in_use(lease_dir: Optional[str] = None) -> Optional[str]:
    """The directory of file leases, or ``None`` where abstract sockets are the leases."""
    if lease_dir is None and (not _USE_ABSTRACT or os.environ.get(_config.LEASE_DIR_VAR)):
        return default_lease_dir()
    return lease_dir


def _kind(mode: int) -> str:
    """What a directory entry is, in words for an error message."""
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "regular file" if stat.S_ISREG(mode) else "special file"


# File leases among other users
# -----------------------------
# The lease directory is shared by every user of the machine, so it must be
# a directory no one but root and its owner can replace, and one in which
# nobody can delete someone else's lock file (a held lock file deleted and
# created anew could be locked by a second process: two holders of one
# port).  So: not a symlink, owned by root or by us, and sticky if anyone
# else can write to it.  Lock files are created 0644 whatever the creator's
# umask (every user must be able to open them to flock them), and opened
# without following links and without blocking (a FIFO planted there would
# block an open for reading forever); whatever is not a regular file, or
# cannot be opened, is not a lease anyone can verify, so its port is never
# handed out.
#
# The release protocol: a holder unlinks its lock file *while still holding
# the lock*, then closes it; a taker that locked a file checks that the path
# still names the inode it locked (else a releaser unlinked it in between,
# and a third process may lock the new file at that path).  A holder cannot
# unlink another user's file in a sticky directory: it just closes it.  The
# file stays, unlocked, and is the port's lock file for everybody, exactly
# as one left by a killed holder.

_LOCK_FILE_MODE = 0o644
# How to open any file in a directory others can write to: read-only, never
# following a link, never blocking (on a planted FIFO), not inherited.
SAFE_READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                   | getattr(os, "O_CLOEXEC", 0))
# The lock file names lock_path writes ("port-8080.lock"), and no others.
_LOCK_FILE_NAME = re.compile(r"port-([1-9][0-9]{0,4})\.lock")
# How often a taker looks again when lock files are released and made anew
# under its hands (each look is a few system calls; this bounds churn only).
_LEASE_RACE_LOOKS = 5


def lock_path(directory: str, port: int) -> str:
    """The lock file of ``port`` in ``directory`` (the one place its name is written)."""
    return os.path.join(directory, f"port-{port}.lock")


def lock_file_port(name: str) -> Optional[int]:
    """The port whose lock file is called ``name`` (a base name), or ``None``: no lock file's."""
    match = _LOCK_FILE_NAME.fullmatch(name)
    port = int(match.group(1)) if match else 0
    return port if 1 <= port <= 65535 else None


def lock_files(directory: str) -> List[str]:
    """The lock files in ``directory``, sorted (none if it is not a directory one can list)."""
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return []
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, name) for name in names if lock_file_port(name) is not None]


def _lease_dir_problem(path: str, info: os.stat_result) -> Optional[str]:
    """Why ``path`` (``lstat`` gave ``info``) is not a safe lease directory, or ``None``."""
    mode = stat.S_IMODE(info.st_mode)
    facts = f"mode {mode:04o}, owner {describe_user(info.st_uid)}"
    fix = f"set {_config.LEASE_DIR_VAR} to a directory root or you created"
    if stat.S_ISLNK(info.st_mode):
        try:
            target = f" to {os.readlink(path)}"
        except OSError:
            target = ""
        return (f"lease directory {path} is not a directory but a symlink{target} ({facts}): "
                f"a planted link decides where lock files go; remove it, or {fix}")
    if not stat.S_ISDIR(info.st_mode):
        return (f"lease directory {path} is not a directory but a {_kind(info.st_mode)} "
                f"({facts}); remove it, or {fix}")
    if info.st_uid not in (0, os.geteuid()):
        return (f"lease directory {path} ({facts}) belongs to neither root nor you: its owner "
                f"could delete or replace lock files at will, so it is not trusted; {fix}")
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        return (f"lease directory {path} ({facts}) can be written by other users but is not "
                f"sticky: anyone could delete a held lock file and lease the same port again. "
                f"Make it sticky (chmod +t {path}), or {fix}")
    if not os.access(path, os.W_OK | os.X_OK):
        return (f"cannot create lock files in lease directory {path} ({facts}): you "
                f"({describe_user(os.geteuid())}) cannot write to it. Every user of harness on "
                f"this machine shares it: make it writable by all and sticky (chmod 1777 "
                f"{path}), or {fix}")
    return None


def ensure_lease_dir(path: str) -> str:
    """Create ``path`` (mode 1777) or accept it only if it is safe to use (see above)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise HarnessError(
            f"cannot create lease directory {path}: {exc.strerror}; set "
            f"{_config.LEASE_DIR_VAR} to a directory every user of harness can write to "
            f"(mode 1777, like /tmp)") from None
    else:
        os.chmod(path, 0o1777)  # after mkdir: the umask does not apply to chmod
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise HarnessError(f"lease directory {path} cannot be examined: {exc.strerror}") from None
    problem = _lease_dir_problem(path, info)
    if problem is not None:
        raise HarnessError(problem)
    return path

class Lease:
    """The kernel object that is the lease: an abstract socket or a locked file."""

    def __init__(self, sock: Optional[socket.socket] = None, fd: Optional[int] = None,
                 path: Optional[str] = None) -> None:
        self.sock, self.fd, self.path = sock, fd, path

    def close(self, unlink: bool = True) -> None:
        """Release the lease; ``unlink=False`` keeps the lock file (a forked child's copy)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.fd is not None:
            if unlink and self.path:
                # Another user's file in a sticky directory cannot be unlinked
                # (EPERM): it stays, as after a killed holder.  The path still
                # names our file: take checked it, and no one can unlink a
                # lock file another process holds (see the protocol above).
                _unlink_locked(self.path)
            os.close(self.fd)
            self.fd = None


class NoLease:
    """Why a port's lease was not taken: ``held`` by someone, or unverifiable (``why``)."""

    def __init__(self, held: bool, why: str = "") -> None:
        self.held, self.why = held, why


HELD = NoLease(held=True)


def abstract_lease(port: int) -> Union[Lease, NoLease]:
    """``port``'s lease as an abstract Unix socket (Linux), or ``HELD`` if someone has it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(f"\0{LEASE_NAME_PREFIX}{port}")
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return HELD
        raise HarnessError(f"cannot take the lease on port {port} (abstract Unix socket "
                           f"@{LEASE_NAME_PREFIX}{port}): {exc}") from None
    return Lease(sock=sock)


def _planted(path: str, info: os.stat_result) -> str:
    """What a non-regular entry at a lock file's path is, and what to do about it."""
    target = ""
    if stat.S_ISLNK(info.st_mode):
        try:
            target = f" to {os.readlink(path)}"
        except OSError:
            pass
    return (f"a {_kind(info.st_mode)}{target} planted by {describe_user(info.st_uid)}, not a "
            f"lock file harness made; remove it")


def _unusable_lock_file(path: str, exc: OSError) -> str:
    """Why the existing entry at ``path`` cannot be opened as a lock file."""
    try:
        info: Optional[os.stat_result] = os.lstat(path)
    except OSError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        return _planted(path, info)
    if exc.errno in _PERMISSION_ERRNOS and info is not None:
        return (f"not readable by you (mode {stat.S_IMODE(info.st_mode):04o}, owner "
                f"{describe_user(info.st_uid)}): made under a restrictive umask by an older "
                f"harness, or planted; its owner or root can remove it")
    return f"unusable: it cannot be opened ({exc.strerror})"


def lock_file_problem(path: str) -> Optional[str]:
    """Why the entry at ``path`` cannot serve as a lock file (``None``: it can, or is gone).

    Read as "lock file PATH is ...": "a FIFO planted by bob (uid 1001), not a
    lock file harness made; remove it".  Never blocks, never follows a link.
    """
    try:
        fd = os.open(path, SAFE_READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _unusable_lock_file(path, exc)
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    return None if stat.S_ISREG(info.st_mode) else _planted(path, info)


def _open_lock_file(path: str) -> Union[int, NoLease, None]:
    """An fd of the regular file at ``path`` (made now if need be), a reason it is
    unusable, or ``None`` if it vanished meanwhile (a release: look again)."""
    try:
        fd = os.open(path, SAFE_READ_FLAGS | os.O_CREAT | os.O_EXCL, _LOCK_FILE_MODE)
    except FileExistsError:
        pass
    except OSError as exc:  # not about this file: the directory (full, read-only, ...)
        raise HarnessError(f"cannot create lock file {path}: {exc.strerror}; check the lease "
                           f"directory, or set {_config.LEASE_DIR_VAR} to another") from None
    else:
        try:
            os.fchmod(fd, _LOCK_FILE_MODE)  # the creator's umask applied to the create only
        except OSError:
            pass  # still ours and locked by us; others then skip the port, which is right
        return fd
    # It exists: open it without O_CREAT, so that fs.protected_regular and
    # protected_fifos never refuse another user's file in a sticky directory.
    try:
        fd = os.open(path, SAFE_READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return NoLease(held=False, why=f"lock file {path} is {_unusable_lock_file(path, exc)}")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return NoLease(held=False, why=f"lock file {path} is {_planted(path, info)}")
    return fd


def _still_at(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        now, mine = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def file_lease(port: int, directory: str) -> Union[Lease, NoLease]:
    """``port``'s lease as a locked lock file in ``directory``, or why not (``NoLease``)."""
    if fcntl is None:
        raise HarnessError("file leases need fcntl.flock, which this platform lacks")
    path = lock_path(directory, port)
    for _ in range(_LEASE_RACE_LOOKS):
        opened = _open_lock_file(path)
        if opened is None:
            continue
        if isinstance(opened, NoLease):
            return opened
        fd = opened
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return HELD
            return NoLease(held=False, why=f"lock file {path} cannot be locked: {exc.strerror}")
        # A releaser unlinks the file while it holds the lock.  If that happened
        # between our open() and flock(), we locked an orphaned inode that a third
        # process can no longer see: only a lock on the file still at `path` counts.
        if _still_at(path, fd):
            return Lease(fd=fd, path=path)
        os.close(fd)
    return HELD  # released and made anew under our hands each time: busy, skip it


def take(port: int, directory: Optional[str]) -> Union[Lease, NoLease]:
    """The lease on ``port``, or why not (another holder has it, or it cannot be verified)."""
    if directory is None:
        return abstract_lease(port)
    return file_lease(port, directory)


class Removal(enum.Enum):
    """What became of a lock file :func:`remove_if_stale` was asked to remove."""

    REMOVED = "removed"
    GONE = "gone"      # nothing at the path could be opened any more
    HELD = "held"      # locked by a live holder, or the path names a file made anew
    FAILED = "failed"  # it could not be removed, or is no lock file: the detail says why


def _unlink_locked(path: str) -> Optional[OSError]:
    """Unlink the lock file at ``path`` while the caller still holds its lock (the error, if any).

    The last step of the release protocol, for a release and for reap: once
    the lock is given up, another process may lock the file and count on it.
    """
    try:
        os.unlink(path)
    except OSError as exc:
        return exc
    return None


def remove_if_stale(path: str) -> Tuple[Removal, str]:
    """Remove the lock file at ``path`` if no one holds it, by the protocol's own steps:
    lock it and check the path still names the file locked (as :func:`file_lease`
    does), then unlink it while holding the lock (as a release does)."""
    if fcntl is None:
        return Removal.FAILED, "file leases need fcntl.flock, which this platform lacks"
    try:
        fd = os.open(path, SAFE_READ_FLAGS)
    except FileNotFoundError:
        return Removal.GONE, ""
    except OSError as exc:  # not ours to open, or a symlink planted since it was found
        return Removal.FAILED, _unusable_lock_file(path, exc)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return Removal.FAILED, _planted(path, info)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return Removal.HELD, ""
            return Removal.FAILED, str(exc)
        if not _still_at(path, fd):  # released and made anew since our open()
            return Removal.HELD, ""
        error = _unlink_locked(path)
        return (Removal.REMOVED, "") if error is None else (Removal.FAILED, str(error))
    finally:
        os.close(fd)


def is_stale(path: str) -> bool:
    """Whether ``path`` is a lock file of this user that no live process holds.

    Only this user's: another user's cannot be unlinked in a sticky directory.
    """
    if fcntl is None:
        return False
    try:
        fd = os.open(path, SAFE_READ_FLAGS)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held by a live process
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _abstract_lease_inodes(port: int) -> Optional[Set[int]]:
    """Socket inodes of harness's abstract lease on ``port`` (``None``: cannot be known)."""
    text = proc.read_text("/proc/net/unix")
    if text is None:
        return None
    name = f"@{LEASE_NAME_PREFIX}{port}"  # how /proc/net/unix shows an abstract name
    inodes = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == name:
            inodes.add(int(fields[6]))
    return inodes


def _flock_holders(path: str) -> List[int]:
    """Pids holding an flock on the file at ``path`` (Linux's /proc/locks), best effort."""
    text = proc.read_text("/proc/locks")
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return []
    if not text:
        return []
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    pids = []
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; "1: -> FLOCK ..." waits
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            try:
                pids.append(int(fields[4]))
            except ValueError:
                continue
    return pids


def holders(port: int, lease_dir: Optional[str] = None) -> List[int]:
    """Pids holding harness's lease on ``port`` (Linux, best effort).

    Abstract-socket leases are matched to the processes whose sockets this
    user can see (not other users'); file leases (``lease_dir``, or the one
    ``HARNESS_LEASE_DIR`` selects) through /proc/locks, which names every holder.
    """
    directory = lease_dir_in_use(lease_dir)
    if directory is not None:
        return _flock_holders(lock_path(directory, port))
    inodes = _abstract_lease_inodes(port)
    if not inodes:
        return []
    return [pid for pid in procinfo.all_pids()
            if inodes.intersection(procinfo.socket_inodes(pid))]


def held(port: int, lease_dir: Optional[str] = None) -> Optional[bool]:
    """Whether anyone holds harness's lease on ``port``, seen or not (``None``: unknown).

    Unlike :func:`holders` this sees other users' leases too: the
    abstract name is listed for everybody, and a file lease is tried.
    """
    directory = lease_dir_in_use(lease_dir)
    if directory is None:
        inodes = _abstract_lease_inodes(port)
        return None if inodes is None else bool(inodes)
    path = lock_path(directory, port)
    if proc.read_text("/proc/locks") is not None:  # Linux: look without touching the lock
        return bool(_flock_holders(path))
    if fcntl is None:
        return None
    # Elsewhere: try a shared lock.  (An exclusive one taken at this very
    # moment by a process leasing the port fails; it then skips the port.)
    try:
        fd = os.open(path, SAFE_READ_FLAGS)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
