"""Ports no one else can take: probing, cross-process leases, handed-off sockets.

A port that is merely *free now* is a race: between the probe and the
server's ``bind()`` anyone can take it.  harness closes that window two ways:

* a **lease**: a lock with exactly the port's scope that the kernel drops
  when its holder dies, so every process using harness on this host (other
  test workers, other users, pytest-xdist) skips the port while we hold it;
* a **handed-off socket** (:func:`listening_socket`): harness binds and
  listens itself and passes the socket to the server, so there is no window.

Leases on Linux are Unix sockets bound in the *abstract* namespace under
``harness-port-<port>``.  Abstract names belong to a network namespace —
exactly the scope of a TCP port — need no file, and vanish the moment their
last holder exits, even by SIGKILL, so a stale lease cannot exist.
Elsewhere (or with ``lease_dir``/``HARNESS_LEASE_DIR``) a lease is an
``fcntl.flock`` on a file in a machine-wide lease directory; flock is also
released by the kernel when the holder dies.
"""
from __future__ import annotations

import atexit
import errno
import os
import random
import socket
import stat
import sys
import tempfile
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from . import _config
from ._os import procinfo
from ._validate import PortRange, check_port, check_port_range
from .errors import HarnessError, PortUnavailable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "is_port_free", "find_free_port", "release_port", "PortAllocator", "PortLease",
    "listening_socket", "default_port_range", "ephemeral_port_range", "default_lease_dir",
    "held_ports", "lease_holders",
]

EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
RESERVED_PORTS_FILE = "/proc/sys/net/ipv4/ip_local_reserved_ports"
# Linux's default ephemeral range starts at 32768; macOS, the BSDs and Windows
# use 49152-65535.  Staying below 32768 is safe everywhere.
FALLBACK_EPHEMERAL_RANGE = (32768, 65535)
# Below 10000 live most ports developers run services on by hand
# (3000, 5432, 6379, 8000, 8080, 9000, ...): stay out of their way.
DEFAULT_FLOOR = 10000
LEASE_NAME_PREFIX = "harness-port-"
PORTSERVER_VAR = "PORTSERVER_ADDRESS"
_PROBE_TIMEOUT = 0.5
_USE_ABSTRACT = sys.platform.startswith("linux")
# On Linux SO_REUSEADDR lets a bind() past connections in TIME_WAIT and
# nothing else: a port with a listening or merely bound socket still gives
# EADDRINUSE.  BSD and macOS also let a specific address share a port bound
# on the wildcard, so there harness never sets it for ports it chooses.
_REUSE_ONLY_SKIPS_TIME_WAIT = sys.platform.startswith("linux")


# --------------------------------------------------------------------------
# Addresses


def _resolve(host: str) -> Tuple[int, tuple]:
    """(family, sockaddr-without-port) for ``host``; ValueError if it does not resolve."""
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be a non-empty str, got {host!r}")
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"host {host!r} does not resolve: {exc}") from None
    # Prefer IPv4 when a name resolves to both: "localhost" is ::1 first on
    # some systems, but servers commonly listen on 127.0.0.1 only.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _sockaddr(sockaddr: tuple, port: int) -> tuple:
    return (sockaddr[0], port) + tuple(sockaddr[2:])


# --------------------------------------------------------------------------
# Probing


