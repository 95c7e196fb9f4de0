"""A small PostgreSQL client: the simple-query protocol over TCP or a Unix socket.

Enough for a test's set-up, checks and readiness, with the standard
library only: a session's start (StartupMessage), every authentication
a server can be set up with (trust, cleartext ``password``, ``md5``,
``scram-sha-256`` per RFC 5802/7677, the server's signature verified),
and simple queries whose rows come back as tuples of ``str`` or ``None``
(PostgreSQL's text format).  Users bring psycopg for real work.

Every step is bounded by one deadline: a server that never answers
costs the caller its ``timeout``, not a hang.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .._wait import Deadline
from ..errors import HarnessError

PROTOCOL = 196608  # 3.0
Row = Tuple[Optional[str], ...]
_salted: Dict[Tuple[str, bytes, int], bytes] = {}  # PBKDF2 is paid once per secret and salt


class PgError(HarnessError):
    """The server answered an error (``ErrorResponse``): ``severity``, ``code``
    (SQLSTATE), ``message`` and every other field by its one-letter code."""

    def __init__(self, fields: Dict[str, str]) -> None:
        self.fields = fields
        self.severity = fields.get("V") or fields.get("S") or "ERROR"
        self.code = fields.get("C", "")
        self.message = fields.get("M", "")
        detail = f" ({fields['D']})" if fields.get("D") else ""
        super().__init__(f"{self.severity}: {self.message}{detail} [SQLSTATE {self.code}]")


class ProtocolError(HarnessError):
    """The peer does not speak the protocol as expected (or cut the session short)."""


def _fields(body: bytes) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


class Connection:
    """One session.  ``query(sql)`` runs a simple query; ``close()`` ends the session."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = b""
        self.parameters: Dict[str, str] = {}

    # ----------------------------------------------------------------------
    # Framing

    def _recv_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            remaining = self._deadline.remaining()
            if remaining <= 0:
                raise socket.timeout("the PostgreSQL server did not answer in time")
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ProtocolError("the server closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def read_message(self) -> Tuple[bytes, bytes]:
        """The next message: its one-byte type and its body."""
        head = self._recv_exact(5)
        kind, length = head[:1], struct.unpack("!I", head[1:])[0]
        if length < 4 or length > 1 << 30:
            raise ProtocolError(f"bad message length {length} (type {kind!r}): not PostgreSQL?")
        return kind, self._recv_exact(length - 4)

    def send(self, kind: bytes, body: bytes) -> None:
        self._sock.settimeout(max(self._deadline.remaining(), 0.001))
        self._sock.sendall(kind + struct.pack("!I", len(body) + 4) + body)

    # ----------------------------------------------------------------------
    # Session

    def startup(self, user: str, database: str, password: Optional[str]) -> None:
        """Start the session and authenticate; returns at ReadyForQuery."""
        params = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in
                          (("user", user), ("database", database),
                           ("application_name", "harness"), ("client_encoding", "UTF8")))
        body = struct.pack("!I", PROTOCOL) + params + b"\0"
        self._sock.settimeout(max(self._deadline.remaining(), 0.001))
        self._sock.sendall(struct.pack("!I", len(body) + 4) + body)
        scram: Optional[_Scram] = None
        while True:
            kind, body = self.read_message()
            if kind == b"E":
                raise PgError(_fields(body))
            if kind == b"R":
                code = struct.unpack("!I", body[:4])[0]
                scram = self._authenticate(code, body[4:], user, password, scram)
            elif kind == b"S":
                name, value = body.rstrip(b"\0").split(b"\0", 1)
                self.parameters[name.decode()] = value.decode("utf-8", "replace")
            elif kind == b"Z":
                return
            elif kind not in (b"K", b"N"):
                raise ProtocolError(f"unexpected message {kind!r} during the session's start")

    def _authenticate(self, code: int, data: bytes, user: str, password: Optional[str],
                      scram: "Optional[_Scram]") -> "Optional[_Scram]":
        if code == 0:  # AuthenticationOk
            return scram
        if code in (3, 5, 10) and password is None:
            raise ProtocolError("the server asks for a password and none was given")
        assert password is not None or code in (11, 12)
        if code == 3:  # cleartext
            self.send(b"p", password.encode() + b"\0")  # type: ignore[union-attr]
        elif code == 5:  # md5, salted with 4 bytes
            inner = hashlib.md5((password + user).encode()).hexdigest()  # type: ignore[operator]
            outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()
            self.send(b"p", b"md5" + outer.encode() + b"\0")
        elif code == 10:  # SASL: the mechanisms the server offers
            mechanisms = [m.decode() for m in data.split(b"\0") if m]
            if "SCRAM-SHA-256" not in mechanisms:
                raise ProtocolError(f"no supported SASL mechanism among {mechanisms}")
            scram = _Scram(password)  # type: ignore[arg-type]
            first = scram.client_first()
            self.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
        elif code == 11:  # SASLContinue: server-first-message
            if scram is None:
                raise ProtocolError("SASLContinue without a SASL exchange")
            self.send(b"p", scram.client_final(data))
        elif code == 12:  # SASLFinal: the server's signature
            if scram is None or not scram.verify(data):
                raise ProtocolError("the server's SCRAM signature does not match: it does not "
                                    "know the password (not the server we started?)")
        else:
            raise ProtocolError(f"unsupported authentication request {code}")
        return scram

    def query(self, sql: str, timeout: float = 60.0) -> List[Row]:
        """Run ``sql`` (one or more statements); the rows of the last one that has rows."""
        self._deadline = Deadline(timeout)
        self.send(b"Q", sql.encode("utf-8") + b"\0")
        rows: List[Row] = []
        result: List[Row] = []
        error: Optional[PgError] = None
        while True:
            kind, body = self.read_message()
            if kind == b"T":
                rows = []
            elif kind == b"D":
                rows.append(_data_row(body))
            elif kind == b"C":
                if rows:
                    result = rows
                rows = []
            elif kind == b"E":
                error = PgError(_fields(body))
            elif kind == b"Z":
                if error is not None:
                    raise error
                return result
            elif kind in (b"I", b"N", b"S", b"A"):
                continue
            elif kind in (b"G", b"H"):  # COPY: not supported, end it
                self.send(b"f", b"COPY is not supported by harness's client\0")
            else:
                raise ProtocolError(f"unexpected message {kind!r} in a query's answer")

    def close(self) -> None:
        try:
            self._sock.settimeout(0.1)
            self._sock.sendall(b"X\0\0\0\4")  # Terminate
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _data_row(body: bytes) -> Row:
    count = struct.unpack("!H", body[:2])[0]
    at = 2
    values: List[Optional[str]] = []
    for _ in range(count):
        size = struct.unpack("!i", body[at:at + 4])[0]
        at += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[at:at + size].decode("utf-8", "replace"))
            at += size
    return tuple(values)


