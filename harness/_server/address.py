"""Where a server listens: its Unix socket path, a handed-off Unix listener, and
whether anything still accepts there after the server is gone.

(TCP ports are leased by :mod:`harness.ports`.)
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import stat
import sys
from typing import Optional, Tuple, Union

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
