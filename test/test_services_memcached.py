"""``harness.services.Memcached``: on a private Unix socket (or loopback TCP), flush."""
from __future__ import annotations

import os
import socket
import unittest

from _other_user import OTHER_UID, needs_root, run_as
from _process_helpers import NoKeptLogsMixin, remove_kept
from _services import needs_memcached

from harness import ServerProcess, ServerStartError
from harness.services import Memcached


def connect_unix(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"version\r\n")
        return sock.recv(100).decode()


@needs_memcached
class MemcachedTest(NoKeptLogsMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.cache = Memcached().start()
        cls.addClassCleanup(cls.cache.stop)

    def setUp(self) -> None:
        super().setUp()
        self.cache.flush()

    def test_is_a_server_process_on_a_private_socket(self) -> None:
        cache = self.cache
        self.assertIsInstance(cache, ServerProcess)
        self.assertIsNone(cache.port)
        self.assertEqual(cache.url, "memcached://" + cache.socket_path)
        self.assertEqual(os.stat(os.path.dirname(cache.socket_path)).st_mode & 0o777, 0o700)
        self.assertEqual(cache.execute("set k 0 0 1\r\nv"), "STORED")
        self.assertEqual(cache.execute("get k"), "VALUE k 0 1\r\nv\r\nEND")

    def test_flush_empties_it(self) -> None:
        self.cache.execute("set k 0 0 1\r\nv")
        self.cache.flush()
        self.assertEqual(self.cache.execute("get k"), "END")

    @needs_root
    def test_another_local_user_cannot_connect(self) -> None:
        outcome = run_as(OTHER_UID, connect_unix, self.cache.socket_path)
        self.assertEqual((outcome.how, outcome.error), ("raised", "PermissionError"), outcome)

    def test_pymemcache(self) -> None:
        try:
            from pymemcache.client.base import Client
        except ImportError:
            self.skipTest("pymemcache is not installed")
        client = Client(self.cache.address)
        self.addCleanup(client.close)
        client.set("x", b"1")
        self.assertEqual(client.get("x"), b"1")


@needs_memcached
class MemcachedOptionsTest(NoKeptLogsMixin, unittest.TestCase):
    def test_tcp(self) -> None:
        with Memcached(tcp=True) as cache:
            self.assertEqual(cache.url, f"memcached://127.0.0.1:{cache.port}")
            self.assertEqual(cache.address, ("127.0.0.1", cache.port))
            self.assertTrue(cache.execute("version").startswith("VERSION "))

    def test_settings_are_long_options(self) -> None:
        with Memcached(settings={"memory-limit": 7}) as cache:
            stats = cache.execute("stats settings")
            self.assertIn("STAT maxbytes 7340032", stats)

    def test_a_bad_option_is_a_start_error_with_its_message(self) -> None:
        with self.assertRaises(ServerStartError) as caught:
            Memcached(settings={"no-such-option": 1}).start()
        remove_kept(caught.exception.log_path)
        self.assertIn("no-such-option", str(caught.exception))

    def test_bad_arguments(self) -> None:
        with self.assertRaises(TypeError):
            Memcached(tcp="yes")
        with self.assertRaises(TypeError):
            Memcached(health="/")


if __name__ == "__main__":
    unittest.main()
