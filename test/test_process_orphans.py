"""Nothing outlives its runner; nothing accumulates over many cycles."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock

from _process_helpers import OK_APP, NoLeftoversMixin, pid_alive, remove_kept, server_argv
from _support import ChildProcessesMixin, open_fds, python_env, spawn_python

from harness._os import procinfo as _procinfo
from harness._os.identity import ProcessId
from harness._server import supervisor
from harness.checks import HttpCheck
from harness.process import start_server

HANG = 30.0  # hang-catcher only; the real figures are in the report / benchmark

RUNNER = r'''
import json, os, signal, sys, threading
# A runner started in the background inherits SIGINT ignored; a test runner
# in a terminal has Python's default handler.  Be the latter.
signal.signal(signal.SIGINT, signal.default_int_handler)
from harness.process import start_server
from harness.checks import HttpCheck
SERVERS = {servers!r}
OK_APP = {ok_app!r}
OUT = {out!r}
servers = []

def launch():
    servers.append(start_server(argv=[sys.executable, SERVERS + "/escaping_children.py"],
                                health=HttpCheck()))
    app = ("import atexit\natexit.register(lambda: open({out!r} + '/clean-exit', 'w').close())\n"
           + OK_APP)
    servers.append(start_server(app, handoff=True))

# Started from a worker thread that then ends: a parent-death signal bound to
# that thread would kill the servers here already.
worker = threading.Thread(target=launch)
worker.start()
worker.join()
grandchildren = []
for line in servers[0].output().splitlines():
    if line.startswith("grandchildren"):
        grandchildren = [int(p) for p in line.split()[1:]]
pids = [s.pid for s in servers] + grandchildren
from harness._server import supervisor
print(json.dumps({{"pids": pids, "dirs": [os.path.dirname(s.log_path) for s in servers],
                  "zygotes": supervisor.running()}}), flush=True)
{then}
'''


def runner_code(then: str, out: str) -> str:
    return RUNNER.format(servers=os.path.dirname(server_argv("x")[1]), ok_app=OK_APP, out=out,
                         then=then)


def wait_dead(pids: list, seconds: float) -> list:
    """Pids still alive after up to ``seconds`` (polled: this is a test)."""
    end = time.monotonic() + seconds
    left = [p for p in pids if pid_alive(p)]
    while left and time.monotonic() < end:
        time.sleep(0.01)
        left = [p for p in left if pid_alive(p)]
    return left


def wait_gone(paths: list, seconds: float) -> list:
    """Paths still there after up to ``seconds`` (polled: this is a test)."""
    end = time.monotonic() + seconds
    while any(os.path.exists(p) for p in paths) and time.monotonic() < end:
        time.sleep(0.01)
    return [p for p in paths if os.path.exists(p)]


class RunnerDeathTest(unittest.TestCase):
    def setUp(self) -> None:
        self.out = tempfile.mkdtemp()
        self.addCleanup(self._cleanup_out)

    def _cleanup_out(self) -> None:
        for name in os.listdir(self.out):
            os.unlink(os.path.join(self.out, name))
        os.rmdir(self.out)

    def run_runner(self, then: str) -> tuple:
        proc = spawn_python(runner_code(then, self.out))
        self.addCleanup(proc.wait)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())  # runs first
        self.addCleanup(proc.stderr.close)
        self.addCleanup(proc.stdout.close)
        self.addCleanup(proc.stdin.close)
        line = proc.stdout.readline()
        if not line:
            self.fail("runner failed: " + proc.stderr.read())
        info = json.loads(line)
        pids = info["pids"]
        self.zygotes = info["zygotes"]
        self.assertEqual(len(pids), 4)
        self.assertTrue(all(pid_alive(p) for p in pids), "servers run while the runner lives")
        return proc, pids, info["dirs"]

    def test_sigkill_of_runner_leaves_no_survivor(self) -> None:
        proc, pids, dirs = self.run_runner("threading.Event().wait()")
        proc.kill()
        proc.wait()
        started = time.monotonic()
        left = wait_dead(pids, HANG)
        elapsed = time.monotonic() - started
        self.assertEqual(left, [], "servers (or escaped grandchildren) outlived a SIGKILLed runner")
        self.assertTrue(self.zygotes)
        self.assertEqual(wait_dead(self.zygotes, HANG), [], "a zygote outlived its runner")
        sys.stderr.write(f"[all dead {elapsed * 1000:.0f} ms after the runner's SIGKILL] ")
        # the zygote also removes the runner's temp dirs
        end = time.monotonic() + HANG
        while any(os.path.exists(d) for d in dirs) and time.monotonic() < end:
            time.sleep(0.01)
        self.assertEqual([d for d in dirs if os.path.exists(d)], [])

    def test_sigterm_of_runner_stops_servers_gracefully(self) -> None:
        proc, pids, dirs = self.run_runner("threading.Event().wait()")
        proc.terminate()
        self.assertEqual(proc.wait(HANG), -signal.SIGTERM, "the runner still dies by SIGTERM")
        self.assertEqual(wait_dead(pids, HANG), [])
        self.assertEqual(os.listdir(self.out), ["clean-exit"], "app server shut down gracefully")
        # The servers were started from a thread, so no signal handler was installed:
        # the zygote stopped them (gracefully) and removes the dirs right after.
        self.assertEqual(wait_gone(dirs, HANG), [])

    def test_sigint_of_runner_stops_servers(self) -> None:
        proc, pids, dirs = self.run_runner("threading.Event().wait()")
        proc.send_signal(signal.SIGINT)
        proc.wait(HANG)
        self.assertIn("KeyboardInterrupt", proc.stderr.read())
        self.assertEqual(wait_dead(pids, HANG), [])
        self.assertEqual(os.listdir(self.out), ["clean-exit"])
        self.assertFalse(any(os.path.exists(d) for d in dirs))

    def test_sigterm_chains_to_the_runners_own_handler(self) -> None:
        app = (f"import atexit\natexit.register(lambda: open({self.out!r} + '/clean-exit', "
               "'w').close())\n" + OK_APP)
        code = (
            "import os, signal, sys, threading\n"
            "def mine(sig, frame):\n"
            f"    open({self.out!r} + '/runner-handler', 'w').close()\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, mine)\n"
            "from harness.process import start_server\n"
            f"server = start_server({app!r})\n"
            "print(server.pid, flush=True)\n"
            "threading.Event().wait()\n")
        proc = spawn_python(code)
        self.addCleanup(proc.wait)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            self.addCleanup(stream.close)
        line = proc.stdout.readline()
        if not line:
            self.fail("runner failed: " + proc.stderr.read())
        pid = int(line)
        proc.terminate()
        self.assertEqual(proc.wait(HANG), 0, proc.stderr.read())
        self.assertEqual(wait_dead([pid], HANG), [])
        self.assertEqual(sorted(os.listdir(self.out)), ["clean-exit", "runner-handler"])

    def test_interpreter_exit_stops_forgotten_servers(self) -> None:
        proc, pids, dirs = self.run_runner("sys.stdin.readline()")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        self.assertEqual(proc.wait(HANG), 0)
        self.assertEqual(wait_dead(pids, HANG), [])
        self.assertFalse(any(os.path.exists(d) for d in dirs))
        self.assertEqual(os.listdir(self.out), ["clean-exit"])


FORKING_RUNNER = r'''
import os, sys
from harness.process import start_server
OK_APP = {ok_app!r}
with start_server(OK_APP) as parents:
    pid = os.fork()
    if pid == 0:  # a child as multiprocessing's fork makes: it may start servers of its own
        with start_server(OK_APP) as childs:
            code = 0 if childs.get("/").status == 200 else 1
        sys.stdout.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert parents.get("/").status == 200  # the parent's zygote still serves the parent
    print("child exit", os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode")
          else status >> 8, flush=True)
'''


@unittest.skipUnless(hasattr(os, "fork"), "needs fork")
class ForkedChildOfARunnerTest(unittest.TestCase):
    def test_a_forked_child_neither_uses_nor_warns_about_the_runners_launchers(self) -> None:
        # The child inherits the runner's launcher objects: they are not its
        # to wait for, and dropping them must not print "subprocess N is
        # still running" (it did, in every fork of a test process run with -W).
        env = python_env()
        env["PYTHONWARNINGS"] = "always::ResourceWarning"
        proc = subprocess.run([sys.executable, "-c", FORKING_RUNNER.format(ok_app=OK_APP)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=HANG)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("child exit 0", proc.stdout)
        self.assertNotIn("ResourceWarning", proc.stderr)


class TerminateTreeTest(unittest.TestCase):
    """harness._os.kill.terminate_tree, which `python -m harness reap` uses."""

    def test_ends_tree_and_escapees_but_not_a_reused_pid(self) -> None:
        from harness._os import kill as _kill
        server = start_server(argv=server_argv("escaping_children.py"), health=HttpCheck())
        self.addCleanup(server.stop)
        line = [ln for ln in server.output().splitlines() if ln.startswith("grandchildren")][0]
        pids = [server.pid] + [int(p) for p in line.split()[1:]]
        token = _procinfo.identity(server.pid)
        self.assertIsNotNone(token)
        wrong = ProcessId(server.pid, "1")  # same pid, other start time: a reused pid
        self.assertEqual(_kill.terminate_tree(server.pid, wrong, grace=0.1), [])
        self.assertTrue(all(pid_alive(p) for p in pids), "a reused pid is never signalled")
        self.assertEqual(_kill.terminate_tree(server.pid, token, server_id=server.server_id,
                                              grace=5.0), [])
        self.assertEqual([p for p in pids if pid_alive(p)], [])
        with self.assertLogs("harness", "WARNING") as logs:
            self.assertEqual(server.stop(), -signal.SIGTERM)
        self.assertIn("before stop(); its log is kept at", "\n".join(logs.output))
        remove_kept(server.log_path)


class StopTreeTest(ChildProcessesMixin, unittest.TestCase):
    """harness._os.kill.stop_tree, the one algorithm every stop path uses."""

    def test_a_member_that_drops_out_of_the_listing_is_still_waited_for(self) -> None:
        # A process found once may vanish from members() before it is gone:
        # its environment (the marker) reads empty while it exits, or its
        # parent, through which it was found, died first.  stop_tree must
        # not report success while it still runs.
        from harness._os import kill as _kill
        code = ("import signal, sys, time\n"
                "def slow_exit(*_):\n    time.sleep(0.3)\n    sys.exit(0)\n"
                "signal.signal(signal.SIGTERM, slow_exit)\nprint('up', flush=True)\n"
                "signal.pause()\n")
        proc = spawn_python(code)
        self.procs.append(proc)
        self.assertEqual(proc.stdout.readline(), "up\n")
        member = _procinfo.identity(proc.pid)
        assert member is not None
        listings = iter([[member]])
        survivors = _kill.stop_tree(lambda: next(listings, []), grace=HANG, kill_wait=HANG)
        self.assertEqual(survivors, [])
        self.assertFalse(_procinfo.is_alive(member), "stop_tree returned while it still ran")
        self.assertEqual(proc.wait(HANG), 0, "it was given its grace to exit by itself")

    def test_each_process_gets_one_sigterm(self) -> None:
        # The group's signal reaches every process in the group: signalling a
        # member of it again made a Python server run its SIGTERM handler a
        # second time, in the middle of the clean-up the first one began.
        # A member outside the group (a setsid escapee) is signalled itself.
        from harness._os import kill as _kill
        code = "import signal\nprint('up', flush=True)\nsignal.pause()\n"
        leader = spawn_python(code, start_new_session=True)
        escapee = spawn_python(code, start_new_session=True)
        self.procs += [leader, escapee]
        members = []
        for child in (leader, escapee):
            self.assertEqual(child.stdout.readline(), "up\n")
            members.append(_procinfo.identity(child.pid))
        sent = []
        real = _kill.signal_process

        def recording(target: ProcessId, sig: int) -> bool:
            sent.append((target, sig))
            return real(target, sig)

        with mock.patch.object(_kill, "signal_process", recording):
            survivors = _kill.stop_tree(lambda: members, grace=HANG, kill_wait=HANG,
                                        group=leader.pid)
        self.assertEqual(survivors, [])
        self.assertEqual([sig for target, sig in sent if target == members[0]], [])
        self.assertEqual([sig for target, sig in sent if target == members[1]],
                         [signal.SIGCONT, signal.SIGTERM])
        self.assertEqual((leader.wait(HANG), escapee.wait(HANG)),
                         (-signal.SIGTERM, -signal.SIGTERM))


class HygieneTest(NoLeftoversMixin, unittest.TestCase):
    CYCLES = 200

    def snapshot(self) -> tuple:
        from harness.ports import held_ports
        children = {p for p in _procinfo.descendants(os.getpid()) if pid_alive(p)}
        children -= set(supervisor.running())  # the zygotes live as long as the runner
        return open_fds(), children, held_ports()

    def test_200_start_stop_cycles_leave_nothing(self) -> None:
        sleeper = [sys.executable, "-S", "-c", "import signal; signal.pause()"]
        if os.path.exists("/bin/sleep"):
            sleeper = ["/bin/sleep", "600"]
        start_server(argv=sleeper, health=lambda s: True, listens=False).stop()  # starts the zygote
        before = self.snapshot()
        for i in range(self.CYCLES):
            if i % 20 == 0:  # a real HTTP server now and then, both ways of binding
                server = start_server(OK_APP, handoff=bool(i % 40), health=HttpCheck())
            else:
                # With handoff the sleeper holds the port's socket: it listens.
                server = start_server(argv=sleeper, handoff=bool(i % 2), health=lambda s: True,
                                      listens=bool(i % 2))
            self.assertTrue(server.running)
            server.stop()
            self.assertFalse(pid_alive(server.pid))
        self.assertEqual(self.snapshot(), before)


if __name__ == "__main__":
    unittest.main()
