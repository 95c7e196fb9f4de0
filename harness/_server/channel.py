"""Messages between the runner, its zygotes and their keepers, with file descriptors.

A message is a pickled dict in a length-prefixed frame on a Unix stream
socket; descriptors (a log file, a listening socket, a keeper's socket)
travel with the first byte of the frame as ``SCM_RIGHTS`` ancillary data.
Every socket here is one end of a ``socketpair`` created by the runner:
only this user's processes that inherited it can talk on it, so pickle is
safe.  Stdlib only: the zygote loads it without the rest of harness.

A receiver's timeout is for a frame to *begin*.  Once its first byte has
been read the frame is read to its end, whatever the timeout: a header
taken and then given up on would leave the body to be read as the next
header, and every later message would be garbage.  A peer that stops in
the middle of a frame for :data:`FRAME_STALL` seconds has broken the
stream: that is ``ChannelClosed``, never a timeout to retry after.
"""
from __future__ import annotations

import array
import math
import os
import pickle
import select
import socket
import struct
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

_HEADER = struct.Struct("!I")
_MAX_FDS = 8
_MAX_FRAME = 64 << 20
_CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
#: Seconds a frame already begun may go without a byte before the peer
#: counts as broken.  Senders write a frame with one ``sendall``: only a
#: stopped or hung sender leaves one half-sent.
FRAME_STALL = 10.0

Message = Dict[str, Any]


class ChannelClosed(Exception):
    """The other end closed the socket (its process exited or dropped it)."""


class ChannelTimeout(Exception):
    """No message began to arrive within the time given (nothing was read)."""


def send(sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
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


def _wait_readable(sock: socket.socket, until: Optional[float], started: bool) -> None:
    """Wait for bytes: until ``until`` for a frame to begin (``ChannelTimeout``),
    then up to :data:`FRAME_STALL` for each next piece of it (``ChannelClosed``)."""
    if started:
        wait = FRAME_STALL
    elif until is None:
        return
    else:
        wait = max(0.0, until - time.monotonic())
    if not _readable(sock, wait):
        raise ChannelClosed() if started else ChannelTimeout()


def _readable(sock: socket.socket, seconds: float) -> bool:
    """``poll``, not ``select``: a runner with more than 1024 files open has
    descriptors ``select`` cannot watch."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(math.ceil(seconds * 1000)))


def _take_fds(ancdata: List[Tuple[int, int, bytes]], into: List[int]) -> None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            into.extend(fds)


def recv(sock: socket.socket, timeout: Optional[float] = None) -> Tuple[Message, List[int]]:
    """The next message and the descriptors that came with it.

    Blocks up to ``timeout`` seconds (``None``: for ever) for a message to
    begin, then until it is complete.  ``ChannelTimeout`` when none began
    (nothing was consumed: call again); ``ChannelClosed`` at end of file, or
    when the stream is broken (a frame stalled halfway, or is not a message).
    """
    until = None if timeout is None else time.monotonic() + timeout
    fds: List[int] = []
    try:
        header = b""
        while len(header) < _HEADER.size:
            _wait_readable(sock, until, started=bool(header))
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
            _wait_readable(sock, until, started=True)
            chunk = sock.recv(size - len(body))
            if not chunk:
                raise ChannelClosed()
            body += chunk
        try:
            message = pickle.loads(bytes(body))
        except Exception:
            raise ChannelClosed() from None  # not one of our frames: the stream is corrupt
        if not isinstance(message, dict):
            raise ChannelClosed()
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return message, fds