def is_port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True only if a TCP connect to (host, port) is refused *and* a bind succeeds.

    Both are needed: a listening port refuses the bind but a socket that is
    bound and not (yet) listening refuses connections too, so only the bind
    catches it; and a listener on another address of the same port (the
    wildcard, say) is seen by the connect.  The bind is made without
    ``SO_REUSEADDR``, so a port with connections still in TIME_WAIT counts
    as taken — a server that does not set the option would fail to bind it.
    """
    check_port(port)
    family, sockaddr = _resolve(host)
    return _probe(family, _sockaddr(sockaddr, port))


def _probe(family: int, address: tuple, allow_time_wait: bool = False) -> bool:
    """The connect-then-bind test of :func:`is_port_free`.

    ``allow_time_wait`` binds with ``SO_REUSEADDR``, which on Linux succeeds
    past connections in TIME_WAIT but still fails on any listening or bound
    socket: right for a port the user chose, which their server (like
    nearly every server) binds with ``SO_REUSEADDR``, and would otherwise
    stay "taken" for a minute after each stop.
    """
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(_PROBE_TIMEOUT)
        try:
            probe.connect(address)
        except ConnectionRefusedError:
            pass
        except OSError:
            # Timed out or unreachable: something is odd about this port;
            # a test server must not be put there.
            return False
        else:
            return False
    with socket.socket(family, socket.SOCK_STREAM) as binder:
        if allow_time_wait and os.name == "posix":
            # (On Windows SO_REUSEADDR would let us steal a live port.)
            binder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            binder.bind(address)
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------
# Ranges


def _read_proc(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def ephemeral_port_range() -> Tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (inclusive)."""
    text = _read_proc(EPHEMERAL_RANGE_FILE)
    if text:
        try:
            low, high = (int(part) for part in text.split())
            return low, high
        except ValueError:
            pass
    return FALLBACK_EPHEMERAL_RANGE


def reserved_ports() -> List[int]:
    """Ports the admin reserved from ephemeral use (``ip_local_reserved_ports``)."""
    text = (_read_proc(RESERVED_PORTS_FILE) or "").strip()
    ports: List[int] = []
    for item in filter(None, text.split(",")):
        low, _, high = item.strip().partition("-")
        try:
            ports.extend(range(int(low), int(high or low) + 1))
        except ValueError:
            continue
    return [p for p in ports if 1024 <= p <= 65535]


def default_port_range() -> Tuple[int, int]:
    """The range harness picks from when none is given.

    Above the well-known ports and the usual hand-run services, below the
    kernel's ephemeral range, because a port inside that range can be taken
    at any moment by any outgoing connection on the machine.
    """
    ephemeral_low = ephemeral_port_range()[0]
    if ephemeral_low - DEFAULT_FLOOR >= 1000:
        return DEFAULT_FLOOR, ephemeral_low - 1
    if ephemeral_low - 1024 >= 1000:
        return 1024, ephemeral_low - 1
    return 1024, 65535  # the ephemeral range covers everything: nothing better exists


def _candidate_tiers(port_range: PortRange, explicit: bool) -> List[List[int]]:
    """Candidate ports, best tier first: reserved, below ephemeral, the rest."""
    low, high = port_range
    eph_low, eph_high = ephemeral_port_range()
    reserved = set(reserved_ports())
    if explicit:
        reserved &= set(range(low, high + 1))
    everything = range(low, high + 1)
    outside = [p for p in everything if p not in reserved and not eph_low <= p <= eph_high]
    inside = [p for p in everything if p not in reserved and eph_low <= p <= eph_high]
    return [sorted(reserved), outside, inside]


# --------------------------------------------------------------------------
# Leases


def default_lease_dir() -> str:
    """The lease directory used by file leases (``HARNESS_LEASE_DIR`` overrides).

    One directory for the whole machine, because ports are shared by every
    user; sticky like /tmp so nobody can remove another user's lock files.
    """
    configured = os.environ.get(_config.LEASE_DIR_VAR, "").strip()
    return configured or os.path.join(tempfile.gettempdir(), "harness-leases")


