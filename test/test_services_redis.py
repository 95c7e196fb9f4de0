"""``harness.services.Redis``: a redis-server with a password, PING readiness, flush."""
from __future__ import annotations

import os
import socket
import unittest

from _other_user import OTHER_UID, needs_root, run_as
from _process_helpers import NoKeptLogsMixin, remove_kept
from _services import needs_redis

from harness import ServerProcess, ServerStartError
from harness.services import Redis, RedisError, ServiceUnavailable


def unauthenticated_ping(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(200).decode()


@needs_redis
class RedisTest(NoKeptLogsMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.redis = Redis().start()
        cls.addClassCleanup(cls.redis.stop)

    def setUp(self) -> None:
        super().setUp()
        self.redis.flush()

    def test_is_a_server_process_with_a_password_in_its_url(self) -> None:
        redis = self.redis
        self.assertIsInstance(redis, ServerProcess)
        self.assertEqual(redis.url, f"redis://:{redis.secret}@127.0.0.1:{redis.port}/0")
        self.assertEqual(redis.execute("SET", "k", "v"), "OK")
        self.assertEqual(redis.execute("GET", "k"), "v")

    def test_the_password_is_in_no_log_line_command_line_or_repr(self) -> None:
        with self.assertLogs("harness", "INFO") as logs:
            redis = Redis().start()
            try:
                with open(f"/proc/{redis.pid}/cmdline", "rb") as f:
                    cmdline = f.read().decode()
            finally:
                redis.stop()
        self.assertNotIn(redis.secret, "\n".join(logs.output))
        self.assertIn(f"redis://:***@127.0.0.1:{redis.port}/0", "\n".join(logs.output))
        self.assertNotIn(redis.secret, repr(redis))
        self.assertNotIn(redis.secret, " ".join(redis.command))
        self.assertNotIn(redis.secret, cmdline, "every local user can read a command line")

    def test_flush_empties_it(self) -> None:
        self.redis.execute("SET", "k", "v")
        self.redis.flush()
        self.assertEqual(self.redis.execute("DBSIZE"), 0)

    def test_without_the_password_nothing_is_allowed(self) -> None:
        self.assertIn("NOAUTH", unauthenticated_ping(self.redis.port))

    @needs_root
    def test_another_local_user_cannot_get_in(self) -> None:
        outcome = run_as(OTHER_UID, unauthenticated_ping, self.redis.port)
        self.assertEqual(outcome.how, "returned", outcome)
        self.assertIn("NOAUTH", outcome.value)

    def test_errors_are_redis_errors(self) -> None:
        with self.assertRaises(RedisError):
            self.redis.execute("NO_SUCH_COMMAND")

    def test_redis_py(self) -> None:
        try:
            import redis
        except ImportError:
            self.skipTest("redis-py is not installed")
        client = redis.Redis.from_url(self.redis.url)
        self.addCleanup(client.close)
        client.set("x", "1")
        self.assertEqual(client.get("x"), b"1")


@needs_redis
class RedisConfigTest(NoKeptLogsMixin, unittest.TestCase):
    def test_settings_are_directives(self) -> None:
        with Redis(settings={"maxmemory": "7mb", "databases": 3}) as redis:
            self.assertEqual(redis.execute("CONFIG", "GET", "maxmemory"), ["maxmemory", "7340032"])
            self.assertEqual(redis.execute("CONFIG", "GET", "databases"), ["databases", "3"])

    def test_a_bad_directive_quotes_redis(self) -> None:
        with self.assertRaises(ServerStartError) as caught:
            Redis(settings={"no-such-directive": "1"}).start()
        remove_kept(caught.exception.log_path)
        self.assertIn("FATAL CONFIG FILE ERROR", str(caught.exception))

    def test_a_missing_binary_says_what_to_install(self) -> None:
        redis = Redis()
        path = os.environ["PATH"]
        os.environ["PATH"] = "/nonexistent"
        try:
            reason = redis.unavailable()
            with self.assertRaises(ServiceUnavailable):
                redis.start()
        finally:
            os.environ["PATH"] = path
        self.assertIn("apt-get install redis-server", reason)

    def test_a_cache_dir_that_cannot_be_made_does_not_matter_to_redis(self) -> None:
        os.environ["HARNESS_CACHE_DIR"] = "/dev/null/no-cache-here"
        self.addCleanup(os.environ.pop, "HARNESS_CACHE_DIR")
        redis = Redis().start()
        home = redis.home
        self.assertEqual(redis.stop(), 0, redis.output())
        self.assertFalse(os.path.exists(home))

    def test_stop_is_quick_and_clean(self) -> None:
        redis = Redis().start()
        home = redis.home
        self.assertEqual(redis.stop(), 0, redis.output())
        self.assertFalse(os.path.exists(home))


if __name__ == "__main__":
    unittest.main()
