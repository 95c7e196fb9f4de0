"""``_portserver.py``: portpicker's port server, asked first when ``PORTSERVER_ADDRESS`` is set.

A server that is down, or answers nonsense, must never cost a lease: harness
falls back to its own choice and says so once per address and kind of
failure, not at every lease.
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import unittest

from harness import _portserver


def _serve_once(test: unittest.TestCase, answer: bytes) -> str:
    """A Unix socket port server that answers ``answer`` to one request; its path."""
    directory = tempfile.mkdtemp(prefix="harness-test-portserver-")
    path = os.path.join(directory, "sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    asked = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            asked.append(conn.recv(64))
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    test.addCleanup(os.rmdir, directory)
    test.addCleanup(os.unlink, path)
    test.addCleanup(server.close)
    test.addCleanup(thread.join, 10)
    test.asked = asked  # type: ignore[attr-defined]
    return path


@unittest.skipUnless(hasattr(socket, "AF_UNIX"), "no Unix sockets here")
class AskPortServerTest(unittest.TestCase):
    def test_the_answer_is_a_port(self) -> None:
        path = _serve_once(self, b"12345\n")
        self.assertEqual(_portserver.ask_portserver(path), 12345)
        self.assertEqual(self.asked, [f"{os.getpid()}\n".encode()])  # type: ignore[attr-defined]

    def test_a_server_that_is_down_is_reported_once_per_address(self) -> None:
        missing = os.path.join(tempfile.gettempdir(), f"harness-test-no-server-{os.getpid()}")
        with self.assertLogs("harness", logging.WARNING) as logs:
            for _ in range(3):
                self.assertIsNone(_portserver.ask_portserver(missing))
            other = missing + "-2"
            self.assertIsNone(_portserver.ask_portserver(other))
        self.assertEqual(len(logs.output), 2, logs.output)
        self.assertIn(missing, logs.output[0])
        self.assertIn("using harness's own leases", logs.output[0])
        self.assertIn(other, logs.output[1])

    def test_an_answer_that_is_no_port_number_is_reported(self) -> None:
        path = _serve_once(self, b"none of your business\n")
        with self.assertLogs("harness", logging.WARNING) as logs:
            self.assertIsNone(_portserver.ask_portserver(path))
        self.assertIn("not a port number", logs.output[0])

    def test_a_port_out_of_range_is_no_answer(self) -> None:
        path = _serve_once(self, b"70000\n")
        self.assertIsNone(_portserver.ask_portserver(path))


if __name__ == "__main__":
    unittest.main()