def _ensure_lease_dir(path: str) -> str:
    """Create ``path`` (mode 1777) or accept it only if it is safe to use.

    Never follows a symlink, and refuses a directory planted by another
    (non-root) user, who could otherwise delete our lock files at will.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(path, 0o1777)  # after mkdir: the umask does not apply to chmod
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise HarnessError(
            f"lease directory {path} is not a directory (a symlink or file planted "
            f"there?); remove it or set {_config.LEASE_DIR_VAR} to a safe directory")
    if info.st_uid not in (0, os.getuid()):
        raise HarnessError(
            f"lease directory {path} belongs to uid {info.st_uid}, not to root or to "
            f"you; refusing to trust it. Set {_config.LEASE_DIR_VAR} to a directory "
            f"you or root created")
    return path


class PortLease:
    """A port reserved for this process until :meth:`release` (or its death).

    Use as a context manager to release on exit.  Releasing twice is fine.
    """

    def __init__(self, port: int, host: str, handle: "_LeaseHandle") -> None:
        self.port = port
        self.host = host
        self._handle: Optional[_LeaseHandle] = handle

    @property
    def released(self) -> bool:
        return self._handle is None

    def release(self) -> None:
        """Give the port back; other processes may lease it from now on."""
        with _registry_lock:
            handle, self._handle = self._handle, None
            if _registry.get(self.port) is self:
                del _registry[self.port]
        if handle is not None:
            handle.close()

    def __enter__(self) -> "PortLease":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return f"<PortLease {self.host}:{self.port} {state}>"


class _LeaseHandle:
    """The kernel object that is the lease: an abstract socket or a locked file."""

    def __init__(self, sock: Optional[socket.socket] = None, fd: Optional[int] = None,
                 path: Optional[str] = None) -> None:
        self.sock, self.fd, self.path = sock, fd, path

    def close(self, unlink: bool = True) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.fd is not None:
            if unlink and self.path:
                # Unlink while still holding the lock: see _file_lease.
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            os.close(self.fd)
            self.fd = None


def _abstract_lease(port: int) -> Optional[_LeaseHandle]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(f"\0{LEASE_NAME_PREFIX}{port}")
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise
    return _LeaseHandle(sock=sock)


def _file_lease(port: int, directory: str) -> Optional[_LeaseHandle]:
    if fcntl is None:
        raise HarnessError("file leases need fcntl.flock, which this platform lacks")
    path = os.path.join(directory, f"port-{port}.lock")
    flags = os.O_RDONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    # A releaser unlinks the file while it holds the lock.  If that happened
    # between our open() and flock(), we locked an orphaned inode that a third
    # process can no longer see: only a lock on the file still at `path` counts.
    try:
        same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except OSError:
        same = False
    if not same:
        os.close(fd)
        return None
    return _LeaseHandle(fd=fd, path=path)


def _take_lease(port: int, directory: Optional[str]) -> Optional[_LeaseHandle]:
    """The lease on ``port``, or ``None`` if another holder has it."""
    if directory is None:
        return _abstract_lease(port)
    return _file_lease(port, directory)


def lease_holders(port: int) -> List[int]:
    """Pids holding harness's abstract-socket lease on ``port`` (Linux, best effort)."""
    text = _read_proc("/proc/net/unix") or ""
    name = f"@{LEASE_NAME_PREFIX}{port}"
    inodes = {int(line.split()[6]) for line in text.splitlines()[1:]
              if len(line.split()) >= 8 and line.split()[7] == name}
    if not inodes:
        return []
    return [pid for pid in procinfo.all_pids()
            if inodes.intersection(procinfo._socket_inodes(pid))]


# Every lease this process holds, by port: keeps the kernel objects alive
# (a dropped PortLease must not silently free its port) and lets
# release_port() find them.
_registry: Dict[int, PortLease] = {}
_registry_lock = threading.Lock()


def _register(lease: PortLease) -> PortLease:
    with _registry_lock:
        _registry[lease.port] = lease
    return lease


def _forget_inherited_leases() -> None:
    # A forked child (multiprocessing) inherits our lease fds; holding them
    # would keep our ports leased for as long as it lives.  They are ours,
    # not its: close its copies without unlinking lock files.
    for lease in list(_registry.values()):
        if lease._handle is not None:
            lease._handle.close(unlink=False)
            lease._handle = None
    _registry.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_leases)


@atexit.register
def _release_all() -> None:
    # The kernel would drop the locks anyway; releasing here also removes
    # lock files, so a normal exit leaves the lease directory as it was.
    for lease in list(_registry.values()):
        lease.release()


# --------------------------------------------------------------------------
# portpicker's port server


def _ask_portserver(address: str) -> Optional[int]:
    """A port from portpicker's port server at ``address``, or ``None``.

    Protocol: send our pid and a newline; the answer is a port number, or
    nothing when the server has none.  A leading '@' means the abstract
    namespace.
    """
    if not hasattr(socket, "AF_UNIX"):
        return None
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(_config.scaled(1.0))
            conn.connect(address)
            conn.sendall(f"{os.getpid()}\n".encode())
            answer = b""
            while True:
                chunk = conn.recv(64)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return None
    try:
        port = int(answer.split(b"\n")[0])
    except ValueError:
        return None
    return port if 1 <= port <= 65535 else None


