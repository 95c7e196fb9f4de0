"""``python -m harness reap``: a real orphan is stopped; nothing else is touched.

The orphan is made the way a crashed test run makes one: a "runner" child
starts a server (its own session, HARNESS_OWNER = the runner's identity
token) and is then SIGKILLed.  The real reaps are limited with
``--runner <that pid>`` so two copies of this test running at once (or
other people's orphans on the machine) cannot take each other's orphans;
the dry run is unfiltered.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
from typing import Tuple

from _support import ROOT, ChildProcessesMixin, python_env

from harness import is_port_free
from harness._os import procinfo as _procinfo
from harness._server import marker as _marker

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

HANG = 60  # generous hang-catcher for each command

SERVER = r"""
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
sys.stdout.close()
while True:
    conn, _ = s.accept()
    conn.close()
"""

# The runner: starts the server marked with its own token, reports, then waits to be killed.
RUNNER = r"""
import os, subprocess, sys
from harness._server import marker as _marker
env = dict(os.environ)
env[_marker.OWNER_ENV] = _marker.owner_token()
env[_marker.SERVER_ID_ENV] = _marker.new_server_id()
server = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=env, stdout=subprocess.PIPE,
                          start_new_session=True, universal_newlines=True)
port = server.stdout.readline().strip()
print(server.pid, port, _marker.owner_token(), flush=True)
sys.stdin.read()
"""

SLEEPER = "import sys; sys.stdin.read()"  # lives until its stdin closes


def _clean_env(**extra: str) -> dict:
    env = python_env()
    env.pop(_marker.OWNER_ENV, None)
    env.pop(_marker.SERVER_ID_ENV, None)
    env.update(extra)
    return env


def reap(*args: str, env: dict = None) -> Tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "harness", "reap"] + list(args),
                          cwd=ROOT, env=env or _clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=HANG)
    return proc.returncode, proc.stdout, proc.stderr


@unittest.skipUnless(_procinfo.HAVE_PROC or _procinfo.HAVE_PSUTIL,
                     "reap needs /proc or psutil to see processes")
@unittest.skipUnless(hasattr(os, "killpg"), "POSIX only")
class ReapTest(ChildProcessesMixin, unittest.TestCase):
    def spawn(self, code: str, env: dict, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code] + list(args), env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                universal_newlines=True)
        self.procs.append(proc)
        return proc

    def make_orphan(self) -> Tuple[int, str, int, str]:
        """A server whose runner was SIGKILLed: (server pid, server token, port, runner token)."""
        runner = self.spawn(RUNNER, _clean_env(), SERVER)
        line = runner.stdout.readline().split()
        self.assertEqual(len(line), 3, "the runner did not report its server")
        server_pid, port, runner_token = int(line[0]), int(line[1]), line[2]
        server_token = _procinfo.identity(server_pid)
        self.assertIsNotNone(server_token)
        # If the test fails before reap does its job, the server must still go.
        self.addCleanup(self._kill_token, server_token)
        runner.kill()
        runner.wait(HANG)
        self.assertFalse(_procinfo.is_alive(runner_token))
        self.assertTrue(_procinfo.is_alive(server_token),
                        "the orphan server must outlive its runner")
        return server_pid, server_token, port, runner_token

    def _kill_token(self, token: str) -> None:
        if _procinfo.is_alive(token):
            os.kill(int(token.split(":")[0]), signal.SIGKILL)

    def private_dir(self, owner: str, prefix: str = _marker.TEMP_PREFIX) -> str:
        path = tempfile.mkdtemp(prefix=prefix)
        self.addCleanup(shutil.rmtree, path, True)
        with open(os.path.join(path, _marker.OWNER_FILE), "w") as f:
            f.write(owner + "\n")
        with open(os.path.join(path, "server.log"), "w") as f:
            f.write("log\n")
        return path

    def test_orphan_is_stopped_and_its_dir_removed_others_left_alone(self) -> None:
        server_pid, server_token, port, dead_runner = self.make_orphan()
        runner_pid = dead_runner.split(":")[0]
        me = _marker.owner_token()
        # A server whose runner (this test) is alive, and a process without the marker.
        live_owned = self.spawn(SLEEPER, _clean_env(**{_marker.OWNER_ENV: me}))
        unmarked = self.spawn(SLEEPER, _clean_env())
        live_owned_token = _procinfo.identity(live_owned.pid)
        unmarked_token = _procinfo.identity(unmarked.pid)
        dead_dir = self.private_dir(dead_runner)
        live_dir = self.private_dir(me)
        # A harness-* symlink to a dead runner's directory must not be followed.
        target = self.private_dir(dead_runner, prefix="reaptest-target-")
        link = tempfile.mktemp(prefix=_marker.TEMP_PREFIX)
        os.symlink(target, link)
        self.addCleanup(os.unlink, link)

        code, out, err = reap("--dry-run")
        self.assertEqual(code, 1, f"dry run with an orphan must exit 1\n{out}\n{err}")
        self.assertIn(f"would stop: pid {server_pid} ", out)
        self.assertIn(f"would remove: temp dir {dead_dir} ", out)
        self.assertTrue(_procinfo.is_alive(server_token), "a dry run must not stop anything")
        self.assertTrue(os.path.isdir(dead_dir), "a dry run must not remove anything")
        for untouchable in (str(live_owned.pid), str(unmarked.pid)):
            self.assertNotIn(f"pid {untouchable} ", out)
        self.assertNotIn(live_dir, out)
        self.assertNotIn(link, out)

        code, out, err = reap("--runner", runner_pid)
        self.assertEqual(code, 0, f"reap failed\n{out}\n{err}")
        self.assertIn(f"stopped: pid {server_pid} ", out)
        self.assertIn(f"runner pid {runner_pid}, which is gone", out)
        self.assertIn(f"removed: temp dir {dead_dir} ", out)
        self.assertFalse(_procinfo.is_alive(server_token), "the orphan server still runs")
        self.assertTrue(is_port_free(port), f"port {port} of the reaped server is still taken")
        self.assertFalse(os.path.exists(dead_dir))
        # Left alone: a live runner's server, an unmarked process, a live runner's
        # dir, the symlink and the directory it points to.
        self.assertTrue(_procinfo.is_alive(live_owned_token), "reap stopped a live runner's server")
        self.assertTrue(_procinfo.is_alive(unmarked_token), "reap stopped an unmarked process")
        self.assertTrue(os.path.isfile(os.path.join(live_dir, "server.log")))
        self.assertTrue(os.path.islink(link))
        self.assertTrue(os.path.isfile(os.path.join(target, "server.log")))

        code, out, err = reap("--runner", runner_pid)
        self.assertEqual((code, out.strip()), (0, "nothing to reap: no harness server, temp dir "
                                                   "or lease file of a dead test runner"))

    def test_json_lists_what_was_done(self) -> None:
        server_pid, server_token, _, dead_runner = self.make_orphan()
        dead_dir = self.private_dir(dead_runner)
        code, out, err = reap("--runner", dead_runner.split(":")[0], "--json")
        self.assertEqual(code, 0, err)
        data = json.loads(out)
        self.assertFalse(data["dry_run"])
        self.assertEqual([(p["pid"], p["result"]) for p in data["processes"]],
                         [(server_pid, "stopped")])
        self.assertEqual(data["processes"][0]["owner"], dead_runner)
        self.assertEqual([(d["path"], d["result"]) for d in data["temp_dirs"]],
                         [(dead_dir, "removed")])
        self.assertFalse(_procinfo.is_alive(server_token))

    def test_server_ignoring_sigterm_is_killed(self) -> None:
        stubborn = ("import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SERVER)
        runner = self.spawn(RUNNER, _clean_env(), stubborn)
        server_pid, port, runner_token = runner.stdout.readline().split()
        server_token = _procinfo.identity(int(server_pid))
        self.addCleanup(self._kill_token, server_token)
        runner.kill()
        runner.wait(HANG)
        code, out, err = reap("--runner", runner_token.split(":")[0], "--grace", "0.2")
        self.assertEqual(code, 0, f"{out}\n{err}")
        self.assertIn(f"stopped: pid {server_pid} ", out)
        self.assertFalse(_procinfo.is_alive(server_token))

    @unittest.skipIf(fcntl is None, "file leases need fcntl")
    def test_stale_lease_files_removed_held_ones_kept(self) -> None:
        lease_dir = tempfile.mkdtemp(prefix="reaptest-leases-")
        self.addCleanup(shutil.rmtree, lease_dir, True)
        stale = os.path.join(lease_dir, "port-40001.lock")
        held = os.path.join(lease_dir, "port-40002.lock")
        other = os.path.join(lease_dir, "notes.txt")
        for path in (stale, held, other):
            open(path, "w").close()
        fd = os.open(held, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live holder: this test
        env = _clean_env(HARNESS_LEASE_DIR=lease_dir)
        code, out, _ = reap("--dry-run", "--runner", "1", env=env)
        self.assertEqual(code, 1)
        self.assertIn(f"would remove: lease file {stale} ", out)
        self.assertTrue(os.path.exists(stale))
        code, out, err = reap("--runner", "1", env=env)
        self.assertEqual(code, 0, err)
        self.assertIn(f"removed: lease file {stale} ", out)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(held), "a lease file still locked by its holder was removed")
        self.assertTrue(os.path.exists(other), "reap removed a file that is not a lease")
        self.assertNotIn(held, out)

    def test_bad_arguments_exit_2(self) -> None:
        for args in (["--grace", "soon"], ["--grace=-1"], ["--grace", "inf"], ["--runner", "me"],
                     ["--bogus"]):
            code, out, err = reap(*args)
            self.assertEqual(code, 2, args)
            self.assertIn("usage:", err)


if __name__ == "__main__":
    unittest.main()
