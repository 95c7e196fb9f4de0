"""``Memcached``: a memcached of its own, ready when it answers ``version``.

memcached has no authentication in its common build (SASL needs the binary
protocol, a SASL database and a client that speaks it), so by default it
listens on a Unix socket in its private 0700 dir: only the runner's user
(and root) can reach it, and no port is used.  ``tcp=True`` puts it on a
leased loopback port instead, where any local user can connect: for
clients that only speak TCP.
"""
from __future__ import annotations

import os
import signal
import socket
import urllib.parse
from typing import Any, List, Optional

from .. import _validate
from .._wait import Deadline
from ..errors import HarnessError
from ._base import Service, Settings


class Memcached(Service):
    """A memcached; ``settings`` are its long options (``{"memory-limit": 64}`` is
    ``--memory-limit=64``).  ``address`` is what clients take: the socket's
    path (pymemcache's ``Client(address)``), or ``(host, port)`` with ``tcp=True``."""

    binaries = ("memcached",)
    install_hint = "apt-get install memcached (Debian, Ubuntu); brew install memcached (macOS)"

    def __init__(self, *, settings: Optional[Settings] = None, tcp: bool = False,
                 **server_kwargs: Any) -> None:
        _validate.flag(tcp, "tcp")
        if not tcp:
            server_kwargs["unix_socket"] = True
        # memcached's graceful exit waits for its one-second clock; it keeps
        # nothing (no files, no shared memory) that SIGKILL would leave behind.
        server_kwargs.setdefault("stop_signal", signal.SIGKILL)
        super().__init__(settings=settings, **server_kwargs)
        self.tcp = tcp

    def command_line(self) -> List[str]:
        argv = [self.binary("memcached")]
        if self.tcp:
            argv += ["--listen={host}", "--port={port}", "--udp-port=0"]
        else:
            argv += ["--unix-socket={socket}", "--unix-mask=0077"]
        if (self.spec.uid if self.spec.uid is not None else os.geteuid()) == 0:
            argv += ["--user=root"]  # memcached asks for it: its socket's dir is root's alone
        for key, value in self.settings.items():
            argv += [f"--{key}={value}"]
        return argv

    @property
    def address(self) -> Any:
        """What a client connects to (pymemcache's ``Client(address)``): the socket path,
        or ``(host, port)`` with ``tcp=True``."""
        return (self.host, self.port) if self.tcp else self.socket_path

    @property
    def url(self) -> str:
        """``memcached:///path/to/socket``, or ``memcached://host:port`` with ``tcp=True``."""
        if self.tcp:
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"memcached://{host}:{self.port}"
        return "memcached://" + urllib.parse.quote(self.socket_path or "")

    def execute(self, line: str, timeout: float = 10.0) -> str:
        """One text-protocol command; the reply up to its end (``END``, ``OK``, ...)."""
        if self.port is None and self.socket_path is None:
            raise HarnessError(f"{self.name!r} is not running; start() it first")
        deadline = Deadline(timeout)
        if self.tcp:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            address: Any = (self.host, self.port)
        else:
            family, address = socket.AF_UNIX, self.socket_path
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(deadline.remaining(), 0.001))
            sock.connect(address)
            sock.sendall(line.encode("utf-8") + b"\r\n")
            # Retrievals and stats end with END; everything else is one line.
            listing = line.split(" ", 1)[0] in ("get", "gets", "gat", "gats", "stats")
            end = b"END\r\n" if listing else b"\r\n"
            data = b""
            while not data.endswith(end) and not data.endswith(b"ERROR\r\n"):
                sock.settimeout(max(deadline.remaining(), 0.001))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode("utf-8", "replace").strip()

    def probe(self, timeout: float) -> bool:
        return self.execute("version", timeout=timeout).startswith("VERSION ")

    def flush(self) -> None:
        """Empty the cache (``flush_all``)."""
        reply = self.execute("flush_all")
        if reply != "OK":
            raise HarnessError(f"memcached answered {reply!r} to flush_all")

    reset = flush


__all__ = ["Memcached"]
