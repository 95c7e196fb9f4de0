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
import time
import unittest
from typing import Tuple
from unittest import mock

from _other_user import IS_ROOT
from _support import ROOT, ChildProcessesMixin, python_env

from harness import _wait, is_port_free
from harness._os import kill as _kill
from harness._os import procinfo as _procinfo
from harness._os.identity import ProcessId, own_pid_namespace
from harness._server import marker as _marker
from harness._server import reaper as _reaper

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

# Says it runs (its environment, and so its marker, is its own from then on),
# then lives until its stdin closes.
SLEEPER = "import sys; print('up', flush=True); sys.stdin.read()"

# A runner in a container: as RUNNER, and it also names its server's id.
NS_RUNNER = RUNNER.replace("print(server.pid, port, _marker.owner_token(), flush=True)",
                           "print(server.pid, port, _marker.owner_token(),\n"
                           "      env[_marker.SERVER_ID_ENV], flush=True)")


def _clean_env(**extra: str) -> dict:
    env = python_env()
    env.pop(_marker.OWNER_ENV, None)
    env.pop(_marker.SERVER_ID_ENV, None)
    env.update(extra)
    return env


def _pid_of(token: str) -> int:
    process = ProcessId.parse(token)
    assert process is not None, f"not a process id: {token!r}"
    return process.pid


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
        if code == SLEEPER:  # before its exec, a child's environment is its parent's
            self.assertEqual(proc.stdout.readline(), "up\n", "the sleeper did not start")
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

    def _kill_token(self, token: "str | ProcessId") -> None:
        process = ProcessId.coerce(token)
        if process is not None and _procinfo.is_alive(process):
            os.kill(process.pid, signal.SIGKILL)

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
        runner_pid = str(_pid_of(dead_runner))
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
        code, out, err = reap("--runner", str(_pid_of(dead_runner)), "--json")
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
        code, out, err = reap("--runner", str(_pid_of(runner_token)), "--grace", "0.2")
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

    @unittest.skipIf(own_pid_namespace() is None, "PID namespaces are Linux's")
    def test_what_a_runner_in_another_pid_namespace_started_is_left_alone(self) -> None:
        # The marker of a runner in a container names a pid of *its* namespace:
        # that no process here has that pid (and start time) proves nothing.
        own = own_pid_namespace()
        assert own is not None
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait(HANG)
        runner = ProcessId(gone.pid, "12345", own + 1)
        server = self.spawn(SLEEPER, _clean_env(**{_marker.OWNER_ENV: str(runner)}))
        server_id = _procinfo.identity(server.pid)
        directory = self.private_dir(str(runner))

        code, out, err = reap("--dry-run")
        self.assertEqual(code, 0 if "would " not in out else 1, out + err)
        self.assertIn(f"left alone: pid {server.pid} ", out)
        self.assertIn(f"left alone: temp dir {directory}", out)
        self.assertIn("its test runner is in another PID namespace", out)
        self.assertNotIn(f"would stop: pid {server.pid} ", out)

        code, out, err = reap("--runner", str(gone.pid), "--json")
        self.assertEqual(code, 0, out + err)
        data = json.loads(out)
        self.assertEqual([(p["pid"], p["owner"], p["result"]) for p in data["processes"]],
                         [(server.pid, str(runner),
                           "left alone: its test runner is in another PID namespace")])
        self.assertEqual([d["path"] for d in data["temp_dirs"]], [directory])
        self.assertTrue(_procinfo.is_alive(server_id), "reap stopped a container's server")
        self.assertTrue(os.path.isfile(os.path.join(directory, "server.log")))

    @unittest.skipUnless(IS_ROOT and shutil.which("unshare"), "needs root and unshare")
    def test_a_live_runner_in_a_container_keeps_its_server(self) -> None:
        # For real: the runner is pid 1 of a new PID namespace (with its own
        # /proc); reap runs outside it, where pid 1 is a different process.
        runner = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
             sys.executable, "-c", NS_RUNNER, SERVER],
            env=_clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, universal_newlines=True)
        self.procs.append(runner)
        line = runner.stdout.readline().split()
        if len(line) != 4:
            runner.kill()
            self.skipTest(f"unshare could not make a PID namespace: {runner.stderr.read()}")
        ns_server_pid, port, owner, server_marker = line
        runner_id = ProcessId.parse(owner)
        assert runner_id is not None
        self.assertNotEqual(runner_id.pidns, own_pid_namespace())
        servers = _kill.find_marked(_marker.SERVER_ID_ENV, server_marker)
        self.assertEqual(len(servers), 1, "the server is not visible from outside")
        server = servers[0]
        self.addCleanup(self._kill_token, str(server))

        code, out, err = reap("--dry-run")
        self.assertIn(f"left alone: pid {server.pid} ", out, err)
        self.assertIn("its test runner is in another PID namespace", out)
        code, out, err = reap("--runner", str(runner_id.pid))
        self.assertEqual(code, 0, out + err)
        self.assertTrue(_procinfo.is_alive(server), "reap killed a live container's server")
        self.assertFalse(is_port_free(int(port)), "the container's server lost its port")
        runner.stdin.close()  # the runner (the namespace's init) exits: its server goes too
        runner.wait(HANG)
        deadline = _wait.Deadline(HANG)
        for pause in deadline.polls():
            if not _procinfo.is_alive(server):
                break
            _wait.pause(pause)
        self.assertFalse(_procinfo.is_alive(server))

    def test_dirs_without_a_usable_owner_file_are_removed_after_a_grace_period(self) -> None:
        # A full TMPDIR leaves a dir whose owner file is empty; a runner killed
        # while creating one leaves it without the file.  Within the grace
        # period a dir may still be being created: it is left alone.
        tmp = tempfile.mkdtemp(prefix="reaptest-tmp-")
        self.addCleanup(shutil.rmtree, tmp, True)
        old = time.time() - 600  # well past the grace period (a minute)

        def harness_dir(owner: "str | None", age: "float | None" = old, name: str = "") -> str:
            path = (os.path.join(tmp, name) if name
                    else tempfile.mkdtemp(prefix=_marker.TEMP_PREFIX, dir=tmp))
            os.makedirs(path, exist_ok=True)
            if owner is not None:
                with open(os.path.join(path, _marker.OWNER_FILE), "w") as f:
                    f.write(owner)
            if age is not None:
                os.utime(path, (age, age))
            return path

        empty = harness_dir("")
        missing = harness_dir(None)
        garbage = harness_dir("not a process id\n")
        fresh = harness_dir("", age=None)
        not_made_by_harness = [harness_dir(None, name="harness-leases"),
                               harness_dir(None, name="harness-test-shared-x1")]

        code, out, err = reap("--dry-run", env=_clean_env(TMPDIR=tmp))
        self.assertEqual(code, 1, out + err)
        self.assertIn(f"would remove: temp dir {empty} (its owner file is empty", out)
        self.assertIn(f"would remove: temp dir {missing} (it has no owner file", out)
        self.assertIn(f"would remove: temp dir {garbage} (its owner file names no process", out)
        for kept in [fresh] + not_made_by_harness:
            self.assertNotIn(kept, out)
        code, out, err = reap("--dry-run", "--runner", "4242", env=_clean_env(TMPDIR=tmp))
        self.assertNotIn(empty, out, "a dir of no known runner is not one runner's")

        # The removal itself, in this process: an unfiltered real reap would
        # also stop orphans that other tests running at the same time own.
        with mock.patch.object(tempfile, "tempdir", tmp):
            found = _reaper.find_temp_dirs()
            _reaper.remove_temp_dirs(found)
        self.assertEqual(sorted(d.path for d in found), sorted([empty, missing, garbage]))
        self.assertEqual({d.to_json()["result"] for d in found}, {"removed"})
        for path in (empty, missing, garbage):
            self.assertFalse(os.path.exists(path))
        for path in [fresh] + not_made_by_harness:
            self.assertTrue(os.path.isdir(path))

    def test_bad_arguments_exit_2(self) -> None:
        for args in (["--grace", "soon"], ["--grace=-1"], ["--grace", "inf"], ["--runner", "me"],
                     ["--bogus"]):
            code, out, err = reap(*args)
            self.assertEqual(code, 2, args)
            self.assertIn("usage:", err)


if __name__ == "__main__":
    unittest.main()
