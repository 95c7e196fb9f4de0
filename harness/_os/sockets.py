"""Which sockets listen on which TCP port, whose they are, and how many connections wait.

/proc/net/tcp lists *every* TCP socket of the network namespace; on a busy
CI host with tens of thousands of TIME_WAIT entries, reading it takes tens
of milliseconds.  The kernel's sock_diag netlink interface can be asked for
listening sockets only, which takes well under a millisecond; /proc/net/tcp
is the fallback.  Either way each listener comes with its owner's uid
(visible for every user's sockets, unlike the owning process) and its
accept queue length (connections the kernel accepted that the server has
not yet taken).  Linux only: elsewhere the answer is "unknown" (``None``).

Both families are read: a dual-stack ``[::]`` listener sits in the IPv6
table and takes IPv4 connections too.
"""
from __future__ import annotations

import socket
import struct
from typing import Dict, List, NamedTuple, Optional, Tuple

from . import proc

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_LISTEN = 10
_HEADER = struct.Struct("=LHHLL")                   # nlmsghdr
_REQUEST = struct.Struct("=BBBBL4s16s16sL8s")       # inet_diag_req_v2 (56 bytes)
# Offsets in inet_diag_msg: the id's sport, then idiag_rqueue, idiag_uid, idiag_inode.
_SPORT, _SRC, _RQUEUE, _UID, _INODE = 4, 8, 56, 64, 68


class Listener(NamedTuple):
    """A listening TCP socket: its port, address, owner uid and accept queue length."""
    inode: int
    port: int
    address: str
    uid: int
    queued: int


def listeners(family: int = socket.AF_INET) -> Optional[Dict[int, Listener]]:
    """Socket inode -> :class:`Listener` for every listening TCP socket of ``family``."""
    found = _netlink(family)
    if found is None:
        found = _proc(family)
    return found


def listening(family: int = socket.AF_INET) -> Optional[Dict[int, int]]:
    """Socket inode -> local port of every listening TCP socket of ``family``."""
    table = listeners(family)
    return None if table is None else {inode: item.port for inode, item in table.items()}


GONE = -1


def accept_queue(family: int, inode: int) -> Optional[int]:
    """How many connections wait in the accept queue of listener ``inode``.

    For a socket harness handed to a server: 0 after a probe connected
    means the server took the connection; :data:`GONE` means the socket
    no longer listens (its holder closed it or died); ``None`` means it
    cannot be known here (not Linux; Unix sockets).
    """
    if family == getattr(socket, "AF_UNIX", None):
        return _unix_queue(inode)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    table = listeners(family)
    if table is None:
        return None
    return int(table[inode].queued) if inode in table else GONE


_UNIX_REQUEST = struct.Struct("=BBHIIIII")   # unix_diag_req
_UNIX_MSG = struct.Struct("=BBBBIII")        # unix_diag_msg
_UDIAG_SHOW_NAME = 0x01
_UDIAG_SHOW_RQLEN = 0x10
_UNIX_DIAG_NAME = 0
_UNIX_DIAG_RQLEN = 4


class UnixListener(NamedTuple):
    """A listening Unix stream socket: its path (``@name`` for the abstract
    namespace, ``""`` if unnamed) and accept queue length (``None`` if unknown)."""
    inode: int
    path: str
    queued: Optional[int]


def unix_listeners() -> Optional[Dict[int, UnixListener]]:
    """Socket inode -> :class:`UnixListener` for every listening Unix stream socket."""
    messages = _unix_dump(_UDIAG_SHOW_NAME | _UDIAG_SHOW_RQLEN)
    if messages is None:
        return None
    found: Dict[int, UnixListener] = {}
    for message in messages:
        inode = _UNIX_MSG.unpack_from(message, 0)[4]
        found[inode] = UnixListener(inode, *_unix_attributes(message))
    return found


