"""``_server/reaper.py``: what reap finds and what it does with it, in this process.

The command (``python -m harness reap``: its arguments, report and exit
code, against a real orphan whose runner was SIGKILLed) is tested in
``test_reap.py``.  Here the engine's functions are called directly, each
limited to what the test made (a dead runner's pid, a private temp dir, a
private lease directory), so nothing another test left running is touched.
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
from typing import Optional
from unittest import mock

from _support import ChildProcessesMixin, python_env

from harness._os import leases
from harness._os import procinfo as _procinfo
from harness._os.identity import ProcessId, own_pid_namespace
from harness._server import marker as _marker
from harness._server import reaper
from harness._server.reaper import Action, Runner

HANG = 60
# Says it runs (its environment, and so its marker, is its own from then on),
# then lives until its stdin closes.
SLEEPER = "import sys; print('up', flush=True); sys.stdin.read()"
needs_flock = unittest.skipUnless(leases.HAVE_FLOCK, "file leases need fcntl.flock")
sees_processes = unittest.skipUnless(_procinfo.HAVE_PROC or _procinfo.HAVE_PSUTIL,
                                     "the engine needs /proc or psutil to see processes")


def dead_runner(pidns: Optional[int] = None) -> ProcessId:
    """The identity of a runner that is gone: a pid that exited, with a start time it never had."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(HANG)
    return ProcessId(gone.pid, "12345", pidns if pidns is not None else own_pid_namespace())


class ActionTest(unittest.TestCase):
    def test_only_what_could_not_be_done_fails(self) -> None:
        self.assertEqual({a for a in Action if a.failed},
                         {Action.STILL_RUNNING, Action.NOT_REMOVED})

    def test_a_record_says_what_was_done_or_would_be(self) -> None:
        entry = reaper.LeaseFile(path="/leases/port-4001.lock")
        self.assertEqual(entry.describe(dry_run=True),
                         "would remove: lease file /leases/port-4001.lock (no live holder)")
        self.assertEqual(entry.to_json(), {"path": "/leases/port-4001.lock"})
        entry.settle(Action.NOT_REMOVED, "Permission denied")
        self.assertEqual(entry.result, "not removed: Permission denied")
        self.assertEqual(entry.to_json()["result"], "not removed: Permission denied")
        self.assertTrue(entry.describe(dry_run=False).startswith("not removed: Permission denied"))


@sees_processes
class RunnerStateTest(unittest.TestCase):
    def test_this_process_is_alive(self) -> None:
        self.assertIs(reaper.runner_state(_marker.owner_id()), Runner.ALIVE)

    def test_a_runner_that_exited_is_gone(self) -> None:
        self.assertIs(reaper.runner_state(dead_runner()), Runner.GONE)

    def test_a_pid_without_a_start_time_is_gone_only_if_no_process_has_it(self) -> None:
        gone = dead_runner()
        self.assertIs(reaper.runner_state(ProcessId(gone.pid, None)), Runner.GONE)
        self.assertIs(reaper.runner_state(ProcessId(os.getpid(), None)), Runner.ALIVE)

    @unittest.skipIf(own_pid_namespace() is None, "PID namespaces are Linux's")
    def test_a_runner_in_another_pid_namespace_cannot_be_judged(self) -> None:
        own = own_pid_namespace()
        assert own is not None
        self.assertIs(reaper.runner_state(dead_runner(pidns=own + 1)), Runner.OTHER_NAMESPACE)


@sees_processes
@unittest.skipUnless(hasattr(os, "killpg"), "POSIX only")
class OrphanTest(ChildProcessesMixin, unittest.TestCase):
    def spawn_marked(self, owner: ProcessId) -> subprocess.Popen:
        env = python_env()
        env[_marker.OWNER_ENV] = str(owner)
        env[_marker.SERVER_ID_ENV] = _marker.new_server_id()
        proc = subprocess.Popen([sys.executable, "-c", SLEEPER], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, universal_newlines=True)
        self.procs.append(proc)
        # Before its exec, a child's environment is its parent's: no marker yet.
        self.assertEqual(proc.stdout.readline(), "up\n", "the marked process did not start")
        return proc

    def test_a_dead_runners_process_is_found_and_stopped(self) -> None:
        runner = dead_runner()
        orphan = self.spawn_marked(runner)
        live = self.spawn_marked(_marker.owner_id())  # its runner (this test) lives
        identity = _procinfo.identity(orphan.pid)
        assert identity is not None
        found = reaper.find_orphans(runner.pid)
        self.assertEqual([o.process for o in found], [identity])
        self.assertEqual(found[0].owner, runner)
        self.assertIs(found[0].action, Action.TO_DO)
        self.assertEqual(reaper.find_orphans(runner.pid + 1 if runner.pid > 1 else 2), [])
        reaper.stop_orphans(found, grace=5.0)
        self.assertIs(found[0].action, Action.STOPPED)
        self.assertEqual(orphan.wait(HANG), -signal.SIGTERM)
        self.assertIsNone(live.poll(), "a live runner's process was stopped")

    @unittest.skipIf(own_pid_namespace() is None, "PID namespaces are Linux's")
    def test_a_process_of_a_runner_in_another_namespace_is_left_alone(self) -> None:
        own = own_pid_namespace()
        assert own is not None
        runner = dead_runner(pidns=own + 1)
        process = self.spawn_marked(runner)
        found = reaper.find_orphans(runner.pid)
        self.assertEqual([o.process.pid for o in found], [process.pid])
        self.assertIs(found[0].action, Action.LEFT_ALONE)
        self.assertEqual(found[0].detail, reaper.OTHER_NAMESPACE)
        reaper.stop_orphans(found, grace=5.0)
        self.assertIs(found[0].action, Action.LEFT_ALONE)
        self.assertIsNone(process.poll(), "a container's server was stopped")


class TempDirTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="reapertest-tmp-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        patcher = mock.patch.object(tempfile, "tempdir", self.tmp)
        patcher.start()
        self.addCleanup(patcher.stop)

    def harness_dir(self, owner: Optional[str], age: float = 0.0) -> str:
        path = tempfile.mkdtemp(prefix=_marker.TEMP_PREFIX, dir=self.tmp)
        if owner is not None:
            with open(os.path.join(path, _marker.OWNER_FILE), "w") as f:
                f.write(owner)
        if age:
            then = time.time() - age
            os.utime(path, (then, then))
        return path

    @sees_processes
    def test_a_dead_runners_dir_is_removed_a_live_ones_kept(self) -> None:
        runner = dead_runner()
        dead = self.harness_dir(str(runner))
        live = self.harness_dir(_marker.owner_token())
        found = reaper.find_temp_dirs(runner.pid)
        self.assertEqual([(d.path, d.owner) for d in found], [(dead, runner)])
        reaper.remove_temp_dirs(found)
        self.assertIs(found[0].action, Action.REMOVED)
        self.assertFalse(os.path.exists(dead))
        self.assertTrue(os.path.isdir(live))

    def test_an_ownerless_dir_waits_out_the_grace_period(self) -> None:
        young = self.harness_dir(None)
        old = self.harness_dir("", age=reaper.OWNERLESS_GRACE + 60)
        found = reaper.find_temp_dirs()
        self.assertEqual([(d.path, d.problem) for d in found], [(old, "its owner file is empty")])
        self.assertEqual(reaper.find_temp_dirs(runner=4242), [], "it is no one runner's")
        reaper.remove_temp_dirs(found)
        self.assertFalse(os.path.exists(old))
        self.assertTrue(os.path.isdir(young))

    def test_an_owner_file_that_is_a_fifo_is_not_read(self) -> None:
        path = self.harness_dir(None)
        os.mkfifo(os.path.join(path, _marker.OWNER_FILE))
        then = time.time() - reaper.OWNERLESS_GRACE - 60
        os.utime(path, (then, then))
        found = reaper.find_temp_dirs()  # must not block opening the FIFO
        self.assertEqual([(d.path, d.problem) for d in found],
                         [(path, "its owner file is not a regular file")])


@needs_flock
class StaleLeaseTest(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="reapertest-leases-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        patcher = mock.patch.dict(os.environ, {"HARNESS_LEASE_DIR": self.directory})
        patcher.start()
        self.addCleanup(patcher.stop)

    def lock_file(self, port: int) -> str:
        path = leases.lock_path(self.directory, port)
        open(path, "w").close()
        return path

    def test_unheld_lock_files_are_removed_held_ones_and_other_files_kept(self) -> None:
        stale = self.lock_file(40001)
        held = leases.take(40002, self.directory)
        assert isinstance(held, leases.Lease)
        self.addCleanup(held.close)
        notes = os.path.join(self.directory, "notes.txt")
        open(notes, "w").close()
        found = reaper.find_stale_leases()
        self.assertEqual([(f.path, f.action) for f in found], [(stale, Action.TO_DO)])
        reaper.remove_stale_leases(found)
        self.assertIs(found[0].action, Action.REMOVED)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(leases.lock_path(self.directory, 40002)))
        self.assertTrue(os.path.exists(notes))

    def test_a_lock_file_leased_again_before_its_removal_is_left_alone(self) -> None:
        self.lock_file(40003)
        found = reaper.find_stale_leases()
        again = leases.take(40003, self.directory)  # a runner leases it meanwhile
        assert isinstance(again, leases.Lease)
        self.addCleanup(again.close)
        reaper.remove_stale_leases(found)
        self.assertIs(found[0].action, Action.HELD_AGAIN)
        self.assertFalse(found[0].action.failed)
        self.assertTrue(os.path.exists(found[0].path))

    def test_a_lock_file_removed_before_its_removal_is_gone(self) -> None:
        path = self.lock_file(40004)
        found = reaper.find_stale_leases()
        os.unlink(path)
        reaper.remove_stale_leases(found)
        self.assertIs(found[0].action, Action.GONE)

    def test_a_planted_fifo_is_listed_as_left_alone(self) -> None:
        path = leases.lock_path(self.directory, 40005)
        os.mkfifo(path)
        found = reaper.find_stale_leases()
        self.assertEqual([(f.path, f.action) for f in found], [(path, Action.LEFT_ALONE)])
        self.assertIn("FIFO", found[0].detail)
        reaper.remove_stale_leases(found)
        self.assertIs(found[0].action, Action.LEFT_ALONE)
        self.assertTrue(os.path.exists(path))


if __name__ == "__main__":
    unittest.main()
