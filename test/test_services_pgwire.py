"""The stdlib PostgreSQL client (``harness.services._pgwire``) against canned byte
streams: every authentication, rows with NULLs, errors, a peer that is not PostgreSQL."""
from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import struct
import threading
import unittest
from typing import List

from harness.services import PgError, _pgwire


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def auth(code: int, data: bytes = b"") -> bytes:
    return message(b"R", struct.pack("!I", code) + data)


READY = message(b"Z", b"I")
OK = auth(0)


class CannedServer:
    """A peer that answers each message it reads with the next canned reply."""

    def __init__(self, replies: List[bytes]) -> None:
        self.client, self.server = socket.socketpair()
        self.replies = list(replies)
        self.received: List[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.server:
            for reply in self.replies:
                data = self.server.recv(65536)
                if not data:
                    return
                self.received.append(data)
                self.server.sendall(reply)

    def connection(self) -> _pgwire.Connection:
        return _pgwire.Connection(self.client, _pgwire.Deadline(10))

    def close(self) -> None:
        self.client.close()
        self.thread.join(10)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _client_message(sock: socket.socket) -> bytes:
    head = _read(sock, 5)
    return _read(sock, struct.unpack("!I", head[1:])[0] - 4)


def scram_server(sock: socket.socket, password: str, forge: bool, seen: dict) -> None:
    """The server's side of SCRAM-SHA-256, written from RFC 5802 (not from the client)."""
    with sock:
        length = struct.unpack("!I", _read(sock, 4))[0]
        _read(sock, length - 4)  # the startup message
        sock.sendall(auth(10, b"SCRAM-SHA-256\0\0"))
        body = _client_message(sock)
        mechanism, rest = body.split(b"\0", 1)
        client_first = rest[4:].decode()
        first_bare = client_first[3:]  # after "n,,"
        nonce = dict(p.split("=", 1) for p in first_bare.split(","))["r"] + "srv"
        salt, iterations = b"0123456789abcdef", 16
        server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        sock.sendall(auth(11, server_first.encode()))
        final = _client_message(sock).decode()
        without_proof, proof = final.rsplit(",p=", 1)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored = hashlib.sha256(client_key).digest()
        message_text = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored, message_text, hashlib.sha256).digest()
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
        seen["proof ok"] = hashlib.sha256(recovered).digest() == stored \
            and mechanism == b"SCRAM-SHA-256"
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        verifier = hmac.new(server_key, message_text, hashlib.sha256).digest()
        if forge:
            verifier = bytes(32)
        sock.sendall(auth(12, b"v=" + base64.b64encode(verifier)) + OK + READY)