class _Scram:
    """The client's side of SCRAM-SHA-256 without channel binding (``n,,``)."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_key = b""
        self.auth_message = b""

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        parts = dict(item.split("=", 1) for item in server_first.decode().split(","))
        if not parts.get("r", "").startswith(self.nonce):
            raise ProtocolError("the server's SCRAM nonce does not extend ours")
        salt, iterations = base64.b64decode(parts["s"]), int(parts["i"])
        salted = salted_password(self.password, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={parts['r']}"
        self.auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored_key, self.auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        parts = dict(item.split("=", 1) for item in server_final.decode().split(","))
        expected = hmac.new(self.server_key, self.auth_message, hashlib.sha256).digest()
        return hmac.compare_digest(base64.b64decode(parts.get("v", "")), expected)


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    key = (password, salt, iterations)
    if key not in _salted:
        _salted[key] = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return _salted[key]


def scram_secret(password: str, iterations: int = 4096) -> str:
    """The verifier PostgreSQL stores for ``password`` (``ALTER ROLE ... PASSWORD 'this'``)."""
    salt = os.urandom(16)
    salted = salted_password(password, salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
            f"${b64(stored).decode()}:{b64(server).decode()}")


def md5_secret(password: str, user: str) -> str:
    """The verifier PostgreSQL stores for md5 authentication."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def connect(*, host: Optional[str] = None, port: Optional[int] = None,
            unix_path: Optional[str] = None, user: str = "postgres",
            database: str = "postgres", password: Optional[str] = None,
            timeout: float = 10.0) -> Connection:
    """A started session (authenticated, at ReadyForQuery) over TCP or a Unix socket."""
    deadline = Deadline(timeout)
    if unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: Union[str, Tuple[str, int]] = unix_path
    else:
        assert host is not None and port is not None
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM)
        address = (host, port)
    try:
        sock.settimeout(max(deadline.remaining(), 0.001))
        sock.connect(address)
        if unix_path is None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(sock, deadline)
        connection.startup(user, database, password)
    except BaseException:
        sock.close()
        raise
    return connection


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


__all__: Sequence[str] = ["connect", "Connection", "PgError", "ProtocolError", "scram_secret",
                          "md5_secret", "quote_ident", "quote_literal"]
