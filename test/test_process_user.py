"""``ServerProcess(user=...)`` and ``ServerProcess(stop_signal=...)``.

``user=`` runs the server as another user (root only): its private dir, its
TMPDIR and its Unix socket's dir are that user's, and it runs with that
user's uid and gid and no supplementary groups.  ``stop_signal=`` is the
first signal of a stop, and of the keeper's stop when the runner dies.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from _other_user import OTHER_UID, needs_root, run_as
from _support import python_env

from harness import ServerProcess
from harness.errors import ServerStartError

HANG = 30.0
# A Python the other user can run: the suite's own may live under a private
# home (a venv in /root); the system's is readable by everyone.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or ""

WHOAMI_APP = r"""
import json, os, http.server, tempfile
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                           "euid": os.geteuid(), "tmp": tempfile.gettempdir()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
sock = os.environ.get("SOCKET_PATH")
if sock:
    import socketserver
    class U(socketserver.UnixStreamServer):
        def get_request(self):
            request, _ = super().get_request()
            return request, ("local", 0)
    U(sock, H).serve_forever()
else:
    http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
"""

SIGNAL_APP = r"""
import signal, sys, time
def said(signum, frame):
    print("got signal", signum, flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, said)
signal.signal(signal.SIGTERM, said)
print("handlers set", flush=True)
while True:
    time.sleep(1)
"""


def read_text(path: str) -> str:
    """What the file holds, or "" while it does not exist."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _say_ready(server: ServerProcess) -> bool:
    return "handlers set" in server.output()


@needs_root
@unittest.skipUnless(SYSTEM_PYTHON, "no /usr/bin/python3 for the other user to run")
class UserTest(unittest.TestCase):
    def whoami(self, **kwargs) -> dict:
        with ServerProcess(argv=[SYSTEM_PYTHON, "-c", WHOAMI_APP], health="/", **kwargs) as server:
            facts = server.get("/").json()
            private = os.path.dirname(server.log_path)
            status = os.stat(private)
            facts["dir_uid"], facts["dir_mode"] = status.st_uid, status.st_mode & 0o777
            facts["private"] = private
        self.assertFalse(os.path.exists(private), "the private dir outlived stop()")
        return facts

    def test_runs_as_nobody(self) -> None:
        import pwd
        nobody = pwd.getpwnam("nobody")
        facts = self.whoami(user="nobody")
        self.assertEqual((facts["uid"], facts["euid"], facts["gid"]),
                         (nobody.pw_uid, nobody.pw_uid, nobody.pw_gid))
        self.assertEqual(facts["groups"], [], "supplementary groups are dropped")
        self.assertEqual((facts["dir_uid"], facts["dir_mode"]), (nobody.pw_uid, 0o700))
        self.assertEqual(facts["tmp"], facts["private"], "its TMPDIR is its own private dir")

    def test_runs_as_a_uid_without_passwd_entry(self) -> None:
        facts = self.whoami(user=OTHER_UID)
        self.assertEqual((facts["uid"], facts["gid"]), (OTHER_UID, OTHER_UID))
        self.assertEqual(facts["dir_uid"], OTHER_UID)

    def test_unix_socket_server_as_another_user(self) -> None:
        facts = self.whoami(user=OTHER_UID, unix_socket=True)
        self.assertEqual(facts["uid"], OTHER_UID)

    def test_a_third_user_cannot_enter_the_servers_dir(self) -> None:
        with ServerProcess(argv=[SYSTEM_PYTHON, "-c", WHOAMI_APP], health="/", user="nobody",
                           unix_socket=True) as server:
            outcome = run_as(OTHER_UID, os.listdir, os.path.dirname(server.socket_path))
        self.assertEqual((outcome.how, outcome.error), ("raised", "PermissionError"), outcome)

    def test_a_missing_program_is_a_start_error_not_a_hang(self) -> None:
        with self.assertRaises(ServerStartError) as caught:
            ServerProcess(argv=["/nonexistent/program"], user="nobody").start()
        self.assertIn("/nonexistent/program", str(caught.exception))


class UserArgumentTest(unittest.TestCase):
    def test_bad_values_name_the_argument(self) -> None:
        for bad, kind in ((True, TypeError), (1.5, TypeError), (-1, ValueError),
                          ("no-such-user-here", ValueError)):
            with self.subTest(bad=bad), self.assertRaises(kind) as caught:
                ServerProcess(argv=["true"], user=bad)
            self.assertIn("user", str(caught.exception))

    def test_oneself_is_no_change(self) -> None:
        server = ServerProcess(argv=["true"], user=os.geteuid())
        self.assertIsNone(server.spec.uid)

    @needs_root
    def test_only_root_may_run_a_server_as_someone_else(self) -> None:
        def construct() -> str:
            try:
                ServerProcess(argv=["true"], user=0)
            except ValueError as exc:
                return str(exc)
            return "accepted"
        outcome = run_as(OTHER_UID, construct)
        self.assertEqual(outcome.how, "returned", outcome)
        self.assertIn("needs root", outcome.value)


class StopSignalTest(unittest.TestCase):
    def test_bad_values_name_the_argument(self) -> None:
        for bad, kind in (("SIGINT", TypeError), (0, ValueError), (signal.SIGSTOP, ValueError),
                          (100000, ValueError)):
            with self.subTest(bad=bad), self.assertRaises(kind) as caught:
                ServerProcess(argv=["true"], stop_signal=bad)
            self.assertIn("stop_signal", str(caught.exception))

    def test_stop_sends_the_stop_signal_first(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            with self.subTest(sig=sig):
                server = ServerProcess(argv=[sys.executable, "-c", SIGNAL_APP.replace(
                    "signal.SIGTERM, said", f"{int(sig)}, said")], listens=False,
                    health=_say_ready, stop_signal=sig)
                with server:
                    pass
                self.assertIn(f"got signal {int(sig)}", server.output())
                self.assertEqual(server.returncode, 0)

    def test_a_killed_runners_keeper_sends_the_stop_signal(self) -> None:
        out = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, out, True)
        log = os.path.join(out, "signals")
        app = SIGNAL_APP.replace('print("got signal", signum, flush=True)',
                                 f'open({log!r}, "a").write("got %d\\n" % signum)')
        runner = (f"import signal, sys, threading\n"
                  f"from harness import ServerProcess\n"
                  f"server = ServerProcess(argv=[sys.executable, '-c', {app!r}], listens=False,"
                  f" health=lambda s: 'handlers set' in s.output(),"
                  f" stop_signal=signal.SIGINT).start()\n"
                  f"print(server.pid, flush=True)\n"
                  f"threading.Event().wait()\n")
        proc = subprocess.Popen([sys.executable, "-c", runner], env=python_env(),
                                stdout=subprocess.PIPE, universal_newlines=True)
        self.addCleanup(proc.wait)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.addCleanup(proc.stdout.close)
        pid = int(proc.stdout.readline())
        proc.kill()
        deadline = time.monotonic() + HANG
        # The handler's open() creates the file before its write: wait for the line's end.
        while time.monotonic() < deadline and not read_text(log).endswith("\n"):
            time.sleep(0.01)
        self.assertEqual(read_text(log), f"got {int(signal.SIGINT)}\n")
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.01)
        self.assertFalse(os.path.exists(f"/proc/{pid}"), "the server outlived its runner")


if __name__ == "__main__":
    unittest.main()
