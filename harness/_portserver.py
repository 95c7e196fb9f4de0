"""portpicker's port server: a port from the server ``PORTSERVER_ADDRESS`` names.

Asked first by :class:`harness.PortAllocator` when the variable is set (as
Bazel and portpicker set it for tests); harness's own lease on the answer
is still taken, and any failure falls back to harness's own choice.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Optional, Set, Tuple

from . import _config
from ._http_wire import DeadlineSocket, Limit

_log = logging.getLogger("harness")
# The failures already logged, by (address, kind of error, what was too
# slow): a server that is down would otherwise be reported at every lease.
_warned: Set[Tuple[str, str, object]] = set()


def ask_portserver(address: str) -> Optional[int]:
    """A port from portpicker's port server at ``address``, or ``None``.

    Protocol: send our pid and a newline; the answer is a port number and a
    newline, or nothing when the server has none.  A leading '@' means the
    abstract namespace.  The whole exchange ends within 1 s (times
    ``HARNESS_TIMEOUT_FACTOR``) whatever the server does -- a server that
    trickles its answer or never closes is given up on at the deadline --
    and a failure is logged (logger ``harness``) with what was slow, before
    harness falls back to its own leases.
    """
    if not hasattr(socket, "AF_UNIX"):
        return None
    shown = address
    if address.startswith("@"):
        address = "\0" + address[1:]
    limit = Limit(_config.scaled(1.0))
    answer = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(limit.seconds)
            raw.connect(address)
            conn = DeadlineSocket(raw, limit, shown)
            conn.sendall(f"{os.getpid()}\n".encode())
            conn.arm(limit)  # count the answer's bytes only
            while b"\n" not in answer and len(answer) < 64:
                chunk = conn.recv(64 - len(answer))
                if not chunk:
                    break
                answer += chunk
    except OSError as exc:
        kind = (shown, type(exc).__name__, getattr(exc, "too_slow", None))
        if kind not in _warned:  # once per address and kind of failure
            _warned.add(kind)
            _log.warning(
                "port server at %s (PORTSERVER_ADDRESS) failed, using harness's own leases "
                "instead: %s", shown, exc)
        return None
    try:
        port = int(answer.split(b"\n")[0])
    except ValueError:
        if answer:
            _log.warning(
                "port server at %s (PORTSERVER_ADDRESS) answered %r, not a port number; "
                "using harness's own leases", shown, answer)
        return None
    return port if 1 <= port <= 65535 else None
