"""Servers for the HTTP, load and memory tests.

* :func:`serve` runs a stdlib ``ThreadingHTTPServer`` in a thread of the test
  process, for client tests whose handler needs to count or misbehave.
* :func:`spawn_script` runs a server script from ``test/servers/`` in a child
  process (for memory measurements, which need a process of their own).  It
  hands the child an already listening socket (no port race), waits until the
  server answers, and kills and reaps it in cleanup.

Both raise the listen backlog from socketserver's default of 5 to 128: with 5,
a burst of 16 connections overflows the accept queue (Linux then drops SYNs,
so clients wait for a 1 s retransmit; macOS resets them).
"""
from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from typing import Optional, Tuple, Type

from harness._wait import Deadline, backoff
from harness.errors import HarnessError
from harness.http import request

SERVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "servers")
BACKLOG = 128


class Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive), quiet, one write per response, no Nagle delay."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 30  # an idle keep-alive connection ends, so server_close() can join its thread

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", content_type: str = "text/plain",
              headers: dict = None) -> None:
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def drop(self) -> None:
        """Close the connection without answering (the client sees EOF)."""
        self.close_connection = True

    def reset(self) -> None:
        """Abort the connection: with SO_LINGER 0, close() sends a TCP RST."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile reference, so close() is immediate
        self.connection.close()
        self.close_connection = True


class _ThreadingServer(http.server.ThreadingHTTPServer):
    request_queue_size = BACKLOG
    daemon_threads = False  # server_close() joins every handler thread: nothing outlives a test
    block_on_close = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the tests provoke broken connections on purpose


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


def _run(test: object, server: socketserver.BaseServer) -> None:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="test-http-server", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(30)

    (test.addClassCleanup if isinstance(test, type) else test.addCleanup)(stop)


def serve(test: object, handler: Type[Handler], host: str = "127.0.0.1",
          tls: Optional[ssl.SSLContext] = None) -> str:
    """Start ``handler`` on ``host`` in a thread, stopped in the cleanup of ``test``
    (a TestCase, or a TestCase class from setUpClass).  Returns the base URL.

    With ``tls`` (a server-side context) the listening socket is wrapped, so
    the server speaks HTTPS; the URL starts with ``https://``."""
    cls = _ThreadingServer6 if ":" in host else _ThreadingServer
    server = cls((host, 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    _run(test, server)
    port = server.server_address[1]
    scheme = "https" if tls is not None else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    request_queue_size = BACKLOG
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def serve_unix(test: object, handler: Type[Handler]) -> str:
    """Start ``handler`` on a Unix socket in a private temp directory; returns its path.

    The handler runs with ``disable_nagle_algorithm`` off (no TCP here) and a
    client address of ``("unix", 0)`` so BaseHTTPRequestHandler can name it."""
    directory = tempfile.mkdtemp(prefix="harness-test-")
    (test.addClassCleanup if isinstance(test, type) else test.addCleanup)(
        shutil.rmtree, directory, True)
    path = os.path.join(directory, "http.sock")
    unix_handler = type("Unix" + handler.__name__, (handler,), {
        "disable_nagle_algorithm": False, "address_string": lambda self: "unix"})
    server = _UnixServer(path, unix_handler)
    _run(test, server)
    return path


def self_signed_cert(directory: str) -> Optional[Tuple[str, str]]:
    """A fresh self-signed certificate for 127.0.0.1 and localhost (100 years),
    made with the ``openssl`` program: (cert path, key path), or None without it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    done = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "36500", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", key, "-out", cert],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if done.returncode != 0:
        return None
    return cert, key


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def spawn_script(test: unittest.TestCase, script: str, *args: str,
                 start_timeout: float = 60.0) -> "tuple[subprocess.Popen, str]":
    """Run ``test/servers/<script>`` with a listening socket's fd as its first argument.

    Returns (process, base URL) once ``GET /health`` answers 200.  The process
    is killed (its whole session) and reaped in cleanup.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(BACKLOG)
    port = listener.getsockname()[1]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the cleanup registered next
    test.addCleanup(log.close)
    try:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(SERVERS, script), str(listener.fileno()), *args],
            pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        listener.close()  # the child's copy is the only one: if it dies, connects are refused

    def kill() -> None:
        if proc.returncode is None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own child, not reaped yet: pid not reused
        proc.wait(30)

    test.addCleanup(kill)
    url = f"http://127.0.0.1:{port}"
    deadline = Deadline(start_timeout)
    for pause in backoff(cap=0.1):
        try:
            request("GET", url + "/health", timeout=deadline.cap(5.0), retry=1,
                    expect_status=200)
            return proc, url
        except HarnessError as exc:
            problem = exc
        if proc.poll() is not None or deadline.expired:
            log.seek(0)
            raise AssertionError(f"{script} did not start (exit code {proc.returncode}): "
                                 f"{problem}\n{log.read().decode(errors='replace')}")
        time.sleep(pause)
    raise AssertionError("unreachable")
