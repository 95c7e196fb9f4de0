"""Hostile peers for the deadline tests: servers that trickle, lie or stay silent.

:class:`RawServer` listens on 127.0.0.1 (or a Unix socket) in a thread and
runs a *behaviour* for each connection in a thread of its own:
``behaviour(conn, stop)`` writes whatever bytes it likes.  Every behaviour is
bounded (it ends by itself after at most :data:`MAX_SECONDS`, and at once
when ``stop`` is set), and :meth:`RawServer.close` (registered as a cleanup)
sets ``stop``, closes every socket and joins every thread: nothing outlives
the test.

Behaviours trickle with ``stop.wait(interval)``, not ``time.sleep``, so a
cleanup never waits for a trickle to end.
"""
from __future__ import annotations

import os
import socket
import ssl
import tempfile
import threading
import unittest
from typing import Callable, List, Optional

#: No behaviour runs longer than this, even if nobody stops it: long enough
#: that a client without a working deadline visibly overstays (tests bound
#: their calls at deadline + 1 s), short enough that such a client still ends.
MAX_SECONDS = 8.0
#: One byte per INTERVAL seconds.
INTERVAL = 0.2

Behaviour = Callable[[socket.socket, threading.Event], None]


def read_request(conn: socket.socket) -> bytes:
    """The request's head (up to the blank line); b"" if the client sent none in 5 s."""
    conn.settimeout(5.0)
    data = b""
    try:
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    conn.settimeout(None)
    return data


def trickle(data: bytes, stop: threading.Event, conn: socket.socket,
            interval: float = INTERVAL) -> None:
    """Send ``data`` one byte per ``interval`` seconds (at most MAX_SECONDS in all)."""
    budget = int(MAX_SECONDS / interval)
    for index in range(min(len(data), budget)):
        try:
            conn.sendall(data[index:index + 1])
        except OSError:
            return
        if stop.wait(interval):
            return


def hold(stop: threading.Event) -> None:
    """Keep the connection open, silent, until stopped (or MAX_SECONDS)."""
    stop.wait(MAX_SECONDS)


# --------------------------------------------------------------------------
# Behaviours


def trickled_headers(conn: socket.socket, stop: threading.Event) -> None:
    """A valid answer, sent one byte per 0.2 s from its very first byte."""
    read_request(conn)
    trickle(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
            b"X-Padding: " + b"p" * 40 + b"\r\n\r\nok", stop, conn)


def trickled_chunked_body(conn: socket.socket, stop: threading.Event) -> None:
    """Headers at once, then a chunked body of one-byte chunks, a byte per 0.2 s."""
    read_request(conn)
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
    except OSError:
        return
    trickle(b"1\r\nx\r\n" * 100 + b"0\r\n\r\n", stop, conn)


def huge_content_length(conn: socket.socket, stop: threading.Event) -> None:
    """Claims a 10 PB body (10**16 bytes), sends three bytes of it and waits."""
    read_request(conn)
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 10000000000000000\r\n\r\nabc")
    except OSError:
        return
    hold(stop)


def silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accepts, reads the request and never answers."""
    read_request(conn)
    hold(stop)


def fast_endless_body(conn: socket.socket, stop: threading.Event) -> None:
    """A chunked body sent as fast as the client reads it, for MAX_SECONDS."""
    read_request(conn)
    chunk = b"%x\r\n%s\r\n" % (65536, b"z" * 65536)
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.settimeout(MAX_SECONDS)
        for _ in range(100000):  # bounded: ~6 GiB at most, cut by stop or the client
            if stop.is_set():
                return
            conn.sendall(chunk)
    except OSError:
        return


def answers(*responses: bytes) -> Behaviour:
    """The n-th connection gets ``responses[n]`` (the last one from then on), then is closed."""
    count = [0]
    lock = threading.Lock()

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        if not read_request(conn):
            return
        with lock:
            index = min(count[0], len(responses) - 1)
            count[0] += 1
        try:
            conn.sendall(responses[index])
        except OSError:
            pass

    return behaviour


def response(status: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    """A complete HTTP/1.1 answer with Content-Length and Connection: close."""
    head = [b"HTTP/1.1 " + status, b"Content-Length: %d" % len(body), b"Connection: close"]
    return b"\r\n".join(head + list(headers)) + b"\r\n\r\n" + body


def trickling_portserver(conn: socket.socket, stop: threading.Event) -> None:
    """A PORTSERVER_ADDRESS server that reads the pid line and trickles digits, no newline."""
    conn.settimeout(5.0)
    try:
        conn.recv(64)
    except OSError:
        return
    trickle(b"1" * 100, stop, conn)


# --------------------------------------------------------------------------
# The server


class RawServer:
    """Runs ``behaviour`` for every connection; see the module docstring.

    ``unix=True`` listens on a Unix socket in a private temp directory
    (``path``); ``tls`` wraps each accepted connection server-side.
    """

    def __init__(self, test: unittest.TestCase, behaviour: Behaviour, *, unix: bool = False,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        self.behaviour = behaviour
        self.tls = tls
        self.stop = threading.Event()
        self.threads: List[threading.Thread] = []
        self.conns: List[socket.socket] = []
        self.lock = threading.Lock()
        self.connections = 0
        if unix:
            self.tmp = tempfile.TemporaryDirectory()
            self.path: Optional[str] = os.path.join(self.tmp.name, "s.sock")
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(self.path)
            self.host, self.port = "localhost", 0
        else:
            self.path = None
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.bind(("127.0.0.1", 0))
            self.host, self.port = "127.0.0.1", self.listener.getsockname()[1]
        self.listener.listen(64)
        self.listener.settimeout(0.05)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://{self.host}:{self.port}" if not unix else f"{scheme}://localhost"
        accepter = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)
        self.threads.append(accepter)
        accepter.start()
        test.addCleanup(self.close)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self.lock:
                if self.stop.is_set():
                    conn.close()
                    return
                self.connections += 1
                self.conns.append(conn)
                worker = threading.Thread(target=self._serve, args=(conn,),
                                          name="hostile-conn", daemon=True)
                self.threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(5.0)
                try:
                    tls_conn = self.tls.wrap_socket(conn, server_side=True)
                except (OSError, ValueError):
                    return
                tls_conn.settimeout(None)
                with self.lock:
                    self.conns.append(tls_conn)
                conn = tls_conn
            self.behaviour(conn, self.stop)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        with self.lock:
            threads = list(self.threads)
            conns = list(self.conns)
        for thread in threads:
            thread.join(30)
        for conn in conns:
            conn.close()
        if self.path is not None:
            self.tmp.cleanup()


def server_like(raw: RawServer, **extra: object) -> object:
    """What a readiness check needs from a server: host, port, url (and socket_path)."""
    fake = type("ServerLike", (), {})()
    fake.host, fake.port, fake.url = raw.host, raw.port, raw.url  # type: ignore[attr-defined]
    if raw.path is not None:
        fake.socket_path = raw.path  # type: ignore[attr-defined]
    for name, value in extra.items():
        setattr(fake, name, value)
    return fake