def _unix_queue(inode: int) -> Optional[int]:
    """The accept queue length of listening Unix socket ``inode`` (sock_diag), or GONE.

    Asked for between readiness probes: only that socket's message is
    parsed, and no names are asked for (a host may have hundreds of listeners).
    """
    messages = _unix_dump(_UDIAG_SHOW_RQLEN)
    if messages is None:
        return None
    for message in messages:
        if _UNIX_MSG.unpack_from(message, 0)[4] == inode:
            return _unix_attributes(message)[1]
    return GONE


def _unix_dump(show: int) -> Optional[List[bytes]]:
    """The sock_diag messages of every listening Unix stream socket, with ``show``'s
    attributes."""
    return _sock_diag(_UNIX_REQUEST.pack(socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, 0, show,
                                         0xFFFFFFFF, 0xFFFFFFFF))


def _unix_attributes(message: bytes) -> Tuple[str, Optional[int]]:
    """The path and the accept queue length in a unix_diag message ("" and None where
    it holds none)."""
    path, queued = "", None
    attr = _UNIX_MSG.size
    while attr + 4 <= len(message):  # its attributes: (size, kind, value), 4-aligned
        size, kind = struct.unpack_from("=HH", message, attr)
        if size < 4:
            break
        value = message[attr + 4:attr + size]
        if kind == _UNIX_DIAG_RQLEN:
            queued = int(struct.unpack_from("=I", value)[0])
        elif kind == _UNIX_DIAG_NAME:
            path = ("@" + value[1:].decode("utf-8", "replace") if value[:1] == b"\0"
                    else value.split(b"\0", 1)[0].decode("utf-8", "replace"))
        attr += (size + 3) & ~3
    return path, queued


def _sock_diag(request: bytes) -> Optional[List[bytes]]:
    """The messages (headers stripped) of one sock_diag dump; ``None`` if it fails."""
    if not hasattr(socket, "AF_NETLINK"):
        return None
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    except OSError:
        return None
    header = _HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                          _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
    messages: List[bytes] = []
    with sock:
        try:
            sock.settimeout(1.0)
            sock.sendto(header + request, (0, 0))
            while True:  # a dump comes in datagrams of several messages, then DONE
                data = sock.recv(65536)
                if not data:
                    return None
                offset = 0
                while offset + _HEADER.size <= len(data):
                    length, kind = _HEADER.unpack_from(data, offset)[:2]
                    if kind == _NLMSG_DONE:
                        return messages
                    if kind == _NLMSG_ERROR or length < _HEADER.size:
                        return None
                    messages.append(data[offset + _HEADER.size:offset + length])
                    offset += (length + 3) & ~3
        except OSError:
            return None


def _address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(family, raw[:4])
    return socket.inet_ntop(family, raw[:16])


def _netlink(family: int) -> Optional[Dict[int, Listener]]:
    messages = _sock_diag(_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN,
                                        b"", b"", b"", 0, b""))
    if messages is None:
        return None
    found: Dict[int, Listener] = {}
    for message in messages:
        port = struct.unpack_from("!H", message, _SPORT)[0]
        queued, = struct.unpack_from("=L", message, _RQUEUE)
        uid, inode = struct.unpack_from("=LL", message, _UID)
        address = _address(family, message[_SRC:_SRC + 16])
        found[inode] = Listener(inode, port, address, uid, queued)
    return found


def _proc_address(family: int, text: str) -> str:
    raw = bytes.fromhex(text)
    if family == socket.AF_INET:
        return socket.inet_ntop(family, raw[::-1])
    # /proc/net/tcp6 writes the address as four host-order 32-bit words.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(family, words)


def _proc(family: int) -> Optional[Dict[int, Listener]]:
    if not proc.HAVE_PROC:
        return None
    table = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    found: Dict[int, Listener] = {}
    try:
        with open(table) as f:
            next(f, None)
            for row in f:
                fields = row.split()
                if fields[3] != "0A":
                    continue
                address, port = fields[1].rsplit(":", 1)
                queued = int(fields[4].split(":")[1], 16)
                found[int(fields[9])] = Listener(int(fields[9]), int(port, 16),
                                                 _proc_address(family, address),
                                                 int(fields[7]), queued)
    except (OSError, ValueError, IndexError):
        return None
    return found
