"""``python -m harness who`` as a user who cannot see everything, and across PID namespaces.

``who`` must tell "I see a socket on the port but not its process" (another
user's: run as root) from "nothing holds it", and must not call a server an
orphan because its test runner lives in another PID namespace (a container).
The second user is a throwaway uid in a forked child (``_other_user``);
those tests skip unless root.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import unittest
from typing import List, Tuple

from _other_user import OTHER_UID, needs_root, run_as
from _support import ChildProcessesMixin, python_env, quiet_window

from harness import PortAllocator, _wait
from harness._cli import main as harness_main
from harness._os import procinfo as _procinfo
from harness._os.identity import ProcessId, own_pid_namespace
from harness._server import marker as _marker

LINUX = sys.platform.startswith("linux")
HANG = 60


def who(*args: str) -> Tuple[int, str]:
    """``python -m harness who ARGS`` in this process: (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = harness_main(["who"] + list(args))
    return code, out.getvalue()


def leave_time_wait(listener: socket.socket) -> None:
    """One connection to ``listener`` that the server side closes first: TIME_WAIT on its port."""
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        conn, _ = listener.accept()
        conn.close()
        client.recv(1)
    deadline = _wait.Deadline(HANG)
    for pause in deadline.polls():
        if _procinfo.time_wait_count(port):
            break
        _wait.pause(pause)


@unittest.skipUnless(LINUX, "another user's sockets are told apart through Linux's tables")
class WhoAsAnotherUserTest(unittest.TestCase):
    @needs_root
    def test_a_listener_whose_process_cannot_be_seen_is_not_called_free(self) -> None:
        port = quiet_window(1, test=self)[0]
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", port))
        listener.listen(8)
        leave_time_wait(listener)  # as a test's client leaves behind
        for args in ([str(port)], [str(port), "--json"]):
            outcome = run_as(OTHER_UID, who, *args)
            self.assertEqual(outcome.how, "returned", outcome)
            code, out = outcome.value
            self.assertEqual(code, 1, out)
            if "--json" in args:
                data = json.loads(out)
                self.assertFalse(data["free"])
                self.assertTrue(data["hidden_holder"])
                continue
            self.assertNotIn("held by no process", out)
            self.assertNotIn("can bind it now", out)
            self.assertIn(f"port {port} is held by a process you cannot see", out)
            self.assertIn("listens on it", out)
            self.assertIn("another user", out)
            self.assertIn(f"as root: sudo python -m harness who {port}", out)
        # Root sees the process itself (this one: asked from another process).
        proc = subprocess.run([sys.executable, "-m", "harness", "who", str(port)],
                              env=python_env(), stdout=subprocess.PIPE, timeout=HANG,
                              universal_newlines=True)
        self.assertEqual(proc.returncode, 1)
        self.assertIn(f"port {port} is held by:\n  pid {os.getpid()} ", proc.stdout)
        self.assertNotIn("cannot see", proc.stdout)

    @needs_root
    def test_a_lease_whose_holder_cannot_be_seen_is_not_called_free(self) -> None:
        lease = PortAllocator(quiet_window(1, test=self)).acquire()
        self.addCleanup(lease.release)
        outcome = run_as(OTHER_UID, who, str(lease.port))
        self.assertEqual(outcome.how, "returned", outcome)
        code, out = outcome.value
        self.assertEqual(code, 1, out)
        self.assertNotIn("is free", out)
        self.assertIn(f"port {lease.port} is leased by harness to a process you cannot see", out)
        self.assertIn("root", out)


@unittest.skipUnless(own_pid_namespace() is not None, "PID namespaces are Linux's")
@unittest.skipUnless(_procinfo.HAVE_PROC or _procinfo.HAVE_PSUTIL, "holders not visible")
class WhoAcrossPidNamespacesTest(ChildProcessesMixin, unittest.TestCase):
    def test_a_server_whose_runner_is_in_another_namespace_is_not_an_orphan(self) -> None:
        own = own_pid_namespace()
        assert own is not None
        runner = ProcessId(4242, "777", own + 1)  # a runner in a container: pid 4242 there
        env = python_env()
        env[_marker.OWNER_ENV] = str(runner)
        code = ("import socket, sys\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n"
                "print(s.getsockname()[1], flush=True)\nsys.stdin.read()\n")
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, universal_newlines=True)
        self.procs.append(proc)
        port = int(proc.stdout.readline())
        status, out = who(str(port))
        self.assertEqual(status, 1, out)
        self.assertIn("started by harness: yes, for test runner pid 4242 in another PID "
                      "namespace", out)
        self.assertNotIn("orphan", out)
        status, out = who(str(port), "--json")
        holders: List[dict] = json.loads(out)["holders"]
        self.assertEqual([(h["pid"], h["owner"], h["owner_alive"], h["runner"])
                          for h in holders],
                         [(proc.pid, str(runner), None, "other namespace")])


if __name__ == "__main__":
    unittest.main()
