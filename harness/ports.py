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
released by the kernel when the holder dies.  That directory is shared with
every other user of the machine, so nothing in it is trusted: see
"File leases among other users" in ``_os/leases.py``, the protocol's home.

Failures say what is true: a host address the machine does not have (IPv6
switched off, say) is reported at the first port, not as "every port is in
use"; a port that needs privileges says so; a port whose lease cannot be
verified is never handed out, and asking for it says what is wrong.
"""
from __future__ import annotations

import atexit
import enum
import errno
import os
import random
import socket
import sys
import threading
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from . import _config, _validate
from ._os import leases, proc, procinfo
from ._os.leases import (  # noqa: F401  (names once defined here stay importable from here)
    LEASE_NAME_PREFIX,
    default_lease_dir,
    lock_file_problem,
)
from ._os.leases import held as lease_held  # noqa: F401  (as above)
from ._os.leases import holders as lease_holders
from ._portserver import ask_portserver
from ._validate import PortRange
from .errors import HarnessError, PortUnavailable

__all__ = [
    "is_port_free", "find_free_port", "release_port", "PortAllocator", "PortLease",
    "listening_socket", "default_port_range", "ephemeral_port_range", "default_lease_dir",
    "held_ports", "lease_holders",
]

EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
RESERVED_PORTS_FILE = "/proc/sys/net/ipv4/ip_local_reserved_ports"
UNPRIVILEGED_START_FILE = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
# Linux's default ephemeral range starts at 32768; macOS, the BSDs and Windows
# use 49152-65535.  Staying below 32768 is safe everywhere.
FALLBACK_EPHEMERAL_RANGE = (32768, 65535)
# Ports below this need root (or CAP_NET_BIND_SERVICE) where the kernel
# does not say otherwise (UNPRIVILEGED_START_FILE).
PRIVILEGED_BELOW = 1024
# Below 10000 live most ports developers run services on by hand
# (3000, 5432, 6379, 8000, 8080, 9000, ...): stay out of their way.
DEFAULT_FLOOR = 10000
PORTSERVER_VAR = "PORTSERVER_ADDRESS"
_PROBE_TIMEOUT = 0.5
# On Linux SO_REUSEADDR lets a bind() past connections in TIME_WAIT and
# nothing else: a port with a listening or merely bound socket still gives
# EADDRINUSE.  BSD and macOS also let a specific address share a port bound
# on the wildcard, so there harness never sets it for ports it chooses.
_REUSE_ONLY_SKIPS_TIME_WAIT = sys.platform.startswith("linux")
# bind() or socket() errors that mean the host's address itself cannot be
# used (not this port): it is not an address of this machine, or its family
# (IPv6) is switched off.  Trying another port cannot help.
_NO_ADDRESS_ERRNOS = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
_PERMISSION_ERRNOS = (errno.EACCES, errno.EPERM)

SockAddr = Tuple[Any, ...]  # (address, port, ...) as the socket module takes it


# --------------------------------------------------------------------------
# Addresses


def _resolve(host: str) -> Tuple[int, SockAddr]:
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
    return family, tuple(sockaddr)


def _sockaddr(sockaddr: SockAddr, port: int) -> SockAddr:
    return (sockaddr[0], port) + tuple(sockaddr[2:])


def _new_socket(family: int) -> socket.socket:
    """Every TCP socket this module makes (one seam: tests fake a host without IPv6 here)."""
    return socket.socket(family, socket.SOCK_STREAM)


def _ipv6_works() -> bool:
    """Whether this machine can bind the IPv6 loopback address at all."""
    try:
        with _new_socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _unusable_host(host: str, family: int, sockaddr: SockAddr,
                   cause: Optional[OSError] = None) -> HarnessError:
    """The error for a host whose address cannot be bound, whatever the port."""
    why = f" ({cause.strerror})" if cause is not None and cause.strerror else ""
    if family == socket.AF_INET6 and not _ipv6_works():
        return HarnessError(
            f"host {host!r} cannot be used: IPv6 is unavailable on this machine (switched off, "
            f"or no IPv6 loopback address){why}; use host='127.0.0.1'")
    return HarnessError(
        f"host {host!r} ({sockaddr[0]}) is not an address of this machine{why}, so no server "
        f"can listen on it; use 127.0.0.1 (or ::1), or an address `ip addr` lists")


# --------------------------------------------------------------------------
# Probing


class Probe(enum.Enum):
    """What probing one port found; callers branch on these, never on message text."""

    FREE = "free"                # connect refused and bind succeeded
    IN_USE = "in use"            # a socket holds it (bind: EADDRINUSE), or a connect is answered
    UNREACHABLE = "unreachable"  # a connect neither answered nor was refused (filtered?)
    PRIVILEGED = "privileged"    # bind: EACCES below the unprivileged start (needs root)
    DENIED = "denied"            # bind: EACCES/EPERM on an unprivileged port (security policy)
    NO_ADDRESS = "no address"    # the host's address cannot be bound at all: no port will do


def unprivileged_port_start() -> int:
    """The lowest port an unprivileged process may bind (Linux's sysctl; 1024 elsewhere)."""
    text = proc.read_text(UNPRIVILEGED_START_FILE)
    try:
        return int(text) if text else PRIVILEGED_BELOW
    except ValueError:
        return PRIVILEGED_BELOW


def _privileged_message(port: int, host: str) -> str:
    start = unprivileged_port_start()
    source = ("net.ipv4.ip_unprivileged_port_start" if proc.read_text(UNPRIVILEGED_START_FILE)
              else "the privileged ports")
    return (f"port {port} on {host} needs privileges: ports below {start} ({source}) can be "
            f"bound only by root or a process with CAP_NET_BIND_SERVICE; use a port >= {start}, "
            f"or let harness choose one")


def _denied_message(port: int, host: str) -> str:
    return (f"binding port {port} on {host} was refused (permission denied) although it is not "
            f"a privileged port here: a security policy (SELinux, AppArmor, seccomp, a "
            f"container's) forbids it; choose another port")


def _bind_failure(exc: OSError, port: int) -> Probe:
    if exc.errno in _NO_ADDRESS_ERRNOS:
        return Probe.NO_ADDRESS
    if exc.errno in _PERMISSION_ERRNOS:
        return Probe.PRIVILEGED if port < unprivileged_port_start() else Probe.DENIED
    if exc.errno == errno.EADDRINUSE:
        return Probe.IN_USE
    return Probe.UNREACHABLE  # something odd about this port: a test server must not go there


def _refusal(probe: Probe, port: int, host: str, family: int, sockaddr: SockAddr,
             cause: Optional[OSError] = None) -> HarnessError:
    """The error that says why ``port`` on ``host`` cannot be had (``probe`` is not FREE).

    ``HarnessError`` for a host no port of which will do, else
    ``PortUnavailable``, naming the holder of a port in use where it can be seen.
    """
    if probe is Probe.NO_ADDRESS:
        return _unusable_host(host, family, sockaddr, cause)
    if probe is Probe.PRIVILEGED:
        return PortUnavailable(_privileged_message(port, host), port=port)
    if probe is Probe.DENIED:
        return PortUnavailable(_denied_message(port, host), port=port)
    holder = procinfo.describe_port_holders(port)
    if probe is Probe.UNREACHABLE and holder == "unknown holder":
        return PortUnavailable(f"port {port} on {host} neither accepts nor refuses connections "
                               f"(a firewall dropping them?); choose another port", port=port)
    return PortUnavailable(f"port {port} on {host} is in use by {holder}",
                           port=port, holders=[holder])


def is_port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True only if a TCP connect to (host, port) is refused *and* a bind succeeds.

    Both are needed: a listening port refuses the bind but a socket that is
    bound and not (yet) listening refuses connections too, so only the bind
    catches it; and a listener on another address of the same port (the
    wildcard, say) is seen by the connect.  The bind is made without
    ``SO_REUSEADDR``, so a port with connections still in TIME_WAIT counts
    as taken — a server that does not set the option would fail to bind it.
    """
    return probe_port(port, host) is Probe.FREE


def probe_port(port: int, host: str = "127.0.0.1", allow_time_wait: bool = False) -> Probe:
    """What :func:`is_port_free`'s test finds, named (see :class:`Probe`)."""
    _validate.port(port)
    family, sockaddr = _resolve(host)
    return _probe(family, _sockaddr(sockaddr, port), allow_time_wait)


def _probe(family: int, address: SockAddr, allow_time_wait: bool = False) -> Probe:
    """The bind-and-connect test of :func:`is_port_free`.

    The bind comes first: its errors say at once when the address is not
    usable at all or the port needs privileges, where a connect to an
    address that is not ours would wait for its timeout.
    ``allow_time_wait`` binds with ``SO_REUSEADDR``, which on Linux succeeds
    past connections in TIME_WAIT but still fails on any listening or bound
    socket: right for a port the user chose, which their server (like
    nearly every server) binds with ``SO_REUSEADDR``, and would otherwise
    stay "taken" for a minute after each stop.
    """
    port = int(address[1])
    try:
        binder = _new_socket(family)
    except OSError as exc:
        if exc.errno in _NO_ADDRESS_ERRNOS:
            return Probe.NO_ADDRESS
        raise
    with binder:
        if allow_time_wait and os.name == "posix":
            # (On Windows SO_REUSEADDR would let us steal a live port.)
            binder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            binder.bind(address)
        except OSError as exc:
            return _bind_failure(exc, port)
    with _new_socket(family) as probe:
        probe.settimeout(_PROBE_TIMEOUT)
        try:
            probe.connect(address)
        except ConnectionRefusedError:
            return Probe.FREE
        except OSError:
            # Timed out or unreachable: something is odd about this port;
            # a test server must not be put there.
            return Probe.UNREACHABLE
    return Probe.IN_USE


# --------------------------------------------------------------------------
# Ranges


def ephemeral_port_range() -> Tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (inclusive)."""
    text = proc.read_text(EPHEMERAL_RANGE_FILE)
    if text:
        try:
            low, high = (int(part) for part in text.split())
            return low, high
        except ValueError:
            pass
    return FALLBACK_EPHEMERAL_RANGE


def reserved_ports() -> List[int]:
    """Ports the admin reserved from ephemeral use (``ip_local_reserved_ports``)."""
    text = (proc.read_text(RESERVED_PORTS_FILE) or "").strip()
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
# This process's leases (the protocol itself: _os/leases.py)


class PortLease:
    """A port reserved for this process until :meth:`release` (or its death).

    Use as a context manager to release on exit.  Releasing twice is fine.
    """

    def __init__(self, port: int, host: str, handle: leases.Lease) -> None:
        self.port = port
        self.host = host
        self._handle: Optional[leases.Lease] = handle

    @property
    def released(self) -> bool:
        """True once :meth:`release` ran (or a server took the lease over)."""
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
# The allocator


class _Skipped:
    """Why the ports of one ``acquire()`` were passed over, for a true error message."""

    def __init__(self) -> None:
        self.counts: Dict[str, int] = {}
        self.examples: Dict[str, str] = {}

    def add(self, reason: str, example: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if example:
            self.examples.setdefault(reason, example)

    def describe(self) -> str:
        """``"3 in use, 1 with a lock file that cannot be verified (...)"``."""
        parts = []
        for reason, count in self.counts.items():
            example = self.examples.get(reason)
            parts.append(f"{count} {reason}" + (f" ({example})" if example else ""))
        return ", ".join(parts)


_IN_USE, _LEASED = "in use", "leased by other processes"
_UNVERIFIED = "with a lock file that cannot be verified, so never handed out"
_PRIVILEGED = "that need privileges"
_DENIED = "refused by a security policy"


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
        self.port_range = (_validate.port_range(port_range) if port_range is not None
                           else default_port_range())
        self._family, self._sockaddr = _resolve(host)
        self.host = host
        if lease_dir is not None and (not isinstance(lease_dir, str) or not lease_dir):
            raise TypeError(f"lease_dir must be a non-empty str, got {lease_dir!r}")
        lease_dir = leases.lease_dir_in_use(lease_dir)
        self.lease_dir = None if lease_dir is None else leases.ensure_lease_dir(lease_dir)
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

    def _try(self, port: int, skipped: _Skipped, time_wait: Optional[List[int]] = None,
             allow_time_wait: bool = False) -> Optional[PortLease]:
        """Lease ``port`` if it is free, else note why not in ``skipped``; a port
        that is free but for connections in TIME_WAIT is appended to
        ``time_wait`` instead (when given).  An unusable host raises at once."""
        if port in _registry:  # ours already; the abstract socket would say so too
            skipped.add(_LEASED)
            return None
        taken = leases.take(port, self.lease_dir)
        if isinstance(taken, leases.NoLease):
            if taken.held:
                skipped.add(_LEASED)
            else:
                skipped.add(_UNVERIFIED, taken.why)
            return None
        address = _sockaddr(self._sockaddr, port)
        probe = _probe(self._family, address, allow_time_wait=allow_time_wait)
        if probe is Probe.FREE:
            return _register(PortLease(port, self.host, taken))
        taken.close()
        if probe in (Probe.IN_USE, Probe.UNREACHABLE):  # a scan names no holders: skip it
            if time_wait is not None and _REUSE_ONLY_SKIPS_TIME_WAIT and probe is Probe.IN_USE \
                    and _probe(self._family, address, allow_time_wait=True) is Probe.FREE:
                time_wait.append(port)
            else:
                skipped.add(_IN_USE)
            return None
        refusal = _refusal(probe, port, self.host, self._family, self._sockaddr)
        if probe is Probe.NO_ADDRESS:
            raise refusal
        skipped.add(_PRIVILEGED if probe is Probe.PRIVILEGED else _DENIED, str(refusal))
        return None

    def acquire(self) -> PortLease:
        """Lease a free port; :class:`PortUnavailable` at once if the range has none.

        Ports without any connection come first.  Only when the range has none
        left does a port whose old connections are still in TIME_WAIT (about a
        minute after each stop: a tight range churned by many short-lived
        servers) qualify: every server that sets ``SO_REUSEADDR`` can bind it
        (nearly all do, and harness's own handed-off sockets do on Linux);
        one that does not reports "address already in use" and is relaunched
        on another port.  A host this machine cannot listen on (IPv6
        switched off, an address it does not have) raises ``HarnessError``
        at the first port.
        """
        skipped = _Skipped()
        address = os.environ.get(PORTSERVER_VAR)
        if address and not self.explicit_range:
            port = ask_portserver(address)
            if port is not None:
                lease = self._try(port, _Skipped())
                if lease is not None:
                    return lease
        tried = 0
        time_wait: List[int] = []
        for port in self._candidates():
            tried += 1
            lease = self._try(port, skipped, time_wait)
            if lease is not None:
                return lease
        for port in time_wait:
            lease = self._try(port, skipped, allow_time_wait=True)
            if lease is not None:
                return lease
        low, high = self.port_range
        if set(skipped.counts) <= {_IN_USE, _LEASED}:
            raise PortUnavailable(
                f"no free port in {low}-{high} on {self.host}: all {tried} ports are in "
                f"use or leased by other processes; widen port_range, or find the holders "
                f"with `python -m harness who PORT`")
        raise PortUnavailable(
            f"no free port in {low}-{high} on {self.host}: of {tried} ports, "
            f"{skipped.describe()}")

    def acquire_port(self, port: int) -> PortLease:
        """Lease one given port; :class:`PortUnavailable` naming the holder if taken.

        Also when its lease cannot be verified (its lock file is not one
        harness made), or it needs privileges this process lacks.
        """
        _validate.port(port)
        if port in _registry:
            raise PortUnavailable(f"port {port} is already leased by this process",
                                  port=port, holders=[f"pid {os.getpid()} (this process)"])
        taken = leases.take(port, self.lease_dir)
        if isinstance(taken, leases.NoLease):
            if not taken.held:
                raise PortUnavailable(f"port {port} cannot be leased: {taken.why}", port=port)
            pids = lease_holders(port, self.lease_dir)
            who = ", ".join(f"pid {pid} ({procinfo.short_cmdline(procinfo.cmdline(pid))})"
                            for pid in pids)
            raise PortUnavailable(
                f"port {port} is leased by another harness process: {who or 'unknown holder'}",
                port=port, holders=[who] if who else [])
        probe = _probe(self._family, _sockaddr(self._sockaddr, port), allow_time_wait=True)
        if probe is Probe.FREE:
            return _register(PortLease(port, self.host, taken))
        taken.close()
        raise _refusal(probe, port, self.host, self._family, self._sockaddr)


_allocators: Dict[Tuple[object, ...], PortAllocator] = {}


def _allocator(host: str, port_range: Optional[Sequence[int]]) -> PortAllocator:
    key = (host, None if port_range is None else tuple(_validate.port_range(port_range)),
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
    _validate.port(port)
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
    ``PortUnavailable`` if the port is taken or needs privileges;
    ``HarnessError`` if this machine cannot listen on ``host`` at all.
    """
    _validate.port(port, allow_zero=True)
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
        raise ValueError(f"backlog must be an int >= 1, got {backlog!r}")
    family, sockaddr = _resolve(host)
    try:
        sock = _new_socket(family)
    except OSError as exc:
        if exc.errno in _NO_ADDRESS_ERRNOS:
            raise _unusable_host(host, family, sockaddr, exc) from None
        raise
    try:
        if _REUSE_ONLY_SKIPS_TIME_WAIT:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(_sockaddr(sockaddr, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        failure = _bind_failure(exc, port)
        if failure is Probe.UNREACHABLE:
            raise  # an errno that says nothing about who has the port
        raise _refusal(failure, port, host, family, sockaddr, exc) from None
    sock.set_inheritable(True)
    return sock