# --------------------------------------------------------------------------
# The allocator


class PortAllocator:
    """Leases free ports from a range, coordinated with every process on the host.

    ``port_range`` is an inclusive ``(low, high)`` pair or a ``range``;
    ``None`` means :func:`default_port_range`.  Ports are tried in random
    order, ports the kernel never hands out on its own first.  ``lease_dir``
    selects file leases in that directory instead of the default mechanism.
    """

    def __init__(self, port_range: Optional[Sequence[int]] = None, host: str = "127.0.0.1",
                 lease_dir: Optional[str] = None) -> None:
        self.explicit_range = port_range is not None
        self.port_range = (check_port_range(port_range) if port_range is not None
                           else default_port_range())
        self._family, self._sockaddr = _resolve(host)
        self.host = host
        if lease_dir is None and (not _USE_ABSTRACT or os.environ.get(_config.LEASE_DIR_VAR)):
            lease_dir = default_lease_dir()
        if lease_dir is not None:
            if not isinstance(lease_dir, str) or not lease_dir:
                raise TypeError(f"lease_dir must be a non-empty str, got {lease_dir!r}")
            lease_dir = _ensure_lease_dir(lease_dir)
        self.lease_dir = lease_dir
        self._lock = threading.Lock()
        self._tiers = _candidate_tiers(self.port_range, self.explicit_range)
        self._order: List[int] = []
        self._cursor = 0

    def __repr__(self) -> str:
        low, high = self.port_range
        return f"<PortAllocator {self.host} {low}-{high}>"

    def _next_pass(self) -> List[int]:
        order: List[int] = []
        for tier in self._tiers:
            shuffled = list(tier)
            random.shuffle(shuffled)
            order.extend(shuffled)
        return order

    def _candidates(self) -> Iterable[int]:
        """Every candidate once, continuing where the previous acquire stopped."""
        with self._lock:
            if self._cursor >= len(self._order):
                self._order, self._cursor = self._next_pass(), 0
            start, order = self._cursor, self._order
        for index in range(start, start + len(order)):
            with self._lock:
                self._cursor = index + 1
            yield order[index % len(order)]

    def _try(self, port: int, time_wait: Optional[List[int]] = None,
             allow_time_wait: bool = False) -> Optional[PortLease]:
        """Lease ``port`` if it is free; a port that is free but for connections
        in TIME_WAIT is appended to ``time_wait`` instead (when given)."""
        if port in _registry:  # ours already; the abstract socket would say so too
            return None
        handle = _take_lease(port, self.lease_dir)
        if handle is None:
            return None
        address = _sockaddr(self._sockaddr, port)
        if not _probe(self._family, address, allow_time_wait=allow_time_wait):
            handle.close()
            if time_wait is not None and _REUSE_ONLY_SKIPS_TIME_WAIT \
                    and _probe(self._family, address, allow_time_wait=True):
                time_wait.append(port)
            return None
        return _register(PortLease(port, self.host, handle))

    def acquire(self) -> PortLease:
        """Lease a free port; :class:`PortUnavailable` at once if the range has none.

        Ports without any connection come first.  Only when the range has none
        left does a port whose old connections are still in TIME_WAIT (about a
        minute after each stop: a tight range churned by many short-lived
        servers) qualify: every server that sets ``SO_REUSEADDR`` can bind it
        (nearly all do, and harness's own handed-off sockets do on Linux);
        one that does not reports "address already in use" and is relaunched
        on another port.
        """
        address = os.environ.get(PORTSERVER_VAR)
        if address and not self.explicit_range:
            port = _ask_portserver(address)
            if port is not None:
                lease = self._try(port)
                if lease is not None:
                    return lease
        tried = 0
        time_wait: List[int] = []
        for port in self._candidates():
            tried += 1
            lease = self._try(port, time_wait)
            if lease is not None:
                return lease
        for port in time_wait:
            lease = self._try(port, allow_time_wait=True)
            if lease is not None:
                return lease
        low, high = self.port_range
        raise PortUnavailable(
            f"no free port in {low}-{high} on {self.host}: all {tried} ports are in "
            f"use or leased by other processes; widen port_range, or find the holders "
            f"with `python -m harness who PORT`")

    def acquire_port(self, port: int) -> PortLease:
        """Lease one given port; :class:`PortUnavailable` naming the holder if taken."""
        check_port(port)
        if port in _registry:
            raise PortUnavailable(f"port {port} is already leased by this process",
                                  port=port, holders=[f"pid {os.getpid()} (this process)"])
        handle = _take_lease(port, self.lease_dir)
        if handle is None:
            pids = lease_holders(port)
            who = ", ".join(f"pid {pid} ({procinfo.short_cmdline(procinfo.cmdline(pid))})"
                            for pid in pids)
            raise PortUnavailable(
                f"port {port} is leased by another harness process: {who or 'unknown holder'}",
                port=port, holders=[who] if who else [])
        if not _probe(self._family, _sockaddr(self._sockaddr, port), allow_time_wait=True):
            handle.close()
            holder = procinfo.describe_port_holders(port)
            raise PortUnavailable(f"port {port} on {self.host} is in use by {holder}",
                                  port=port, holders=[holder])
        return _register(PortLease(port, self.host, handle))


