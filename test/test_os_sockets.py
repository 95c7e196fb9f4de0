"""``_os/sockets.py``: the kernel's tables of listening sockets, by sock_diag and by /proc.

A listener this test opens must be found with its port, address, owner
uid and accept queue, in the IPv4 and the IPv6 table, through netlink and
through the /proc/net/tcp fallback alike.  ``accept_queue`` is how harness
knows a handed-off socket's server took a probe's connection (1 while it
waits, 0 once accepted) and that a listener is gone (``GONE``).  Unix
listeners are named by path, an abstract one as ``@name``.  Linux only.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import unittest
from unittest import mock

from _support import ipv6_available

from harness import find_free_port, release_port
from harness._os import proc, sockets
from harness._wait import Deadline, pause

HANG = 30.0  # a bound that catches a hang, never reached when all is well
LINUX = proc.HAVE_PROC and sockets.listeners(socket.AF_INET) is not None


@unittest.skipUnless(LINUX, "socket tables are read from Linux's kernel")
class SocketsTestCase(unittest.TestCase):
    def listen(self, host: str = "127.0.0.1") -> socket.socket:
        """A listener on a leased port of ``host``."""
        port = find_free_port()
        self.addCleanup(release_port, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind((host, port))
        sock.listen(8)
        return sock

    def connect(self, listener: socket.socket) -> socket.socket:
        client = socket.socket(listener.family, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(listener.getsockname()[:2])
        return client

    @staticmethod
    def inode(sock: socket.socket) -> int:
        return os.fstat(sock.fileno()).st_ino

    def queued(self, listener: socket.socket, expected: int) -> int:
        """The listener's accept queue once it is ``expected`` (or what it is after HANG).

        A TCP connect() on loopback usually returns with the connection in the
        queue, but the handshake's last ACK may still wait for a softirq on a
        loaded machine: the count is waited for, not assumed.
        """
        family, inode = listener.family, self.inode(listener)
        deadline = Deadline(HANG)
        while True:
            now = sockets.accept_queue(family, inode)
            if now == expected or deadline.expired:
                return now  # type: ignore[return-value]
            pause(0.001)


class ListenersTest(SocketsTestCase):
    def check_found(self, family: int, host: str) -> None:
        sock = self.listen(host)
        table = sockets.listeners(family)
        assert table is not None
        found = table[self.inode(sock)]
        self.assertEqual(found, sockets.Listener(self.inode(sock), sock.getsockname()[1], host,
                                                 os.geteuid(), 0))
        self.assertEqual(sockets.listening(family)[self.inode(sock)],  # type: ignore[index]
                         sock.getsockname()[1])

    def test_an_ipv4_listener_is_found_with_its_owner(self) -> None:
        self.check_found(socket.AF_INET, "127.0.0.1")

    @unittest.skipUnless(ipv6_available(), "no IPv6 loopback here")
    def test_an_ipv6_listener_is_found_in_its_own_table(self) -> None:
        self.check_found(socket.AF_INET6, "::1")
        sock = self.listen("::1")
        table = sockets.listeners(socket.AF_INET)
        assert table is not None
        self.assertNotIn(self.inode(sock), table)

    def test_a_socket_that_does_not_listen_is_not_a_listener(self) -> None:
        listener = self.listen()
        client = self.connect(listener)
        table = sockets.listeners(socket.AF_INET)
        assert table is not None
        self.assertNotIn(self.inode(client), table)
        self.assertIn(self.inode(listener), table)

    def test_the_accept_queue_counts_connections_not_yet_taken(self) -> None:
        listener = self.listen()
        self.connect(listener)
        self.connect(listener)
        self.assertEqual(self.queued(listener, 2), 2)
        table = sockets.listeners(socket.AF_INET)
        assert table is not None
        self.assertEqual(table[self.inode(listener)].queued, 2)

    def test_the_proc_fallback_reads_the_same(self) -> None:
        listener = self.listen()
        self.connect(listener)
        self.assertEqual(self.queued(listener, 1), 1)
        with mock.patch.object(sockets, "_netlink", return_value=None):
            table = sockets.listeners(socket.AF_INET)
        assert table is not None
        self.assertEqual(table[self.inode(listener)],
                         sockets.Listener(self.inode(listener), listener.getsockname()[1],
                                          "127.0.0.1", os.geteuid(), 1))

    @unittest.skipUnless(ipv6_available(), "no IPv6 loopback here")
    def test_the_proc_fallback_reads_ipv6_addresses(self) -> None:
        listener = self.listen("::1")
        with mock.patch.object(sockets, "_netlink", return_value=None):
            table = sockets.listeners(socket.AF_INET6)
        assert table is not None
        self.assertEqual(table[self.inode(listener)].address, "::1")


class AcceptQueueTest(SocketsTestCase):
    def test_one_waiting_then_taken_then_gone(self) -> None:
        listener = self.listen()
        inode = self.inode(listener)
        self.assertEqual(sockets.accept_queue(socket.AF_INET, inode), 0)
        self.connect(listener)
        self.assertEqual(self.queued(listener, 1), 1)
        accepted, _ = listener.accept()
        self.addCleanup(accepted.close)
        self.assertEqual(sockets.accept_queue(socket.AF_INET, inode), 0)
        listener.close()
        self.assertEqual(sockets.accept_queue(socket.AF_INET, inode), sockets.GONE)

    def test_a_unix_listeners_queue_too(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(f"\0harness-test-queue-{secrets.token_hex(6)}")
        listener.listen(8)
        inode = self.inode(listener)
        self.assertEqual(sockets.accept_queue(socket.AF_UNIX, inode), 0)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(listener.getsockname())
        self.assertEqual(sockets.accept_queue(socket.AF_UNIX, inode), 1)
        listener.close()
        self.assertEqual(sockets.accept_queue(socket.AF_UNIX, inode), sockets.GONE)

    def test_another_family_cannot_be_known(self) -> None:
        self.assertIsNone(sockets.accept_queue(socket.AF_PACKET if hasattr(socket, "AF_PACKET")
                                               else -1, 1))


class UnixListenersTest(SocketsTestCase):
    def test_a_unix_listener_is_named_by_its_path(self) -> None:
        directory = tempfile.mkdtemp(prefix="h-sock-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "s.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(path)
        listener.listen(8)
        table = sockets.unix_listeners()
        assert table is not None
        self.assertEqual(table[self.inode(listener)],
                         sockets.UnixListener(self.inode(listener), path, 0))

    def test_an_abstract_listener_is_named_with_an_at(self) -> None:
        name = f"harness-test-{secrets.token_hex(6)}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind("\0" + name)
        listener.listen(8)
        table = sockets.unix_listeners()
        assert table is not None
        self.assertEqual(table[self.inode(listener)].path, "@" + name)

    def test_a_bound_socket_that_does_not_listen_is_not_listed(self) -> None:
        bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(bound.close)
        bound.bind(f"\0harness-test-{secrets.token_hex(6)}")
        table = sockets.unix_listeners()
        assert table is not None
        self.assertNotIn(self.inode(bound), table)


if __name__ == "__main__":
    unittest.main()
