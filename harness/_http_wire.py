"""The HTTP plumbing shared by :func:`harness.http.request`, :func:`harness.http.load`
and :class:`harness.checks.HttpCheck`: argument checks, URL parsing, body
encoding, naming what went wrong -- and the one connection class they all use.

A deadline is a deadline
------------------------

A socket timeout bounds one ``recv``; a peer that sends one byte just
before each timeout keeps a plain :mod:`http.client` connection busy for as
long as it likes.  :class:`Connection` is an :class:`http.client.HTTPConnection`
whose socket (:class:`DeadlineSocket`) is *armed* with an absolute deadline
for each exchange: before every connect, handshake, send and receive the
socket's timeout is set to the time left, and when none is left
:class:`DeadlineExceeded` is raised, saying what was slow (the phase, how
many bytes came, in how long).  No helper thread, no extra syscall beyond one
``settimeout`` per socket operation.  A call ends within a few milliseconds
of its deadline whatever the peer does (the time to notice, close the socket
and build the error); only name resolution (``getaddrinfo``, the OS
resolver) is outside it, and is instant for numeric addresses and
``localhost``.

Bodies are read in chunks up to a limit (:class:`BodyTooLarge` beyond it, at
once when ``Content-Length`` already says so), never allocated up front.
"""
from __future__ import annotations

import errno
import http.client
import io
import json as _json
import os
import select
import socket
import ssl
import sys
import threading
import time
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    FrozenSet,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)
from urllib.parse import urlencode, urlsplit

from . import _validate
from .errors import ResponseInvalid

#: Methods that may be sent twice without changing the outcome (RFC 9110, 9.2.2).
IDEMPOTENT_METHODS: FrozenSet[str] = frozenset(
    {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

KiB = 1 << 10
MiB = 1 << 20
#: The largest body :func:`harness.http.request` reads unless told otherwise.
DEFAULT_MAX_BODY = 64 * MiB
#: The largest body a readiness probe reads: a health page, not a download.
PROBE_MAX_BODY = 1 * MiB
_CHUNK = 64 * KiB

ExpectStatus = Union[int, Collection[int], None]
#: ``verify=``: True (system CAs), False (no verification), a CA bundle path, or a context.
Verify = Union[bool, str, "os.PathLike[str]", ssl.SSLContext]


def is_collection(value: object) -> bool:
    return hasattr(value, "__iter__") and hasattr(value, "__contains__")


def status_set(value: object, name: str) -> FrozenSet[int]:
    if isinstance(value, (str, bytes)) or not is_collection(value):
        raise TypeError(f"{name} must be a collection of HTTP status codes, got {value!r}")
    codes: FrozenSet[object] = frozenset(value)  # type: ignore[call-overload]
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"{name} must hold int status codes, got {code!r}")
        if not 100 <= code <= 599:
            raise ValueError(f"{name} holds {code}, which is not an HTTP status (100..599)")
    return frozenset(code for code in codes if isinstance(code, int))


def check_method(value: object, name: str = "method") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str such as 'GET', got {value!r}")
    if not value or not set(value) <= _TOKEN_CHARS:
        raise ValueError(f"{name} must be an HTTP method name such as 'GET', got {value!r}")
    return value.upper()


def status_matches(status: int, expected: ExpectStatus) -> bool:
    if expected is None:
        return True
    if isinstance(expected, int):
        return status == expected
    return status in expected


def check_expect_status(value: object, name: str = "expect_status") -> ExpectStatus:
    """None, an int status, a ``range`` or a collection of statuses (validated)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        status_set((value,), name)
        return value
    if isinstance(value, range):
        if value.step != 1 or len(value) == 0:
            raise ValueError(f"{name} must be a non-empty range of statuses with step 1, "
                             f"got {value!r}")
        if value.start < 100 or value.stop > 600:
            raise ValueError(f"{name} must lie within 100..599, got {value!r}")
        return value
    codes = status_set(value, name)
    if not codes:
        raise ValueError(f"{name} is an empty collection: no status could ever match")
    return codes


def describe_status(expected: ExpectStatus) -> str:
    """``200``, ``200..299`` or ``one of 200, 204`` (``any`` for None), for messages."""
    if expected is None:
        return "any"
    if isinstance(expected, int):
        return str(expected)
    if isinstance(expected, range):
        return f"{expected.start}..{expected.stop - 1}"
    return "one of " + ", ".join(map(str, sorted(expected)))


def check_max_body(value: object, name: str = "max_body") -> int:
    return _validate.whole(value, name, why="byte")


def size_text(n: int) -> str:
    """``64 MiB``, ``512 KiB`` or ``1000 bytes``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} byte{'s' if n != 1 else ''}"


