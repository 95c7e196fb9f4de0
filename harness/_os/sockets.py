"""Which sockets listen on which TCP port, cheaply (for proving a listener is ours).

/proc/net/tcp lists *every* TCP socket of the network namespace; on a busy
CI host with tens of thousands of TIME_WAIT entries, reading it takes tens
of milliseconds.  The kernel's sock_diag netlink interface can be asked for
listening sockets only, which takes well under a millisecond; /proc/net/tcp
is the fallback.  Linux only: elsewhere the answer is "unknown" (``None``).
"""
from __future__ import annotations

import socket
import struct
from typing import Dict, Optional

from . import procinfo

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_LISTEN = 10
_HEADER = struct.Struct("=LHHLL")                   # nlmsghdr
_REQUEST = struct.Struct("=BBBBL4s16s16sL8s")       # inet_diag_req_v2 (56 bytes)


def listening(family: int = socket.AF_INET) -> Optional[Dict[int, int]]:
    """Socket inode -> local port of every listening TCP socket of ``family``."""
    found = _netlink(family)
    if found is None:
        found = _proc(family)
    return found


def _netlink(family: int) -> Optional[Dict[int, int]]:
    if not hasattr(socket, "AF_NETLINK"):
        return None
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    except OSError:
        return None
    with sock:
        body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN,
                             b"", b"", b"", 0, b"")
        header = _HEADER.pack(_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY,
                              _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
        try:
            sock.settimeout(1.0)
            sock.sendto(header + body, (0, 0))
            found: Dict[int, int] = {}
            while True:
                data = sock.recv(65536)
                offset = 0
                while offset + _HEADER.size <= len(data):
                    length, kind = _HEADER.unpack_from(data, offset)[:2]
                    if kind == _NLMSG_DONE:
                        return found
                    if kind == _NLMSG_ERROR or length < _HEADER.size:
                        return None
                    msg = offset + _HEADER.size
                    port = struct.unpack_from("!H", data, msg + 4)[0]
                    inode = struct.unpack_from("=L", data, msg + 68)[0]
                    found[inode] = port
                    offset += (length + 3) & ~3
                if not data:
                    return None
        except OSError:
            return None


def _proc(family: int) -> Optional[Dict[int, int]]:
    if not procinfo.HAVE_PROC:
        return None
    table = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    found: Dict[int, int] = {}
    try:
        with open(table) as f:
            next(f, None)
            for row in f:
                fields = row.split()
                if fields[3] == "0A":
                    found[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    except OSError:
        return None
    return found
