"""Ports: probing, leases across processes, handed-off sockets, bad input."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from _support import (
    ipv6_available,
    open_fds,
    python_env,
    quiet_window,
    spawn_python,
    time_wait_overflows,
)

import harness
from harness import PortAllocator, PortUnavailable, ports

LINUX = sys.platform.startswith("linux")

# A worker that waits for "go", leases ports from a range until it is
# exhausted, prints them as JSON, then holds them until stdin closes.
LEASE_WORKER = r"""
import json, sys
from harness import PortAllocator, PortUnavailable
low, high, lease_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] or None
allocator = PortAllocator((low, high), lease_dir=lease_dir)
sys.stdin.readline()
held = []
while len(held) < 1000:
    try:
        held.append(allocator.acquire())
    except PortUnavailable:
        break
print(json.dumps([lease.port for lease in held]), flush=True)
sys.stdin.read()
"""


def _leave_time_wait(test: unittest.TestCase, port: int) -> None:
    """Leave a connection in TIME_WAIT on ``port``, as a stopped server does
    when it closed a connection first (it lasts about a minute)."""
    from harness import _wait
    from harness._os import procinfo as _procinfo
    overflows = time_wait_overflows()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            conn, _ = server.accept()
            conn.close()  # the server side closes first: its end goes to TIME_WAIT
            test.assertEqual(client.recv(1), b"")
    if _procinfo.HAVE_PROC or _procinfo.HAVE_PSUTIL:
        deadline = _wait.Deadline(30.0)
        for pause in _wait.backoff():
            if _procinfo.time_wait_count(port) or deadline.expired:
                break
            time.sleep(pause)
        if not _procinfo.time_wait_count(port) and time_wait_overflows() > overflows:
            test.skipTest("the kernel's TIME_WAIT table is full (TCPTimeWaitOverflow rose): "
                          "it kept no TIME_WAIT entry to test with")
        test.assertGreaterEqual(_procinfo.time_wait_count(port), 1)


class ProbeTests(unittest.TestCase):
    def check_probe(self, host: str, family: int) -> None:
        listener = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind((host, 0))
        listener.listen(1)
        self.assertFalse(harness.is_port_free(listener.getsockname()[1], host))

        bound = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(bound.close)
        bound.bind((host, 0))  # bound, never listening: connect is refused
        self.assertFalse(harness.is_port_free(bound.getsockname()[1], host))

        with PortAllocator(host=host).acquire() as lease:
            self.assertTrue(harness.is_port_free(lease.port, host))

    def test_ipv4_listening_bound_and_free(self) -> None:
        self.check_probe("127.0.0.1", socket.AF_INET)

    def test_ipv6_listening_bound_and_free(self) -> None:
        if not ipv6_available():
            self.skipTest("this machine cannot bind ::1")
        self.check_probe("::1", socket.AF_INET6)

    def test_listener_on_wildcard_makes_loopback_port_taken(self) -> None:
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("0.0.0.0", 0))
        listener.listen(1)
        self.assertFalse(harness.is_port_free(listener.getsockname()[1]))

    def test_default_range_avoids_ephemeral_and_well_known_ports(self) -> None:
        low, high = ports.default_port_range()
        eph_low, eph_high = ports.ephemeral_port_range()
        self.assertGreaterEqual(low, 1024)
        self.assertLessEqual(low, high)
        if eph_low - 1024 >= 1000:
            self.assertLess(high, eph_low)
        port = harness.find_free_port()
        self.addCleanup(harness.release_port, port)
        self.assertTrue(low <= port <= high, port)


class LeaseTests(unittest.TestCase):
    def test_lease_excludes_other_allocators_until_released(self) -> None:
        window = quiet_window(1, test=self)
        first = PortAllocator(window).acquire()
        self.assertEqual(first.port, window[0])
        with self.assertRaises(PortUnavailable):
            PortAllocator(window).acquire()
        first.release()
        first.release()  # idempotent
        self.assertTrue(first.released)
        with PortAllocator(window).acquire() as second:
            self.assertEqual(second.port, window[0])

    def test_release_port_frees_a_found_port_for_another_process(self) -> None:
        window = quiet_window(1, test=self)
        port = harness.find_free_port(port_range=window)
        probe = ("from harness import PortAllocator, PortUnavailable\n"
                 f"try:\n    PortAllocator().acquire_port({port}); print('got')\n"
                 "except PortUnavailable as e:\n    print('taken', e)\n")
        child = spawn_python(probe)
        out, _ = child.communicate(timeout=30)
        self.assertTrue(out.startswith("taken"), out)
        self.assertIn("leased by another harness process", out)
        self.assertIn(str(os.getpid()), out)
        harness.release_port(port)
        child = spawn_python(probe)
        out, _ = child.communicate(timeout=30)
        self.assertEqual(out.strip(), "got")

    def test_each_acquire_in_a_range_gives_distinct_ports_then_fails_fast(self) -> None:
        window = quiet_window(12, test=self)
        allocator = PortAllocator(window)
        leases = [allocator.acquire() for _ in window]
        self.addCleanup(lambda: [lease.release() for lease in leases])
        self.assertEqual(sorted(lease.port for lease in leases), list(window))
        start = time.monotonic()
        with self.assertRaises(PortUnavailable) as caught:
            allocator.acquire()
        self.assertLess(time.monotonic() - start, 5.0)  # a hang-catcher, not a benchmark
        self.assertIn(f"{window[0]}-{window[-1]}", str(caught.exception))

    def test_ports_are_tried_in_random_order(self) -> None:
        window = quiet_window(40, test=self)
        firsts = set()
        for _ in range(8):
            with PortAllocator(window).acquire() as lease:
                firsts.add(lease.port)
        # Sequential order would give the same port 8 times; random order
        # gives one port 8 times with probability 40**-7.
        self.assertGreater(len(firsts), 1)

    def test_fixed_port_held_by_a_process_names_it(self) -> None:
        holder = spawn_python(
            "import socket, sys\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
            "print(s.getsockname()[1], flush=True); sys.stdin.read()\n")
        self.addCleanup(holder.communicate, timeout=30)
        port = int(holder.stdout.readline())
        with self.assertRaises(PortUnavailable) as caught:
            PortAllocator().acquire_port(port)
        message = str(caught.exception)
        self.assertIn(f"port {port}", message)
        self.assertIn(f"pid {holder.pid}", message)
        self.assertIn("listen", message)
        self.assertEqual(caught.exception.port, port)

    def test_fixed_port_of_a_stopped_server_is_leasable_despite_time_wait(self) -> None:
        # A server (SO_REUSEADDR, as they all set it) that closed a connection
        # first leaves it in TIME_WAIT on its own port for a minute.
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn, _ = server.accept()
        conn.close()
        client.close()
        server.close()
        self.assertFalse(harness.is_port_free(port))  # strict: a plain bind() would fail
        with PortAllocator().acquire_port(port) as lease:  # but a real server can bind it
            self.assertEqual(lease.port, port)

    @unittest.skipUnless(LINUX, "SO_REUSEADDR only skips TIME_WAIT on Linux")
    def test_time_wait_ports_are_used_last_and_only_when_nothing_else_is_left(self) -> None:
        # A tight range churned by short-lived servers: every stop leaves the
        # port in TIME_WAIT for a minute.  Such a port is still fine for any
        # server that sets SO_REUSEADDR, so it is handed out rather than
        # failing, but only after every port without connections.
        window = quiet_window(2, test=self)
        waiting, clean = window
        _leave_time_wait(self, waiting)
        self.assertFalse(harness.is_port_free(waiting))  # the strict check still says taken
        for _ in range(10):  # random order: the clean port 10 times in a row is the tier
            with PortAllocator(window).acquire() as lease:
                self.assertEqual(lease.port, clean)
        with PortAllocator(window).acquire() as first:
            with PortAllocator(window).acquire() as second:
                self.assertEqual((first.port, second.port), (clean, waiting))
                # handoff binds it too: SO_REUSEADDR passes TIME_WAIT, and only that
                with harness.listening_socket(port=waiting) as sock:
                    self.assertEqual(sock.getsockname()[1], waiting)
                    with self.assertRaises(PortUnavailable):
                        harness.listening_socket(port=waiting)  # a live listener still wins

    def test_holder_that_cannot_be_found_is_called_unknown(self) -> None:
        from harness._os import procinfo as _procinfo
        sock = harness.listening_socket()
        self.addCleanup(sock.close)
        original = _procinfo.port_holders
        _procinfo.port_holders = lambda port: []  # as for another user's process
        self.addCleanup(setattr, _procinfo, "port_holders", original)
        with self.assertRaises(PortUnavailable) as caught:
            PortAllocator().acquire_port(sock.getsockname()[1])
        self.assertIn("unknown holder", str(caught.exception))

    def test_portserver_address_is_honoured(self) -> None:
        if not LINUX:
            self.skipTest("the fake port server uses the abstract namespace")
        wanted = quiet_window(1, test=self)[0]
        name = f"harness-test-portserver-{os.getpid()}"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(server.close)
        server.bind("\0" + name)
        server.listen(1)
        asked = []

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                asked.append(conn.recv(64))
                conn.sendall(f"{wanted}\n".encode())

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        os.environ[ports.PORTSERVER_VAR] = "@" + name
        self.addCleanup(os.environ.pop, ports.PORTSERVER_VAR, None)
        with PortAllocator().acquire() as lease:
            self.assertEqual(lease.port, wanted)
        thread.join(10)
        self.assertEqual(asked, [f"{os.getpid()}\n".encode()])


class CrossProcessLeaseTests(unittest.TestCase):
    """8 processes lease from one small range at the same moment."""

    def run_workers(self, lease_dir: str) -> None:
        window = quiet_window(24, test=self)
        workers = [self.start_worker(window, lease_dir) for _ in range(8)]
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        held = {worker.pid: json.loads(worker.stdout.readline()) for worker in workers}

        all_ports = [port for ports_ in held.values() for port in ports_]
        self.assertEqual(len(all_ports), len(set(all_ports)), f"duplicate leases: {held}")
        self.assertEqual(sorted(all_ports), list(window), "the range should be exhausted")

        allocator = PortAllocator(window, lease_dir=lease_dir or None)
        start = time.monotonic()
        with self.assertRaises(PortUnavailable):
            allocator.acquire()
        self.assertLess(time.monotonic() - start, 5.0)  # fails fast, never spins

        victim = max(workers, key=lambda w: len(held[w.pid]))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        regained = []
        for _ in held[victim.pid]:
            regained.append(allocator.acquire())
        self.addCleanup(lambda: [lease.release() for lease in regained])
        self.assertEqual(sorted(lease.port for lease in regained), sorted(held[victim.pid]))

    def start_worker(self, window: range, lease_dir: str) -> subprocess.Popen:
        worker = subprocess.Popen(
            [sys.executable, "-c", LEASE_WORKER, str(window[0]), str(window[-1]), lease_dir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True,
            env=python_env())

        self.addCleanup(worker.communicate, timeout=30)  # closes stdin: the worker exits
        return worker

    @unittest.skipUnless(LINUX, "abstract-namespace leases are Linux only")
    def test_abstract_socket_leases(self) -> None:
        self.run_workers("")

    def test_file_leases(self) -> None:
        lease_dir = tempfile.mkdtemp(prefix="harness-test-leases-")
        self.addCleanup(shutil.rmtree, lease_dir, True)
        self.run_workers(lease_dir)


class FileLeaseDirectoryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.parent = tempfile.mkdtemp(prefix="harness-test-")
        self.addCleanup(shutil.rmtree, self.parent, True)

    def test_normal_exit_leaves_the_lease_directory_empty(self) -> None:
        lease_dir = os.path.join(self.parent, "leases")
        window = quiet_window(4, test=self)
        child = spawn_python(
            "from harness import PortAllocator\n"
            f"a = PortAllocator(({window[0]}, {window[-1]}), lease_dir={lease_dir!r})\n"
            "leases = [a.acquire() for _ in range(3)]\n"
            "leases[0].release()\n"
            "import os; print(len(os.listdir(" + repr(lease_dir) + ")), flush=True)\n")
        out, err = child.communicate(timeout=30)
        self.assertEqual(child.returncode, 0, err)
        self.assertEqual(out.strip(), "2")  # two leases held while it ran
        self.assertEqual(os.listdir(lease_dir), [])
        self.assertEqual(os.stat(lease_dir).st_mode & 0o7777, 0o1777)

    def test_a_planted_symlink_is_refused(self) -> None:
        target = os.path.join(self.parent, "elsewhere")
        os.mkdir(target)
        planted = os.path.join(self.parent, "leases")
        os.symlink(target, planted)
        with self.assertRaises(harness.HarnessError) as caught:
            PortAllocator(lease_dir=planted)
        self.assertIn("not a directory", str(caught.exception))

    def test_environment_variable_selects_the_directory(self) -> None:
        lease_dir = os.path.join(self.parent, "from-env")
        os.environ["HARNESS_LEASE_DIR"] = lease_dir
        self.addCleanup(os.environ.pop, "HARNESS_LEASE_DIR", None)
        allocator = PortAllocator(quiet_window(2, test=self))
        self.assertEqual(allocator.lease_dir, lease_dir)
        with allocator.acquire() as lease:
            self.assertEqual(os.listdir(lease_dir), [f"port-{lease.port}.lock"])
        self.assertEqual(os.listdir(lease_dir), [])


class ListeningSocketTests(unittest.TestCase):
    def test_bound_listening_and_inheritable(self) -> None:
        sock = harness.listening_socket()
        self.addCleanup(sock.close)
        host, port = sock.getsockname()[:2]
        self.assertEqual(host, "127.0.0.1")
        self.assertTrue(sock.get_inheritable())
        with self.assertRaises(PortUnavailable):  # nobody can share it, SO_REUSEADDR or not
            harness.listening_socket(port=port)
        with socket.create_connection((host, port), timeout=5):
            pass  # accepted by the kernel's queue: it listens

    def test_ipv6(self) -> None:
        if not ipv6_available():
            self.skipTest("this machine cannot bind ::1")
        sock = harness.listening_socket("::1")
        self.addCleanup(sock.close)
        self.assertEqual(sock.family, socket.AF_INET6)

    def test_taken_port_names_the_holder(self) -> None:
        first = harness.listening_socket()
        self.addCleanup(first.close)
        port = first.getsockname()[1]
        with self.assertRaises(PortUnavailable) as caught:
            harness.listening_socket(port=port)
        self.assertIn(f"pid {os.getpid()}", str(caught.exception))


class BadInputTests(unittest.TestCase):
    def test_bad_ports(self) -> None:
        for bad, error in [(0, ValueError), (70000, ValueError), (-1, ValueError),
                           ("80", TypeError), (80.0, TypeError), (True, TypeError),
                           (None, TypeError)]:
            with self.subTest(port=bad):
                with self.assertRaises(error) as caught:
                    harness.is_port_free(bad)
                self.assertIn("port", str(caught.exception))
        with self.assertRaises(ValueError):
            harness.release_port(70000)
        with self.assertRaises(ValueError):
            PortAllocator().acquire_port(0)
        with self.assertRaises(ValueError):
            harness.listening_socket(port=65536)

    def test_bad_ranges(self) -> None:
        for bad, error in [((9100, 9000), ValueError), (range(9000, 9000), ValueError),
                           ((0, 10), ValueError), ((1, 70000), ValueError),
                           ((9000,), TypeError), ("9000-9100", TypeError),
                           (("a", 9100), TypeError), (range(9000, 9100, 2), ValueError)]:
            with self.subTest(port_range=bad):
                with self.assertRaises(error) as caught:
                    PortAllocator(bad)
                self.assertIn("port_range", str(caught.exception))
                with self.assertRaises(error):
                    harness.find_free_port(port_range=bad)

    def test_unresolvable_host(self) -> None:
        for call in (lambda: harness.is_port_free(9000, "no-such-host.invalid"),
                     lambda: PortAllocator(host="no-such-host.invalid"),
                     lambda: harness.find_free_port("no-such-host.invalid"),
                     lambda: harness.listening_socket("no-such-host.invalid")):
            with self.assertRaises(ValueError) as caught:
                call()
            self.assertIn("host", str(caught.exception))
        with self.assertRaises(TypeError):
            harness.is_port_free(9000, host=None)


class HygieneTests(unittest.TestCase):
    def test_lease_cycles_leave_no_open_fds(self) -> None:
        before = open_fds()
        allocator = PortAllocator()
        for _ in range(200):
            with allocator.acquire():
                pass
            harness.release_port(harness.find_free_port())
        self.assertEqual(open_fds(), before)
        self.assertEqual(ports.held_ports(), [])


if __name__ == "__main__":
    unittest.main()
