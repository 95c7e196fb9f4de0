"""Messages between the runner, its zygotes and their keepers, with file descriptors.

A message is a pickled dict in a length-prefixed frame on a Unix stream
socket; descriptors (a log file, a listening socket, a keeper's socket)
travel with the first byte of the frame as ``SCM_RIGHTS`` ancillary data.
Every socket here is one end of a ``socketpair`` created by the runner:
only this user's processes that inherited it can talk on it, so pickle is
safe.  Stdlib only: the zygote loads it without the rest of harness.
"""
from __future__ import annotations

import array
import os
import pickle
import select
import socket
import struct
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

_HEADER = struct.Struct("!I")
_MAX_FDS = 8
_MAX_FRAME = 64 << 20
_CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)

Message = Dict[str, Any]


class ChannelClosed(Exception):
    """The other end closed the socket (its process exited or dropped it)."""


class ChannelTimeout(Exception):
    """No complete message arrived within the time given."""


def send(sock: socket.socket, message: Message, fds: Sequence[int] = ()) -> None:
    """Send ``message`` (and ``fds``, duplicated into the receiver)."""
    data = pickle.dumps(message, protocol=4)
    frame = _HEADER.pack(len(data)) + data
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", list(fds)))]
        sent = sock.sendmsg([frame], ancillary)
        if sent < len(frame):
            sock.sendall(frame[sent:])
    else:
        sock.sendall(frame)


def _wait_readable(sock: socket.socket, until: Optional[float]) -> None:
    if until is None:
        return
    if not select.select([sock], [], [], max(0.0, until - time.monotonic()))[0]:
        raise ChannelTimeout()


def _take_fds(ancdata: List[Tuple[int, int, bytes]], into: List[int]) -> None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            into.extend(fds)


def recv(sock: socket.socket, timeout: Optional[float] = None) -> Tuple[Message, List[int]]:
    """The next message and the descriptors that came with it.

    Blocks (up to ``timeout`` seconds, ``None`` for ever) for a whole
    message; ``ChannelClosed`` at end of file, ``ChannelTimeout`` when the
    time is up (a peer that trickles a frame cannot hold the caller).
    """
    until = None if timeout is None else time.monotonic() + timeout
    fds: List[int] = []
    try:
        header = b""
        while len(header) < _HEADER.size:
            _wait_readable(sock, until)
            data, ancdata, _, _ = sock.recvmsg(_HEADER.size - len(header),
                                               socket.CMSG_SPACE(_MAX_FDS * 4), _CMSG_CLOEXEC)
            _take_fds(ancdata, fds)
            if not data:
                raise ChannelClosed()
            header += data
        size = _HEADER.unpack(header)[0]
        if size > _MAX_FRAME:
            raise ChannelClosed()
        body = bytearray()
        while len(body) < size:
            _wait_readable(sock, until)
            chunk = sock.recv(size - len(body))
            if not chunk:
                raise ChannelClosed()
            body += chunk
        message = pickle.loads(bytes(body))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    if not isinstance(message, dict):
        for fd in fds:
            os.close(fd)
        raise ChannelClosed()
    return message, fds