# --------------------------------------------------------------------------
# Errors


class DeadlineExceeded(socket.timeout):
    """An exchange ran out of time; says in which phase and how far it got.

    A ``socket.timeout`` (``TimeoutError`` on Python 3.10+), so code that
    catches timeouts still does.  ``too_slow`` is true when part of the
    answer had arrived: the peer was answering, just too slowly (a trickle),
    as opposed to saying nothing at all.
    """

    def __init__(self, phase: str, received: int = 0, sent: int = 0, elapsed: float = 0.0,
                 limit: float = 0.0, where: str = "") -> None:
        self.phase = phase
        self.received = received
        self.sent = sent
        self.elapsed = elapsed
        self.limit = limit
        self.where = where
        super().__init__(self._message())

    @property
    def too_slow(self) -> bool:
        """Part of the answer had arrived: the peer answered, too slowly."""
        return self.received > 0

    def _message(self) -> str:
        took = f"{self.elapsed:.3f}s (limit {self.limit:.3f}s)"
        if self.received:
            return (f"too slow: {self.received} byte{'s' if self.received != 1 else ''} "
                    f"in {took}, the answer still incomplete")
        if self.phase == "waiting for the answer":
            return f"timed out: no answer in {took}"
        if self.phase == "sending the request":
            return f"timed out sending the request: {self.sent} bytes sent in {took}"
        target = f" with {self.where}" if self.phase == "TLS handshake" and self.where else (
            f" to {self.where}" if self.where else "")
        return f"timed out {self.phase}{target} after {took}"

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.phase, self.received, self.sent, self.elapsed, self.limit,
                             self.where))


class BodyTooLarge(http.client.HTTPException):
    """An answer's body is larger than the reader's limit (it was not read beyond it)."""

    def __init__(self, limit: int, declared: Optional[int] = None, status: int = 0) -> None:
        self.limit = limit
        self.declared = declared
        self.status = status
        said = f" (Content-Length: {declared})" if declared is not None else ""
        super().__init__(f"the body of the {status} answer is larger than "
                         f"{size_text(limit)}{said}")

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.limit, self.declared, self.status))


def error_kind(exc: BaseException) -> str:
    """A short, stable name for what went wrong, for counting and messages.

    ``"too slow"`` is a peer that was answering but did not finish in time
    (a trickle); ``"timeout"`` one that said nothing in time.
    """
    if isinstance(exc, DeadlineExceeded):
        return "too slow" if exc.too_slow else "timeout"
    if isinstance(exc, BodyTooLarge):
        return "too large"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "disconnected"  # closed without an answer
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate"
    if isinstance(exc, ssl.SSLError):
        return "TLS error"
    if isinstance(exc, ResponseInvalid) and exc.response is not None:
        return f"status {exc.response.status}"
    if isinstance(exc, http.client.HTTPException):
        return "protocol error"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    return type(exc).__name__


def is_final(exc: BaseException) -> bool:
    """True for failures that another attempt cannot change (not retried)."""
    return isinstance(exc, (BodyTooLarge, ssl.SSLCertVerificationError))


# --------------------------------------------------------------------------
# TLS


_default_contexts: Dict[bool, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _shared_context(verify: bool) -> ssl.SSLContext:
    """One default context per kind, made on first use (they are thread-safe to share)."""
    with _contexts_lock:
        context = _default_contexts.get(verify)
        if context is None:
            context = ssl.create_default_context()
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            _default_contexts[verify] = context
        return context


def ssl_context(verify: object, name: str = "verify") -> Optional[ssl.SSLContext]:
    """The TLS context ``verify`` asks for; ``None`` means the default (system CAs).

    ``True``: verify with the system's CAs (returns ``None``); ``False``: no
    verification at all (self-signed test certificates); a path (str or
    ``os.PathLike``) to a PEM CA bundle: verify against it; an
    :class:`ssl.SSLContext`: used as is.  Anything else is a ``TypeError``,
    a missing or unreadable CA file a ``ValueError``, naming ``name``.
    """
    if isinstance(verify, bool):
        return None if verify else _shared_context(False)
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, (str, os.PathLike)):
        path = os.fspath(verify)
        if not isinstance(path, str) or not path:
            raise TypeError(f"{name} must be a CA bundle path (str), got {verify!r}")
        if not os.path.isfile(path):
            raise ValueError(f"{name}={path!r}: no such CA bundle file")
        try:
            return ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{name}={path!r} is not a readable PEM CA bundle: {exc}") from None
    raise TypeError(f"{name} must be True, False, a CA bundle path or an ssl.SSLContext, "
                    f"got {type(verify).__name__} {verify!r}")


