"""``_os/kill.py``: the one kill sequence, on real processes, and signals that never miss.

``stop_tree`` ends a process that exits on SIGTERM within the grace, one
that ignores it with SIGKILL after the grace, and a stopped one by
continuing it first (a stopped process would hold SIGTERM until SIGKILL);
each gets its signal once (a second one would cut short the clean-up the
first began), and nothing survives.  ``signal_process`` sends nothing to
a pid whose start time is not the one recorded (a reused pid), nor to a
reaped child's; ``find_marked`` finds a process by its environment marker.
The children record each signal they get on their stdout.  Linux (or psutil).
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import unittest
from typing import Callable, Dict, List, Optional, Tuple

from _support import ChildProcessesMixin

from harness._os import kill, proc, procinfo
from harness._os.identity import ProcessId
from harness._wait import Deadline, pause

HANG = 60.0  # a bound that catches a hang, never reached when all is well
# Says which signals it gets, one line each; exits with 7 on SIGTERM if told to.
RECORDER = """
import os, signal, sys
exit_on_term = sys.argv[1] == "exit"
def record(signum, frame):
    name = signal.Signals(signum).name
    os.write(1, (name + "\\n").encode())
    if signum == signal.SIGTERM and exit_on_term:
        os._exit(7)
for sig in (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR1):
    signal.signal(sig, record)
os.write(1, b"up\\n")
sys.stdin.read()
"""
sees_processes = unittest.skipUnless(proc.HAVE_PROC or procinfo.HAVE_PSUTIL,
                                     "needs /proc or psutil to see processes")


@sees_processes
class KillTestCase(ChildProcessesMixin, unittest.TestCase):
    def recorder(self, on_term: str = "exit",
                 env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        """A child that records its signals (``on_term``: "exit" or "stay")."""
        child = subprocess.Popen([sys.executable, "-c", RECORDER, on_term],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 universal_newlines=True, env=env)
        self.procs.append(child)
        assert child.stdout is not None
        self.assertEqual(child.stdout.readline(), "up\n")
        return child

    def identity(self, child: subprocess.Popen) -> ProcessId:
        found = procinfo.identity(child.pid)
        assert found is not None
        return found

    def signals(self, child: subprocess.Popen) -> List[str]:
        """Every signal ``child`` recorded, once it has exited (it is made to)."""
        assert child.stdin is not None and child.stdout is not None
        if child.poll() is None:
            child.stdin.close()
        child.wait(HANG)
        return child.stdout.read().split()

    def recording_until(self, child: subprocess.Popen,
                        name: str) -> Tuple[Callable[[], None], List[str]]:
        """An ``on_wait`` that returns once ``child`` recorded signal ``name``, and the
        list it reads into: a short grace then cannot end in SIGKILL before the
        child's handler ran (under load that may take longer than the grace)."""
        assert child.stdout is not None
        stdout = child.stdout
        seen: List[str] = []

        def on_wait() -> None:
            while name not in seen:
                line = stdout.readline()
                if not line:
                    return
                seen.append(line.strip())
        return on_wait, seen

    def wait_for_state(self, pid: int, state: bytes) -> None:
        deadline = Deadline(HANG)
        while not deadline.expired:
            fields = proc.stat_fields(pid)
            if fields is not None and fields[proc.STATE] == state:
                return
            pause(0.001)
        self.fail(f"pid {pid} never reached state {state!r}")