_allocators: Dict[tuple, PortAllocator] = {}


def _allocator(host: str, port_range: Optional[Sequence[int]]) -> PortAllocator:
    key = (host, None if port_range is None else tuple(check_port_range(port_range)),
           os.environ.get(_config.LEASE_DIR_VAR))
    with _registry_lock:
        allocator = _allocators.get(key)
    if allocator is None:
        allocator = PortAllocator(port_range, host)
        with _registry_lock:
            allocator = _allocators.setdefault(key, allocator)
    return allocator


def find_free_port(host: str = "127.0.0.1", port_range: Optional[Sequence[int]] = None) -> int:
    """A free port, leased to this process until :func:`release_port` or exit."""
    return _allocator(host, port_range).acquire().port


def release_port(port: int) -> None:
    """Release this process's lease on ``port`` (a no-op if it holds none)."""
    check_port(port)
    with _registry_lock:
        lease = _registry.get(port)
    if lease is not None:
        lease.release()


def own_lease(port: int) -> Optional[PortLease]:
    """This process's live lease on ``port``, or ``None``.

    A server started on a port this process leased (``find_free_port()``,
    then ``ServerProcess(port=...)``) takes the lease over: releasing it and
    leasing it again would open a window in which another process gets it.
    """
    with _registry_lock:
        lease = _registry.get(port)
    return lease if lease is not None and not lease.released else None


def lease_for_server(host: str, port_range: Optional[Sequence[int]],
                     port: Optional[int]) -> PortLease:
    """The lease a ``ServerProcess`` takes: ``port`` (taking over this process's own
    lease on it, if any), or a free port of ``port_range`` from the shared allocator."""
    allocator = _allocator(host, port_range)
    if port is not None:
        return own_lease(port) or allocator.acquire_port(port)
    return allocator.acquire()


def held_ports() -> List[int]:
    """Ports this process holds leases on."""
    with _registry_lock:
        return sorted(_registry)


# --------------------------------------------------------------------------
# Handed-off sockets


def listening_socket(host: str = "127.0.0.1", port: int = 0, backlog: int = 128) -> socket.socket:
    """A TCP socket bound to (host, port), listening and inheritable.

    Made for handing to a server process (``pass_fds`` or fd 3 by the
    systemd convention): connections queue in the kernel from this moment,
    so the server cannot lose the port and clients cannot be refused.
    The bind fails if anyone has the port: ``SO_REUSEADDR`` is set only on
    Linux, where all it does is let the bind past connections of a stopped
    server still in TIME_WAIT (elsewhere it can share a wildcard-bound port).
    """
    check_port(port, allow_zero=True)
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
        raise ValueError(f"backlog must be an int >= 1, got {backlog!r}")
    family, sockaddr = _resolve(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if _REUSE_ONLY_SKIPS_TIME_WAIT:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(_sockaddr(sockaddr, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            holder = procinfo.describe_port_holders(port)
            raise PortUnavailable(f"port {port} on {host} is in use by {holder}",
                                  port=port, holders=[holder]) from None
        raise
    sock.set_inheritable(True)
    return sock