def tls_context(context: Optional[ssl.SSLContext]) -> ssl.SSLContext:
    """``context``, or the shared default (system CAs) for ``None``."""
    return context if context is not None else _shared_context(True)


def check_unix_socket(value: object, name: str = "unix_socket") -> Optional[str]:
    if value is None:
        return None
    path = _validate.path(value, name, "the path of a Unix socket or None")
    if not path:
        raise TypeError(f"{name} must be the path of a Unix socket (str) or None, got {value!r}")
    if not hasattr(socket, "AF_UNIX"):
        raise ValueError(f"{name}: Unix sockets are not available on this platform")
    return path


# --------------------------------------------------------------------------
# The deadline-bound socket and connection


class Limit:
    """One exchange's budget: ``seconds`` from ``started`` (``time.monotonic``)."""

    __slots__ = ("seconds", "started", "at")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.at = self.started + seconds

    def left(self) -> float:
        return self.at - time.monotonic()


class DeadlineSocket:
    """A connected socket (plain or TLS) whose every operation ends by ``limit.at``.

    It offers what :mod:`http.client` uses -- ``sendall``, ``makefile("rb")``,
    ``close`` -- plus ``recv``; the file from ``makefile`` keeps the socket
    open until it is closed too, like a real socket's.  ``received`` and
    ``sent`` count the bytes of the current exchange (reset by :meth:`arm`).
    """

    def __init__(self, sock: socket.socket, limit: Limit, where: str) -> None:
        self._sock = sock
        self.where = where
        self._io_refs = 0
        self._closed = False
        self.limit = limit
        self.received = 0
        self.sent = 0
        self._tls = sock if isinstance(sock, ssl.SSLSocket) else None
        self._poller: Optional["select.poll"] = None  # made by the first has_input()

    def arm(self, limit: Limit) -> None:
        self.limit = limit
        self.received = 0
        self.sent = 0

    def expired(self, phase: str) -> DeadlineExceeded:
        return DeadlineExceeded(phase, self.received, self.sent,
                                time.monotonic() - self.limit.started, self.limit.seconds,
                                self.where)

    def _wait(self, phase: str) -> None:
        left = self.limit.left()
        if left <= 0:
            raise self.expired(phase)
        self._sock.settimeout(left)

    def _phase(self) -> str:
        return "reading the answer" if self.received else "waiting for the answer"

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        phase = self._phase()
        self._wait(phase)
        try:
            n = self._sock.recv_into(buffer, nbytes)
        except socket.timeout:
            raise self.expired(phase) from None
        self.received += n
        return n

    def recv(self, size: int) -> bytes:
        phase = self._phase()
        self._wait(phase)
        try:
            data = self._sock.recv(size)
        except socket.timeout:
            raise self.expired(phase) from None
        self.received += len(data)
        return data

    def sendall(self, data: Any) -> None:
        with memoryview(data) as view, view.cast("B") as octets:
            offset = 0
            while offset < len(octets):
                self._wait("sending the request")
                try:
                    n = self._sock.send(octets[offset:])
                except socket.timeout:
                    raise self.expired("sending the request") from None
                offset += n
                self.sent += n

    def makefile(self, mode: str = "rb", buffering: Optional[int] = None,
                 **_ignored: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"DeadlineSocket.makefile supports mode 'rb' only, got {mode!r}")
        self._io_refs += 1
        return io.BufferedReader(_Reader(self), buffering or io.DEFAULT_BUFFER_SIZE)

    def _release(self) -> None:
        self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        self._poller = None
        if self._io_refs <= 0:
            self._sock.close()

    def has_input(self) -> bool:
        """True when something came that nobody read: bytes, the end of the stream
        or a reset.  One poll that does not wait (about a microsecond)."""
        if self._closed:
            return True
        if self._tls is not None and self._tls.pending():  # decrypted, not yet read
            return True
        poller = self._poller
        if poller is None:  # one per socket: registered once, gone with the socket
            poller = self._poller = select.poll()  # no FD_SETSIZE limit, unlike select()
            poller.register(self._sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))  # POLLHUP and POLLERR count too