class StopTreeTest(KillTestCase):
    def test_a_process_that_exits_on_sigterm_gets_it_once(self) -> None:
        child = self.recorder("exit")
        target = self.identity(child)
        survivors = kill.stop_tree(lambda: [target], grace=HANG, kill_wait=HANG)
        self.assertEqual(survivors, [])
        self.assertEqual(child.wait(HANG), 7)  # its own exit: no SIGKILL was needed
        self.assertEqual(self.signals(child).count("SIGTERM"), 1)

    def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(self) -> None:
        child = self.recorder("stay")
        target = self.identity(child)
        on_wait, seen = self.recording_until(child, "SIGTERM")
        survivors = kill.stop_tree(lambda: [target], grace=0.2, kill_wait=HANG,
                                   on_wait=on_wait)
        self.assertEqual(survivors, [])
        self.assertEqual(child.wait(HANG), -signal.SIGKILL)
        recorded = seen + self.signals(child)
        self.assertEqual(recorded.count("SIGTERM"), 1)
        self.assertEqual(recorded.count("SIGCONT"), 1)

    @unittest.skipUnless(proc.HAVE_PROC, "a stopped process is seen in /proc")
    def test_a_stopped_process_is_continued_so_it_can_exit_on_sigterm(self) -> None:
        child = self.recorder("exit")
        os.kill(child.pid, signal.SIGSTOP)
        self.wait_for_state(child.pid, b"T")
        target = self.identity(child)
        survivors = kill.stop_tree(lambda: [target], grace=HANG, kill_wait=HANG)
        self.assertEqual(survivors, [])
        # Stopped, it would have held SIGTERM until the grace ended in SIGKILL.
        self.assertEqual(child.wait(HANG), 7)
        self.assertEqual(self.signals(child).count("SIGTERM"), 1)

    def test_every_member_gets_one_sigterm_and_none_survives(self) -> None:
        children = [self.recorder("exit") for _ in range(3)]
        targets = [self.identity(child) for child in children]
        looks: List[int] = []
        survivors = kill.stop_tree(lambda: targets, grace=HANG, kill_wait=HANG,
                                   on_wait=lambda: looks.append(1))
        self.assertEqual(survivors, [])
        self.assertTrue(looks)  # on_wait runs at every look
        for child in children:
            self.assertEqual(child.wait(HANG), 7)
            self.assertEqual(self.signals(child).count("SIGTERM"), 1)

    def test_the_signal_can_be_another_than_sigterm(self) -> None:
        child = self.recorder("stay")
        target = self.identity(child)
        on_wait, seen = self.recording_until(child, "SIGUSR1")
        kill.stop_tree(lambda: [target], grace=0.2, kill_wait=HANG, sig=signal.SIGUSR1,
                       on_wait=on_wait)
        recorded = seen + self.signals(child)
        self.assertEqual(recorded.count("SIGUSR1"), 1)
        self.assertNotIn("SIGTERM", recorded)

    def test_without_a_grace_it_is_sigkill_at_once(self) -> None:
        child = self.recorder("exit")
        target = self.identity(child)
        self.assertEqual(kill.stop_tree(lambda: [target], grace=0.0, kill_wait=HANG), [])
        self.assertEqual(child.wait(HANG), -signal.SIGKILL)
        self.assertEqual(self.signals(child), [])


class SignalProcessTest(KillTestCase):
    def test_a_start_time_that_does_not_match_is_never_signalled(self) -> None:
        child = self.recorder("stay")
        real = self.identity(child)
        impostor = ProcessId(child.pid, str(int(real.start or 0) + 1))
        self.assertFalse(kill.signal_process(impostor, signal.SIGTERM))
        self.assertTrue(kill.signal_process(real, signal.SIGUSR1))
        assert child.stdout is not None
        self.assertEqual(child.stdout.readline(), "SIGUSR1\n")
        # Any SIGTERM sent before the SIGUSR1 was delivered with it, at the latest.
        self.assertEqual(self.signals(child), [])

    def test_a_reaped_childs_pid_is_never_signalled(self) -> None:
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        self.procs.append(child)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        before = procinfo.identity(child.pid)  # the zombie's
        assert before is not None
        child.wait(HANG)
        self.assertFalse(kill.signal_process(before, signal.SIGTERM))
        self.assertFalse(kill.signal_process(ProcessId(child.pid, "12345"), signal.SIGTERM))
        self.assertFalse(kill.is_alive(before))

    def test_this_process_and_init_are_never_signalled(self) -> None:
        me = procinfo.identity(os.getpid())
        assert me is not None
        self.assertFalse(kill.signal_process(me, 0))
        init = procinfo.identity(1)
        if init is not None:
            self.assertFalse(kill.signal_process(init, 0))


class FindMarkedTest(KillTestCase):
    def test_a_child_is_found_by_its_marker(self) -> None:
        token = secrets.token_hex(8)
        marked = self.recorder("exit", env=dict(os.environ, HARNESS_TEST_MARK=token))
        self.recorder("exit", env=dict(os.environ, HARNESS_TEST_MARK=token + "0"))  # not it
        self.assertEqual(kill.find_marked("HARNESS_TEST_MARK", token), [self.identity(marked)])

    def test_a_marked_child_that_exited_is_not_found(self) -> None:
        token = secrets.token_hex(8)
        child = subprocess.Popen([sys.executable, "-c", "pass"],
                                 env=dict(os.environ, HARNESS_TEST_MARK=token))
        self.procs.append(child)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # a zombie now
        self.assertEqual(kill.find_marked("HARNESS_TEST_MARK", token), [])

    def test_descendants_are_found_by_parentage(self) -> None:
        child = self.recorder("exit")
        self.assertIn(self.identity(child), kill.descendants(os.getpid()))
        self.assertEqual(kill.alive([self.identity(child)]), [self.identity(child)])


if __name__ == "__main__":
    unittest.main()
