"""portpicker's port server: a port from the server ``PORTSERVER_ADDRESS`` names.

Asked first by :class:`harness.PortAllocator` when the variable is set (as
Bazel and portpicker set it for tests); harness's own lease on the answer
is still taken, and any failure falls back to harness's own choice.
"""
from __future__ import annotations

import os
import socket
from typing import Optional

from . import _config


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
    import logging

    from ._http_wire import DeadlineSocket, Limit

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
        # Once per address and kind of failure: a server that is down would
        # otherwise be reported at every lease.
        warned = ask_portserver.__dict__.setdefault("warned", set())
        kind = (shown, type(exc).__name__, getattr(exc, "too_slow", None))
        if kind not in warned:
            warned.add(kind)
            logging.getLogger("harness").warning(
                "port server at %s (PORTSERVER_ADDRESS) failed, using harness's own leases "
                "instead: %s", shown, exc)
        return None
    try:
        port = int(answer.split(b"\n")[0])
    except ValueError:
        if answer:
            logging.getLogger("harness").warning(
                "port server at %s (PORTSERVER_ADDRESS) answered %r, not a port number; "
                "using harness's own leases", shown, answer)
        return None
    return port if 1 <= port <= 65535 else None