class _Reader(io.RawIOBase):
    """The raw stream under ``DeadlineSocket.makefile()``."""

    def __init__(self, owner: DeadlineSocket) -> None:
        super().__init__()
        self._owner: Optional[DeadlineSocket] = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._owner is None:
            raise ValueError("I/O operation on a closed response")
        return self._owner.recv_into(buffer)

    def close(self) -> None:
        if self._owner is not None:
            owner, self._owner = self._owner, None
            owner._release()
        super().close()


def _within(sock: socket.socket, step: Callable[[], Any], phase: str, limit: Limit,
            where: str) -> None:
    """``step()`` (a blocking call on ``sock``) in the time ``limit`` has left, or
    DeadlineExceeded naming ``phase``."""
    left = limit.left()
    if left <= 0:
        raise DeadlineExceeded(phase, elapsed=limit.seconds - left, limit=limit.seconds,
                               where=where)
    sock.settimeout(left)
    try:
        step()
    except socket.timeout:
        raise DeadlineExceeded(phase, elapsed=limit.seconds - limit.left(),
                               limit=limit.seconds, where=where) from None


def _connect_within(sock: socket.socket, address: Any, limit: Limit, where: str) -> None:
    """``sock.connect(address)`` in the time ``limit`` has left, or DeadlineExceeded."""
    _within(sock, lambda: sock.connect(address), "connecting", limit, where)


def _connect_tcp(host: str, port: int, limit: Limit, where: str) -> socket.socket:
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    last: Optional[BaseException] = None
    for family, kind, proto, _name, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            _connect_within(sock, address, limit, where)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            return sock
        except DeadlineExceeded:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last = exc
    raise last if last is not None else OSError(f"getaddrinfo({host!r}) found no address")


def _connect_unix(path: str, limit: Limit) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            _connect_within(sock, path, limit, path)
        except DeadlineExceeded:
            raise
        except OSError as exc:
            if exc.errno is None or exc.filename is not None:
                raise
            raise type(exc)(exc.errno, exc.strerror, path) from None  # name the socket
    except BaseException:
        sock.close()
        raise
    return sock


def open_socket(host: str, port: int, limit: Limit, *,
                unix_socket: Optional[str] = None,
                tls: Optional[ssl.SSLContext] = None) -> DeadlineSocket:
    """Connect (and shake hands, for TLS) by ``limit``; the socket stays bound by it."""
    where = unix_socket if unix_socket is not None else (
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if unix_socket is not None:
        raw = _connect_unix(unix_socket, limit)
    else:
        raw = _connect_tcp(host, port, limit, where)
    if tls is not None:
        try:
            wrapped = tls.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
        except BaseException:
            raw.close()
            raise
        try:
            _within(wrapped, wrapped.do_handshake, "TLS handshake", limit, where)
        except BaseException:
            wrapped.close()
            raise
        raw = wrapped
    return DeadlineSocket(raw, limit, where)


class Connection(http.client.HTTPConnection):
    """An HTTP/1.1 connection (keep-alive, TCP or Unix socket, plain or TLS) with deadlines.

    Call :meth:`arm` with the seconds an exchange may take before each
    request (connecting included, when the connection is opened by that
    request); everything until the next ``arm`` shares that budget.  Arming
    with a :class:`Limit` shares it with another connection (a request sent
    again on a new one keeps its first deadline).
    """

    def __init__(self, host: str, port: int, *, tls: Optional[ssl.SSLContext] = None,
                 unix_socket: Optional[str] = None) -> None:
        super().__init__(host, port)
        self.tls = tls
        self.unix_socket = unix_socket
        if tls is not None:
            self.default_port = 443  # the Host header leaves out the scheme's own port
        self.limit = Limit(5.0)
        self._socket: Optional[DeadlineSocket] = None  # the last one opened, even if closed

    def arm(self, limit: Union[float, Limit]) -> None:
        self.limit = limit if isinstance(limit, Limit) else Limit(limit)
        sock = self.deadline_socket
        if sock is not None:
            sock.arm(self.limit)

    @property
    def received(self) -> int:
        """Bytes of the answer received since :meth:`arm`; still right after a failure
        closed the connection (http.client closes it on a reset or an early end)."""
        return self._socket.received if self._socket is not None else 0

    def stale(self) -> bool:
        """True when this idle kept-alive connection cannot carry another request:
        the peer closed or reset it, or sent bytes nobody asked for.  Costs one poll
        that does not wait; False when not connected (a request connects anew)."""
        sock: object = self.sock
        return isinstance(sock, DeadlineSocket) and sock.has_input()

    @property
    def deadline_socket(self) -> Optional[DeadlineSocket]:
        sock: object = self.sock
        return sock if isinstance(sock, DeadlineSocket) else None

    def connect(self) -> None:
        if hasattr(sys, "audit"):
            sys.audit("http.client.connect", self, self.host, self.port)
        self.sock = self._socket = open_socket(
            self.host, self.port, self.limit, unix_socket=self.unix_socket, tls=self.tls)


def server_connection(server: Any) -> Connection:
    """A connection to a ``ServerProcess``-like object: its ``host`` and ``port``, or its
    ``socket_path`` when set; TLS when its ``url`` starts with ``https://``, with its
    ``ssl_context`` (``None``: the default verification)."""
    url = getattr(server, "url", None)
    https = isinstance(url, str) and url.startswith("https://")
    tls = tls_context(getattr(server, "ssl_context", None)) if https else None
    socket_path = getattr(server, "socket_path", None)
    host = getattr(server, "host", None) or "localhost"
    port = getattr(server, "port", None) or (443 if https else 80)
    return Connection(host, port, tls=tls, unix_socket=socket_path or None)


def read_body(answer: http.client.HTTPResponse, limit: int, *, keep: bool = True) -> bytes:
    """The answer's body, read in chunks: :class:`BodyTooLarge` past ``limit`` bytes
    (at once, unread, when ``Content-Length`` says so), ``IncompleteRead`` if the
    connection ends early.  With ``keep=False`` the body is drained, not kept."""
    declared = answer.length
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit, declared, answer.status)
    parts: List[bytes] = []
    total = 0
    while True:
        chunk = answer.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(limit, None, answer.status)
        if keep:
            parts.append(chunk)
    left = answer.length
    if left:  # http.client's read(amt) stops quietly at an early end
        raise http.client.IncompleteRead(b"".join(parts), left)
    return b"".join(parts)


