"""``python -m harness``: help, usage errors, ``port``, ``who`` and the ``demo`` dispatch.

Every command runs as a subprocess, as a user would run it.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest
from typing import List, Tuple

from _support import (
    ROOT,
    ChildProcessesMixin,
    ipv6_available,
    python_env,
    quiet_window,
    time_wait_overflows,
)

from harness import _validate, _wait, ports
from harness._os import procinfo as _procinfo
from harness._os.users import describe_user
from harness._server import marker as _marker

HANG = 60
COMMANDS = ["port", "who", "reap", "flakehunt"]


def harness(*args: str, env: dict = None) -> Tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "harness"] + list(args), cwd=ROOT,
                          env=env or python_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=HANG)
    return proc.returncode, proc.stdout, proc.stderr


def window_of(size: int, test: unittest.TestCase) -> range:
    """Free ports in 2000-3999: apart from the windows other test modules pick (4000+)."""
    return quiet_window(size, low=2000, high=3999, test=test)


def listen(port: int = 0, host: str = "127.0.0.1", reuse: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(8)
    return sock


class HelpAndUsageTest(unittest.TestCase):
    def test_every_command_has_help_with_an_example(self) -> None:
        code, out, _ = harness("--help")
        self.assertEqual(code, 0)
        for command in COMMANDS + ["demo"]:
            self.assertIn(f"    {command}", out)
        for command in COMMANDS:
            code, out, err = harness(command, "--help")
            self.assertEqual(code, 0, err)
            self.assertIn(f"usage: python -m harness {command}", out)
            self.assertIn("example", out)
            self.assertIn(f"python -m harness {command}", out.split("example", 1)[1])
            self.assertIn("--json", out)

    def test_port_help_says_the_lease_ends_with_the_command(self) -> None:
        _, out, _ = harness("port", "--help")
        self.assertIn("leased only while the command runs", out)

    def test_bad_usage_exits_2_with_a_message(self) -> None:
        cases: List[Tuple[List[str], str]] = [
            ([], "required"),
            (["frobnicate"], "invalid choice"),
            (["port", "--range", "abc"], "LOW-HIGH"),
            (["port", "--range", "9100-9000"], "low must be <= high"),
            (["port", "--range", "1-70000"], "65535"),
            (["port", "--host", "no.such.host.invalid"], "does not resolve"),
            (["who"], "PORT"),
            (["who", "http"], "whole number"),
            (["who", "0"], "1..65535"),
            (["who", "70000"], "1..65535"),
            (["flakehunt", "x", "-n", "-3"], "must be >= 1, got -3"),
            (["flakehunt", "x", "--timeout", "soon"], "must be a number, got 'soon'"),
            (["reap", "--grace", "-1"], "must be a finite number of seconds >= 0"),
            (["reap", "--runner", "me"], "must be a whole number, got 'me'"),
        ]
        for args, message in cases:
            code, out, err = harness(*args)
            self.assertEqual(code, 2, f"{args}: {out}{err}")
            self.assertIn(message, err, args)
            self.assertEqual(out, "", args)


class ArgTypeTest(unittest.TestCase):
    """One argparse adapter for every validator: the message names what is wrong."""

    def test_parses_validates_and_reports_like_argparse_expects(self) -> None:
        port = _validate.arg_type(_validate.port, "PORT")
        self.assertEqual(port("8080"), 8080)
        for text, message in (("http", "must be a whole number, got 'http'"),
                              ("0", "must be in 1..65535, got 0"), ("", "whole number")):
            with self.subTest(text=text):
                with self.assertRaises(argparse.ArgumentTypeError) as caught:
                    port(text)
                self.assertIn(message, str(caught.exception))
        seconds = _validate.arg_type(_validate.seconds, "--grace",
                                     parse=_validate.parse_number, allow_zero=True)
        self.assertEqual(seconds("0"), 0.0)
        with self.assertRaises(argparse.ArgumentTypeError):
            seconds("inf")
        port_range = _validate.arg_type(_validate.port_range, "--range",
                                        parse=_validate.parse_port_range)
        self.assertEqual(port_range("9000-9100"), (9000, 9100))
        self.assertEqual(port_range("9000"), (9000, 9000))


class PortCommandTest(unittest.TestCase):
    def test_prints_a_free_port_in_the_default_range(self) -> None:
        code, out, err = harness("port")
        self.assertEqual(code, 0, err)
        port = int(out.strip())
        low, high = ports.default_port_range()
        self.assertTrue(low <= port <= high, (port, low, high))

    def test_skips_held_ports_in_the_range(self) -> None:
        window = window_of(3, self)
        held = [listen(p) for p in window[:2]]
        try:
            code, out, err = harness("port", "--range", f"{window[0]}-{window[-1]}", "--json")
        finally:
            for sock in held:
                sock.close()
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), {"port": window[2], "host": "127.0.0.1"})

    def test_exhausted_range_exits_1_and_says_what_to_do(self) -> None:
        window = window_of(2, self)
        held = [listen(p) for p in window]
        try:
            code, out, err = harness("port", "--range", f"{window[0]}-{window[-1]}")
        finally:
            for sock in held:
                sock.close()
        self.assertEqual(code, 1)
        self.assertEqual(out, "")
        self.assertIn(f"no free port in {window[0]}-{window[-1]}", err)
        self.assertIn("python -m harness who", err)

    @unittest.skipUnless(ipv6_available(), "no IPv6 loopback")
    def test_ipv6_host(self) -> None:
        code, out, err = harness("port", "--host", "::1", "--json")
        self.assertEqual(code, 0, err)
        data = json.loads(out)
        self.assertEqual(data["host"], "::1")
        self.assertTrue(ports.is_port_free(data["port"], "::1"))


class WhoCommandTest(ChildProcessesMixin, unittest.TestCase):
    def marked_server(self, owner: str) -> Tuple[subprocess.Popen, int]:
        """A listening process with HARNESS_OWNER=owner; returns it and its port."""
        env = python_env()
        env[_marker.OWNER_ENV] = owner
        code = ("import socket, sys\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n"
                "print(s.getsockname()[1], flush=True)\nsys.stdin.read()\n")
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, universal_newlines=True)
        self.procs.append(proc)
        return proc, int(proc.stdout.readline())

    def test_free_port(self) -> None:
        port = window_of(1, self)[0]
        code, out, err = harness("who", str(port))
        self.assertEqual(code, 0, err)
        self.assertEqual(out.strip(), f"port {port} is free (nothing listens on or holds it, "
                                      f"and no harness lease)")
        code, out, _ = harness("who", str(port), "--json")
        self.assertEqual(code, 0)
        self.assertTrue(json.loads(out)["free"])

    @unittest.skipUnless(_procinfo.HAVE_PROC or _procinfo.HAVE_PSUTIL, "holders not visible")
    def test_names_a_listener_not_started_by_harness(self) -> None:
        with listen() as sock:
            port = sock.getsockname()[1]
            code, out, err = harness("who", str(port))
            json_code, json_out, _ = harness("who", str(port), "--json")
        self.assertEqual(code, 1, err)
        self.assertIn(f"port {port} is held by:\n  pid {os.getpid()}  user ", out)
        self.assertIn(f"  pid {os.getpid()}  user {describe_user(os.getuid())}  running ", out)
        self.assertRegex(out, r"running \d+(s|m\d\ds|h\d\dm|d\d\dh), listen\n")
        command = _procinfo.short_cmdline(_procinfo.cmdline(os.getpid()), 200)
        self.assertIn(f"    command: {command}", out)
        self.assertIn("    started by harness: no", out)
        self.assertEqual(json_code, 1)
        holder = json.loads(json_out)["holders"][0]
        self.assertEqual((holder["pid"], holder["state"], holder["harness"]),
                         (os.getpid(), "LISTEN", False))
        self.assertIsInstance(holder["running_seconds"], float)

    @unittest.skipUnless(_procinfo.HAVE_PROC or _procinfo.HAVE_PSUTIL, "holders not visible")
    def test_says_harness_started_it_and_whether_the_runner_lives(self) -> None:
        live, live_port = self.marked_server(_marker.owner_token())
        code, out, _ = harness("who", str(live_port))
        self.assertEqual(code, 1)
        self.assertIn(f"pid {live.pid} ", out)
        self.assertIn(f"started by harness: yes, for test runner pid {os.getpid()}, which is "
                      f"still running", out)
        # An owner token of a process that has exited: the server is an orphan.
        gone = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE)
        gone_token = _procinfo.identity(gone.pid)
        gone.stdin.close()
        gone.wait(HANG)
        orphan, orphan_port = self.marked_server(str(gone_token))
        code, out, _ = harness("who", str(orphan_port), "--json")
        self.assertEqual(code, 1)
        holder = json.loads(out)["holders"][0]
        self.assertEqual((holder["pid"], holder["harness"], holder["owner"], holder["owner_alive"]),
                         (orphan.pid, True, str(gone_token), False))
        code, out, _ = harness("who", str(orphan_port))
        self.assertIn(f"test runner pid {gone.pid}, which is gone: an orphan; "
                      f"`python -m harness reap` stops it", out)

    @unittest.skipUnless(_procinfo.HAVE_PROC or _procinfo.HAVE_PSUTIL, "states not visible")
    def test_explains_a_port_blocked_by_time_wait(self) -> None:
        """The classic "address already in use" after a restart: no process, only TIME_WAIT.

        Whether a server with SO_REUSEADDR can bind it now depends (on Linux)
        on whether the server that closed the connections set it too: who
        says which, having tried.
        """
        for reuse in (True, False) if sys.platform.startswith("linux") else (True,):
            with self.subTest(old_server_set_reuseaddr=reuse):
                port = self.leave_time_wait(reuse)
                code, out, _ = harness("who", str(port))
                # Free for nearly every server (Linux tells, by trying): exit 0, saying
                # why it is not plainly free.
                free = reuse and sys.platform.startswith("linux")
                if free:
                    self.assertEqual(code, 0, out)
                    self.assertIn(f"port {port} is free for a server that sets SO_REUSEADDR "
                                  f"(nearly all do): no process holds it, but", out)
                    self.assertIn("in TIME_WAIT; a server without SO_REUSEADDR can bind it "
                                  "once they expire", out)
                else:
                    self.assertEqual(code, 1, out)
                    self.assertIn(f"port {port} is held by no process (nothing listens on it), "
                                  f"but", out)
                    self.assertIn("in TIME_WAIT: no server can bind it until they expire", out)
                code, out, _ = harness("who", str(port), "--json")
                self.assertEqual((code, json.loads(out)["free"]), (0, True) if free else (1, False))

    def leave_time_wait(self, reuse: bool) -> int:
        overflows = time_wait_overflows()
        with listen(window_of(1, self)[0], reuse=reuse) as listener:  # outside the ephemeral range
            port = listener.getsockname()[1]
            client = socket.create_connection(("127.0.0.1", port))
            server_side, _ = listener.accept()
            server_side.close()  # the server closes first: its end goes to TIME_WAIT
            self.assertEqual(client.recv(1), b"")
            client.close()
        deadline = _wait.Deadline(HANG)
        for pause in _wait.backoff():
            if _procinfo.time_wait_count(port) or deadline.expired:
                break
            select.select([], [], [], pause)
        if not _procinfo.time_wait_count(port) and time_wait_overflows() > overflows:
            self.skipTest("the kernel's TIME_WAIT table is full (TCPTimeWaitOverflow rose): "
                          "it kept no TIME_WAIT entry to test with")
        self.assertGreaterEqual(_procinfo.time_wait_count(port), 1)
        return port

    @unittest.skipUnless(sys.platform.startswith("linux"), "abstract-socket leases are Linux's")
    def test_names_the_holder_of_a_lease(self) -> None:
        with ports.PortAllocator(port_range=window_of(1, self)).acquire() as lease:
            code, out, err = harness("who", str(lease.port))
        self.assertEqual(code, 1, err)
        self.assertIn(f"port {lease.port} is leased by harness to:\n  pid {os.getpid()} ", out)

    @unittest.skipUnless(os.path.exists("/proc/locks"), "flock holders are read from /proc/locks")
    def test_names_the_holder_of_a_file_lease(self) -> None:
        lease_dir = tempfile.mkdtemp(prefix="harness-test-leases-")
        self.addCleanup(shutil.rmtree, lease_dir, True)
        env = python_env()
        env["HARNESS_LEASE_DIR"] = lease_dir
        allocator = ports.PortAllocator(port_range=window_of(1, self), lease_dir=lease_dir)
        with allocator.acquire() as lease:
            code, out, err = harness("who", str(lease.port), env=env)
        self.assertEqual(code, 1, err)
        self.assertIn(f"port {lease.port} is leased by harness to:\n  pid {os.getpid()} ", out)

    @unittest.skipUnless(sys.platform.startswith("linux"), "abstract-socket leases are Linux's")
    def test_several_lease_holders_are_listed_under_one_header(self) -> None:
        # A lease socket inherited by a child is held by both processes.
        with ports.PortAllocator(port_range=window_of(1, self)).acquire() as lease:
            fd = lease._handle.sock.fileno()  # type: ignore[union-attr]
            child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                     stdin=subprocess.PIPE, pass_fds=[fd])
            self.procs.append(child)
            code, out, err = harness("who", str(lease.port))
        self.assertEqual(code, 1, err)
        self.assertEqual(out.count("is leased by harness to:"), 1, out)
        self.assertIn(f"  pid {os.getpid()} ", out)
        self.assertIn(f"  pid {child.pid} ", out)




class DemoDispatchTest(unittest.TestCase):
    def test_demo_gets_its_arguments(self) -> None:
        code, out, err = harness("demo", "--help")
        self.assertEqual(code, 0, err)
        self.assertIn("usage:", out)
        self.assertIn("demo", out.splitlines()[0])


if __name__ == "__main__":
    unittest.main()