class PgWireTest(unittest.TestCase):
    def serve(self, replies: List[bytes]) -> CannedServer:
        server = CannedServer(replies)
        self.addCleanup(server.close)
        return server

    def test_trust_and_parameters(self) -> None:
        server = self.serve([OK + message(b"S", b"server_version\x0015.1\x00")
                             + message(b"K", b"\0" * 8) + READY])
        connection = server.connection()
        connection.startup("postgres", "db", None)
        self.assertEqual(connection.parameters, {"server_version": "15.1"})
        startup = server.received[0]
        self.assertEqual(struct.unpack("!I", startup[4:8])[0], _pgwire.PROTOCOL)
        self.assertIn(b"user\x00postgres\x00database\x00db\x00", startup)

    def test_cleartext_password(self) -> None:
        server = self.serve([auth(3), OK + READY])
        server.connection().startup("postgres", "db", "s3cret")
        self.assertEqual(server.received[1], message(b"p", b"s3cret\0"))

    def test_md5_password(self) -> None:
        salt = b"\x01\x02\x03\x04"
        server = self.serve([auth(5, salt), OK + READY])
        server.connection().startup("alice", "db", "pw")
        inner = hashlib.md5(b"pwalice").hexdigest().encode()
        expected = b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\0"
        self.assertEqual(server.received[1], message(b"p", expected))

    def test_scram_rfc7677_vector(self) -> None:
        # RFC 7677's example exchange (user "user", password "pencil").
        scram = _pgwire._Scram("pencil")
        scram.nonce = "rOprNGfwEbeRWgbNEkqO"
        scram.first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
        final = scram.client_final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                   b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        self.assertEqual(final, b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        self.assertTrue(scram.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="))
        self.assertFalse(scram.verify(b"v=" + base64.b64encode(b"x" * 32)))

    def test_scram_exchange_and_a_forged_server_signature(self) -> None:
        for forge in (False, True):
            with self.subTest(forge=forge):
                client, peer = socket.socketpair()
                self.addCleanup(client.close)
                seen = {}
                thread = threading.Thread(target=scram_server, args=(peer, "pw", forge, seen))
                thread.start()
                connection = _pgwire.Connection(client, _pgwire.Deadline(10))
                if forge:
                    with self.assertRaises(_pgwire.ProtocolError) as caught:
                        connection.startup("postgres", "db", "pw")
                    self.assertIn("signature", str(caught.exception))
                else:
                    connection.startup("postgres", "db", "pw")
                thread.join(10)
                self.assertTrue(seen["proof ok"], "the client's proof is right")

    def test_rows_nulls_and_the_last_result_set(self) -> None:
        row_description = message(b"T", b"\0\1x\0" + b"\0" * 18)
        rows = (message(b"D", b"\0\2" + struct.pack("!i", 1) + b"a" + struct.pack("!i", -1))
                + message(b"D", b"\0\2" + struct.pack("!i", 2) + b"\xc3\xa9"
                          + struct.pack("!i", 0)))
        answer = (message(b"C", b"CREATE TABLE\0") + row_description + rows
                  + message(b"C", b"SELECT 2\0") + READY)
        server = self.serve([answer])
        self.assertEqual(server.connection().query("CREATE ...; SELECT ..."),
                         [("a", None), ("\u00e9", "")])

    def test_an_error_is_raised_after_ready_for_query(self) -> None:
        error = message(b"E", b"SERROR\0VERROR\0C42601\0Msyntax error at end of input\0\0")
        server = self.serve([error + READY, message(b"C", b"SELECT 0\0") + READY])
        connection = server.connection()
        with self.assertRaises(PgError) as caught:
            connection.query("SELEC")
        self.assertEqual((caught.exception.code, caught.exception.severity), ("42601", "ERROR"))
        self.assertIn("syntax error", str(caught.exception))
        self.assertEqual(connection.query("SELECT 0"), [], "the session goes on")

    def test_a_fatal_error_at_start(self) -> None:
        server = self.serve([message(b"E", b"SFATAL\0C57P03\0Mthe database system is "
                                           b"starting up\0\0")])
        with self.assertRaises(PgError) as caught:
            server.connection().startup("postgres", "db", None)
        self.assertEqual(caught.exception.code, "57P03")

    def test_not_postgresql(self) -> None:
        server = self.serve([b"HTTP/1.1 400 Bad Request\r\n\r\n"])
        with self.assertRaises(_pgwire.ProtocolError):
            server.connection().startup("postgres", "db", None)

    def test_a_password_asked_for_and_none_given(self) -> None:
        server = self.serve([auth(3)])
        with self.assertRaises(_pgwire.ProtocolError) as caught:
            server.connection().startup("postgres", "db", None)
        self.assertIn("password", str(caught.exception))

    def test_a_closed_connection(self) -> None:
        server = self.serve([])  # closes without a word
        with self.assertRaises((_pgwire.ProtocolError, OSError)):
            server.connection().startup("postgres", "db", None)

    def test_a_silent_peer_costs_the_timeout_not_a_hang(self) -> None:
        client, peer = socket.socketpair()
        self.addCleanup(peer.close)
        self.addCleanup(client.close)
        connection = _pgwire.Connection(client, _pgwire.Deadline(0.2))
        with self.assertRaises(socket.timeout):
            connection.startup("postgres", "db", None)

    def test_verifiers(self) -> None:
        self.assertEqual(_pgwire.md5_secret("pw", "alice"),
                         "md5" + hashlib.md5(b"pwalice").hexdigest())
        secret = _pgwire.scram_secret("pw", 16)
        self.assertRegex(secret, r"^SCRAM-SHA-256\$16:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:"
                                 r"[A-Za-z0-9+/=]+$")


if __name__ == "__main__":
    unittest.main()
