"""Nothing harness started survives: daemons, setsid escapees with a scrubbed
environment, a killed runner, and a port that someone else still serves.

harness 0.1 found escaped descendants by an environment marker, scanned
once after the parent exited: a daemon's second fork raced that scan, and a
descendant that replaced its environment was invisible.  Now every server
lives under a keeper that is a child subreaper: whatever the server
started is re-parented to the keeper, never to init, so it is found and
ended whatever it did to its environment.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from _process_helpers import OK_APP, NoLeftoversMixin, pid_alive, remove_kept, server_argv
from _support import python_env

from harness import (
    HarnessError,
    HttpCheck,
    LogCheck,
    ServerProcess,
    ServerStartError,
    start_server,
    wait_until,
)
from harness._os import proc

HANG = 30.0  # hang-catcher only
LINUX = proc.HAVE_PROC


def wait_dead(pids: list, seconds: float = HANG) -> list:
    """Pids still alive after up to ``seconds`` (polled: this is a test)."""
    end = time.monotonic() + seconds
    left = [p for p in pids if pid_alive(p)]
    while left and time.monotonic() < end:
        time.sleep(0.01)
        left = [p for p in left if pid_alive(p)]
    return left


def escapee_of(server) -> int:
    line = [ln for ln in server.output().splitlines() if ln.startswith("escapee")][0]
    return int(line.split()[1])


@unittest.skipUnless(LINUX, "a child subreaper is a Linux facility")
class DaemonTest(NoLeftoversMixin, unittest.TestCase):
    def test_a_daemonizing_server_fails_and_its_daemon_is_ended(self) -> None:
        pid_file = tempfile.mktemp(prefix="daemon-pid-")
        self.addCleanup(lambda: os.path.exists(pid_file) and os.unlink(pid_file))
        with self.assertRaises(ServerStartError) as ctx:
            start_server(argv=server_argv("daemonizes.py"), env={"DAEMON_PID_FILE": pid_file},
                         health=HttpCheck())
        remove_kept(ctx.exception.log_path)
        self.assertEqual(ctx.exception.returncode, 0)
        self.assertIn("daemonizes", str(ctx.exception))
        self.assertIn("fix: run the server in the foreground", str(ctx.exception))
        with open(pid_file) as f:
            daemon = int(f.read())
        self.assertEqual(wait_dead([daemon], 0.0), [], "the daemon survived the failed start")


@unittest.skipUnless(LINUX, "a child subreaper is a Linux facility")
class EscapeeTest(NoLeftoversMixin, unittest.TestCase):
    def test_setsid_escapee_without_the_marker_is_stopped_with_the_server(self) -> None:
        server = start_server(argv=server_argv("scrubbed_escapee.py"), health=HttpCheck())
        escapee = escapee_of(server)
        port = server.port
        env = proc.environ(escapee) or b""
        self.assertNotIn(b"HARNESS_", env, "the escapee should carry no marker")
        self.assertEqual(server.get("/health").status, 200)  # served by the escapee
        self.assertEqual(server.stop(), -signal.SIGTERM)
        self.assertEqual(wait_dead([escapee], 0.0), [], "the escapee outlived stop()")
        with socket.socket() as probe:  # (a bind may still fail: TIME_WAIT of the request)
            self.assertNotEqual(probe.connect_ex(("127.0.0.1", port)), 0,
                                "something still accepts on the escapee's port")

    def test_escapee_dies_with_a_sigkilled_runner(self) -> None:
        code = ("import json, sys\n"
                "from harness import HttpCheck, start_server\n"
                f"server = start_server(argv={server_argv('scrubbed_escapee.py')!r}, "
                "health=HttpCheck())\n"
                "line = [l for l in server.output().splitlines() if l.startswith('escapee')][0]\n"
                "print(json.dumps([server.pid, int(line.split()[1])]), flush=True)\n"
                "sys.stdin.read()\n")
        runner = subprocess.Popen([sys.executable, "-c", code], env=python_env(),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  universal_newlines=True)
        self.addCleanup(lambda: runner.poll() is None and runner.kill())
        self.addCleanup(runner.stdout.close)
        self.addCleanup(runner.stdin.close)
        pids = json.loads(runner.stdout.readline())
        self.assertTrue(all(pid_alive(p) for p in pids))
        runner.kill()
        runner.wait(HANG)
        self.assertEqual(wait_dead(pids), [], "server or escapee outlived the SIGKILLed runner")


@unittest.skipUnless(LINUX, "a child subreaper is a Linux facility")
class KeeperKilledTest(NoLeftoversMixin, unittest.TestCase):
    def test_a_server_that_kills_its_keeper_is_still_stopped(self) -> None:
        # The keeper is the server's parent: a hostile server can SIGKILL it.
        app = ("import os, signal, subprocess, sys, time\n"
               "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
               "print('child', child.pid, flush=True)\n"
               "os.kill(os.getppid(), signal.SIGKILL)\n"
               "time.sleep(60)\n")
        server = ServerProcess(app, health=LogCheck("child"), start_timeout=HANG)
        try:
            server.start()
        except ServerStartError as error:  # the keeper's loss may be seen as an exit
            remove_kept(error.log_path)
        child = int(server.output().split("child", 1)[1].split()[0])
        server.stop()
        remove_kept(server.log_path)  # kept when its keeper was lost (a started server)
        self.assertEqual(wait_dead([server.pid, child], HANG), [],
                         "the server or its child outlived stop() after killing the keeper")

    def test_a_server_that_killed_its_keeper_once_ready_is_named_so_at_stop(self) -> None:
        # Ready, then told to kill its parent (the keeper).  Without its keeper
        # harness can no longer end the server's tree when the runner dies: the
        # server counts as ended, says so, and stop() ends what is left.
        trigger = tempfile.mktemp(prefix="kill-keeper-")
        self.addCleanup(lambda: os.path.exists(trigger) and os.unlink(trigger))
        app = ("import os, signal, time\n"
               "print('ready', flush=True)\n"
               "while not os.path.exists(os.environ['TRIGGER']):\n    time.sleep(0.005)\n"
               "os.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(60)\n")
        server = start_server(app, health=LogCheck("ready"), listens=False,
                              env={"TRIGGER": trigger})
        open(trigger, "w").close()
        wait_until(lambda: not server.running, timeout=HANG)
        self.assertEqual(server.state, "lost its keeper")
        self.assertTrue(pid_alive(server.pid), "the server itself still runs")
        with self.assertRaisesRegex(HarnessError, "server 'app' lost its keeper while waiting"):
            server.wait_for_log("never", timeout=HANG)
        with self.assertLogs("harness", "WARNING") as logs:
            server.stop()
        warning = "\n".join(logs.output)
        self.assertIn(f"server {server.name!r} (pid {server.pid}) lost its keeper", warning)
        self.assertNotIn("still running", warning)
        self.assertIn(f"its log is kept at {server.log_path}", warning)
        remove_kept(server.log_path)
        self.assertEqual(wait_dead([server.pid], HANG), [], "the server outlived stop()")

    def test_a_server_that_kills_its_keeper_at_once_is_ended_whenever_the_keeper_dies(
            self) -> None:
        # `sh` kills its parent within a millisecond of its start: the keeper
        # dies before, while or after it confirms the start.  Whichever it
        # is, the server is named before it runs, and ended.
        argv = ["sh", "-c", "kill -9 $PPID; echo up; exec sleep 60"]
        seen = set()
        for _ in range(30):
            server = ServerProcess(argv=argv, health=LogCheck("up"), listens=False,
                                   start_timeout=HANG)
            try:
                server.start()
                seen.add("started")
            except ServerStartError as error:
                remove_kept(error.log_path)
                seen.add(str(error).splitlines()[0].split(" after ")[0])
                self.assertIn("keeper", str(error))
                if "up" in error.log_tail:  # it ran: its output is shown and kept, named
                    self.assertIn(f"kept at {error.log_path}", str(error))
            server.stop()
            remove_kept(server.log_path)  # kept when its keeper was lost (a started server)
            self.assertEqual(wait_dead([server.pid] if server.pid else [], HANG), [])
        self.assertTrue(seen)


@unittest.skipUnless(hasattr(socket, "SO_REUSEPORT") and LINUX, "needs SO_REUSEPORT")
class PortStillServedTest(NoLeftoversMixin, unittest.TestCase):
    APP = ("import socket\n"
           "_real = socket.socket\n"
           "class ReusePort(_real):\n"
           "    def bind(self, address):\n"
           "        self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n"
           "        return super().bind(address)\n"
           "socket.socket = ReusePort\n" + OK_APP)

    def test_a_port_still_accepting_after_stop_raises_naming_the_holder(self) -> None:
        server = start_server(self.APP)
        intruder = socket.socket()
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        intruder.bind(("127.0.0.1", server.port))
        intruder.listen(1)
        self.addCleanup(intruder.close)
        with self.assertRaises(HarnessError) as ctx:
            server.stop()
        self.assertIn(f"port {server.port} still accepts connections", str(ctx.exception))
        self.assertIn(f"pid {os.getpid()}", str(ctx.exception))
        self.assertFalse(server.running)
        self.assertFalse(pid_alive(server.pid), "the server itself is stopped all the same")


if __name__ == "__main__":
    unittest.main()
