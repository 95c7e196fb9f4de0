"""``Redis``: a redis-server of its own, with a password, ready when it answers PING.

It listens on a leased loopback port with ``requirepass`` set to a random
secret (carried in ``url``), persistence off, its working directory in
its private dir.  An open Redis would let any local user write files with
``CONFIG SET dir``; with the password only the test gets in.
"""
from __future__ import annotations

import os
import secrets
import socket
from typing import Any, List, Optional

from .._server import marker
from .._wait import Deadline
from ..errors import HarnessError
from ._base import Service, Settings

# hz 100: a shutdown is noticed within 10 ms, not 100 (redis-server acts on
# SIGTERM at its next cron tick); an idle server's cron costs next to nothing.
DEFAULT_SETTINGS = {"save": "", "appendonly": "no", "protected-mode": "yes",
                    "daemonize": "no", "loglevel": "notice", "databases": "16", "hz": "100"}


class RedisError(HarnessError):
    """An error reply from the server (``-ERR ...``)."""


class Redis(Service):
    """A redis-server; ``settings`` are its configuration directives
    (``{"maxmemory": "64mb"}``, given as ``--maxmemory 64mb``)."""

    binaries = ("redis-server",)
    install_hint = "apt-get install redis-server (Debian, Ubuntu); brew install redis (macOS)"

    def __init__(self, *, settings: Optional[Settings] = None, **server_kwargs: Any) -> None:
        # SIGTERM, not SIGINT: a second SIGINT (the keeper signals the group and
        # each process) makes redis exit at once with code 1 ("You insist").
        super().__init__(settings=settings, **server_kwargs)
        self.secret = secrets.token_hex(16)

    def configure(self) -> None:
        # The password in a file of the private dir, not in argv: a command line is
        # shown in errors and, in /proc, to every local user.
        assert self.home is not None
        path = marker.write_private(os.path.join(self.home, "secret.conf"),
                                    f"requirepass {self.secret}\n".encode())
        if self.spec.uid is not None:
            os.chown(path, self.spec.uid, self.spec.gid if self.spec.gid is not None else -1)

    def command_line(self) -> List[str]:
        assert self.home is not None
        argv = [self.binary("redis-server"), os.path.join(self.home, "secret.conf"),
                "--port", "{port}", "--bind", "{host}", "--dir", self.home, "--unixsocket", ""]
        for key, value in dict(DEFAULT_SETTINGS, **self.settings).items():
            argv += [f"--{key}", value]
        return argv

    @property
    def url(self) -> str:
        """``redis://:SECRET@HOST:PORT/0`` (the secret is this server's ``requirepass``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://:{self.secret}@{host}:{self.port}/0"

    def execute(self, *args: str, timeout: float = 10.0) -> Any:
        """One command (authenticated first); its reply: str, int, None or a list."""
        if self.port is None:
            raise HarnessError(f"{self.name!r} is not running; start() it first")
        deadline = Deadline(timeout)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(deadline.remaining(), 0.001))
            sock.connect((self.host, self.port))
            sock.sendall(_command("AUTH", self.secret) + _command(*args))
            reader = _Reader(sock, deadline)
            reader.reply()  # +OK for AUTH (an error raises)
            return reader.reply()

    def probe(self, timeout: float) -> bool:
        return bool(self.execute("PING", timeout=timeout) == "PONG")

    def flush(self) -> None:
        """Empty every database (``FLUSHALL``)."""
        self.execute("FLUSHALL")

    reset = flush


def _command(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Reader:
    """Replies in RESP2, read within one deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""

    def _fill(self) -> None:
        self.sock.settimeout(max(self.deadline.remaining(), 0.001))
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("redis-server closed the connection")
        self.buffer += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:].decode("utf-8", "replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                self._fill()
            data, self.buffer = self.buffer[:size], self.buffer[size + 2:]
            return data.decode("utf-8", "replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        raise RedisError(f"not a Redis reply: {line[:80]!r}")


__all__ = ["Redis", "RedisError"]
