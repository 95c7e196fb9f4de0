"""Where a server listens: :class:`ServerAddress`, one per ``ServerProcess``.

A leased TCP port (and with ``handoff`` the bound, listening socket itself),
a Unix socket path (made in the server's private dir, or the test's own
``unix_socket=PATH``), or nothing at all (``listens=False``).  It is taken
before each launch and given back after, and it can tell whether anything
still accepts there once the server's tree is gone, and who.

(The leases themselves are :mod:`harness.ports`'.)
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import stat
import sys
from typing import TYPE_CHECKING, Callable, Optional, Tuple, Union

from .._os import procinfo
from ..errors import HarnessError, PortUnavailable
from ..ports import PortLease, lease_for_server, listening_socket
from . import marker, supervisor

if TYPE_CHECKING:  # (spec imports this module's limits)
    from .spec import ServerSpec

SUN_PATH_MAX = 100  # sockaddr_un.sun_path holds 108 bytes (104 on macOS)
#: The longest path a test may give (``unix_socket=PATH``): sun_path less its NUL.
SUN_PATH_LIMIT = 107 if sys.platform.startswith("linux") else 103


def socket_path(directory: str) -> Tuple[str, Optional[str]]:
    """The server's socket path, and the extra directory made for it (or ``None``).

    The path is in the server's private dir if that is short enough for
    sun_path; with a long TMPDIR it is in a private dir of its own under
    /tmp, linked from the server's dir (see :func:`remove_socket_dir`),
    which the caller registers for removal if the runner dies.
    """
    path = os.path.join(directory, "server.sock")
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        return path, None
    short = os.path.join("/tmp", f"harness-s{secrets.token_hex(6)}")
    os.mkdir(short, 0o700)
    os.symlink(short, os.path.join(directory, "socket-dir"))
    return os.path.join(short, "s"), short


def remove_socket_dir(directory: str) -> None:
    """Remove the short socket dir a long TMPDIR made :func:`socket_path` create."""
    link = os.path.join(directory, "socket-dir")
    try:
        target = os.readlink(link)
    except OSError:
        return
    shutil.rmtree(target, ignore_errors=True)


def unix_listener(path: str, backlog: int = 128) -> socket.socket:
    """A Unix stream socket bound at ``path``, listening and inheritable (for handoff)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def check_free(path: str) -> None:
    """Refuse a socket path something already accepts on (its answers would pass for the
    server's); remove a stale socket file there (nothing accepts: a crashed server's)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path!r} exists and is not a socket: choose another path")
    if accepts(None, None, path):
        raise FileExistsError(f"something already accepts connections on the Unix socket "
                              f"{path!r}: stop it or choose another path")
    remove_socket(path)


def remove_socket(path: str) -> None:
    """Remove the socket file at ``path`` (and nothing else: a file of another kind stays)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def accepts(host: Optional[str], port: Optional[int], path: Optional[str]) -> bool:
    """True if something accepts a connection at ``path`` (a Unix socket) or host:port."""
    address: Union[str, Tuple[str, int]]
    if path is not None:
        if not os.path.exists(path):
            return False
        family, address = socket.AF_UNIX, path
    elif host is not None and port is not None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        address = (host, port)
    else:
        return False
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


class ServerAddress:
    """Where one server listens; taken for a launch, given back after it."""

    #: How many times a handed-off port is leased again when a stranger bound it
    #: between the lease and the bind.
    RETRIES = 3

    def __init__(self, spec: "ServerSpec",
                 lease: Callable[[str, Optional[Tuple[int, int]], Optional[int]],
                                 PortLease] = lease_for_server) -> None:
        self.spec = spec
        self.port: Optional[int] = spec.port
        self.socket_path: Optional[str] = None
        self.listener: Optional[socket.socket] = None  # handoff: ours until the launch
        self.listen_inode: Optional[int] = None          # the handed-off socket's inode
        self._lease_port = lease  # (a test may stand in for the lease)
        self._lease: Optional[PortLease] = None

    def take(self, directory: str) -> None:
        """Lease the port (or make the socket path); with handoff also bind and listen."""
        if self.spec.unix_socket:
            self._take_socket_path(directory)
        elif self.spec.listens is not False:
            self._take_port()
        self.listen_inode = (os.fstat(self.listener.fileno()).st_ino
                             if self.listener is not None else None)

    def _take_port(self) -> None:
        for attempt in range(self.RETRIES + 1):
            self._lease = self._lease_port(self.spec.host, self.spec.port_range, self.spec.port)
            self.port = self._lease.port
            if not self.spec.handoff:
                return
            try:
                self.listener = listening_socket(self.spec.host, self.port)
                return
            except PortUnavailable:
                self.release()
                if self.spec.port is not None or attempt == self.RETRIES:
                    raise

    def _take_socket_path(self, directory: str) -> None:
        if self.spec.socket_path is not None:
            self.socket_path = self.spec.socket_path
            try:
                check_free(self.socket_path)
            except FileExistsError as exc:
                raise HarnessError(f"server {self.spec.name!r}: {exc}") from None
        else:
            self.socket_path, extra = socket_path(directory)
            if extra is not None:
                supervisor.register_dir(extra)  # removed with the rest if the runner dies
                marker.give_to(extra, self.spec.uid, self.spec.gid)
        if self.spec.handoff:
            self.listener = unix_listener(self.socket_path)

    def close_listener(self) -> None:
        """Close our copy of a handed-off socket: the server has its own, and ours would
        keep the address open after the server died (a probe would hang, not be refused)."""
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()

    def release(self) -> None:
        """Give the port back (the lease), and our copy of a handed-off socket."""
        self.close_listener()
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    def accepts(self) -> bool:
        """True if something still accepts connections at the address."""
        if self.spec.unix_socket:
            return accepts(None, None, self.socket_path)
        return accepts(self.spec.host, self.port, None)

    def holder(self) -> str:
        """Who holds the address, for a message."""
        if self.spec.unix_socket or self.port is None:
            return "an unknown process"
        return procinfo.describe_port_holders(self.port)

    def forget_test_socket(self) -> None:
        """Remove the test's own socket file (``unix_socket=PATH``) once nothing serves it."""
        if self.spec.socket_path is not None:
            remove_socket(self.spec.socket_path)

    def describe(self) -> str:
        """``unix socket PATH``, ``port N`` or ``no port``, for messages."""
        if self.spec.unix_socket:
            return f"socket {self.socket_path}"
        return "no port" if self.port is None else f"port {self.port}"