# --------------------------------------------------------------------------
# Requests


class Target:
    """A parsed URL: where to connect and what to ask for."""

    def __init__(self, url: object, params: Optional[Mapping[str, Any]] = None) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str such as 'http://127.0.0.1:8000/', got {url!r}")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"url {url!r} is not valid: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"url has no host: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname  # without the brackets of an IPv6 literal
        self.port = port or (443 if self.https else 80)
        path = parts.path or "/"
        query = parts.query
        if params:
            if not isinstance(params, Mapping):
                raise TypeError(f"params must be a dict of query parameters, got {params!r}")
            extra = urlencode(params, doseq=True)
            query = f"{query}&{extra}" if query else extra
        self.path = f"{path}?{query}" if query else path
        if any(not "!" <= char <= "~" for char in self.path):
            raise ValueError(f"url must not contain spaces, control or non-ASCII characters "
                             f"(percent-encode them), got {url!r}")
        self.url = url if not params else f"{url.split('?', 1)[0].split('#', 1)[0]}?{query}"

    def connection(self, tls: Optional[ssl.SSLContext] = None,
                   unix_socket: Optional[str] = None) -> Connection:
        """A connection to this URL's host (or to ``unix_socket``); TLS for https."""
        return Connection(self.host, self.port, unix_socket=unix_socket,
                          tls=tls_context(tls) if self.https else None)


def _check_header(name: object, value: object) -> Tuple[str, str]:
    key, text = str(name), str(value)
    if not key or not set(key) <= _TOKEN_CHARS:
        raise ValueError(f"headers: {key!r} is not a valid header name")
    if any(char in text for char in "\r\n\0"):
        raise ValueError(f"headers: the value of {key!r} contains a line break or NUL: {text!r}")
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"headers: the value of {key!r} is not Latin-1 text; encode it "
                         f"(RFC 8187) first: {text!r}") from None
    return key, text


def encode_body(body: object, json: object,
                headers: Optional[Mapping[str, str]]) -> Tuple[Optional[bytes], Dict[str, str]]:
    if headers is not None and not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a dict of str -> str, got {headers!r}")
    out = dict(_check_header(k, v) for k, v in (headers or {}).items())
    if body is not None and json is not None:
        raise ValueError("pass body or json, not both")
    if json is not None:
        payload: Optional[bytes] = _json.dumps(json).encode()
        if not any(k.lower() == "content-type" for k in out):
            out["Content-Type"] = "application/json"
    elif isinstance(body, str):
        payload = body.encode()
    elif body is None or isinstance(body, bytes):
        payload = body
    elif isinstance(body, (bytearray, memoryview)):
        payload = bytes(body)
    else:
        raise TypeError(f"body must be bytes or str (or use json=...), got {type(body).__name__}")
    return payload, out

