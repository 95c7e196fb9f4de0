"""``_os/proc.py``: raw process facts from Linux's ``/proc``, read right.

A process is told from a later one with its pid by its start time, and a
zombie (exited, not yet reaped) is not alive although its pid still
reads; these are the facts every signal harness sends relies on, so they
are checked here against real children: live, zombie and reaped.  The
command name in ``/proc/<pid>/stat`` may hold spaces and parentheses (a
process can name itself so, to fool a parser), and children and subtrees
come from the kernel's children files.  Linux only.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import unittest

from _support import ChildProcessesMixin, spawn_python

from harness._os import proc
from harness._os.identity import ProcessId

HANG = 60
# A command name that a parser splitting at the first ')' reads as a zombie.
HOSTILE_NAME = "a) Z 1 (b c"


@unittest.skipUnless(proc.HAVE_PROC, "/proc is Linux's")
class ProcTestCase(ChildProcessesMixin, unittest.TestCase):
    def child(self, code: str = "") -> subprocess.Popen:
        """A Python child that runs ``code``, says so, and lives until its stdin closes."""
        child = spawn_python(f"{code}\nimport sys\nprint('up', flush=True)\nsys.stdin.read()")
        self.procs.append(child)
        assert child.stdout is not None
        self.assertEqual(child.stdout.readline().strip(), "up")
        return child

    def exited_child(self) -> subprocess.Popen:
        """A child that has exited and is not reaped yet: a zombie."""
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        self.procs.append(child)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # waits, leaves the status
        return child


class StatFieldsTest(ProcTestCase):
    def test_a_command_name_with_spaces_and_parentheses_is_skipped_whole(self) -> None:
        child = self.child(f"open('/proc/self/comm', 'w').write({HOSTILE_NAME!r})")
        with open(f"/proc/{child.pid}/comm") as f:
            self.assertEqual(f.read().strip(), HOSTILE_NAME)  # the name took
        fields = proc.stat_fields(child.pid)
        assert fields is not None
        self.assertIn(fields[proc.STATE], (b"S", b"R"))
        self.assertEqual(int(fields[proc.PPID]), os.getpid())
        self.assertEqual(proc.parent(child.pid), os.getpid())
        self.assertTrue(proc.alive(ProcessId(child.pid, fields[proc.STARTTIME].decode())))
        self.assertFalse(proc.is_dead(child.pid))

    def test_the_start_time_is_fields_22_of_proc_5(self) -> None:
        with open("/proc/self/stat", "rb") as f:
            raw = f.read()
        after_name = raw[raw.rfind(b")") + 2:].split()
        fields = proc.stat_fields(os.getpid())
        assert fields is not None
        self.assertEqual(fields[proc.STARTTIME], after_name[22 - 3])
        self.assertEqual(int(fields[proc.PPID]), os.getppid())

    def test_a_process_that_is_gone_has_no_fields(self) -> None:
        child = self.exited_child()
        child.wait(HANG)
        self.assertIsNone(proc.stat_fields(child.pid))
        self.assertIsNone(proc.parent(child.pid))


class IdentityTest(ProcTestCase):
    def test_a_live_process_is_alive_under_its_identity_only(self) -> None:
        child = self.child()
        identity = proc.identity(child.pid)
        assert identity is not None
        self.assertEqual(identity.pid, child.pid)
        self.assertEqual(proc.identity(child.pid), identity)  # it does not change
        self.assertTrue(proc.alive(identity))
        self.assertFalse(proc.is_dead(child.pid))
        self.assertFalse(proc.alive(ProcessId(child.pid, str(int(identity.start or 0) + 1))))

    def test_a_zombie_is_dead_though_its_pid_still_reads(self) -> None:
        child = self.exited_child()
        identity = proc.identity(child.pid)
        assert identity is not None  # its stat is still there
        fields = proc.stat_fields(child.pid)
        assert fields is not None
        self.assertEqual(fields[proc.STATE], b"Z")
        self.assertTrue(proc.is_dead(child.pid))
        self.assertFalse(proc.alive(identity))

    def test_a_reaped_process_is_gone(self) -> None:
        child = self.exited_child()
        identity = proc.identity(child.pid)
        assert identity is not None
        child.wait(HANG)
        self.assertIsNone(proc.identity(child.pid))
        self.assertTrue(proc.is_dead(child.pid))
        self.assertFalse(proc.alive(identity))


class TreeTest(ProcTestCase):
    def test_children_and_subtree_of_a_small_tree(self) -> None:
        # This process -> child -> grandchild, each waiting on its stdin.
        child = spawn_python(
            "import subprocess, sys\n"
            "grandchild = subprocess.Popen([sys.executable, '-c', 'import sys; "
            "print(1, flush=True); sys.stdin.read()'], stdin=subprocess.PIPE, "
            "stdout=subprocess.PIPE)\n"
            "grandchild.stdout.readline()\n"
            "print(grandchild.pid, flush=True)\n"
            "sys.stdin.read()\n")
        self.procs.append(child)  # its end closes the grandchild's stdin: it ends too
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        self.assertEqual(proc.children(child.pid), [grandchild])
        self.assertEqual(proc.children(grandchild), [])
        self.assertEqual(proc.subtree(child.pid), [grandchild])
        mine = proc.subtree(os.getpid())
        assert mine is not None
        self.assertIn(child.pid, proc.children(os.getpid()) or [])
        self.assertLess(mine.index(child.pid), mine.index(grandchild))  # parents first
        self.assertIn(grandchild, proc.scan_children().get(child.pid, []))

    def test_a_process_that_is_gone_has_no_children(self) -> None:
        child = self.exited_child()
        child.wait(HANG)
        self.assertEqual(proc.children(child.pid), [])
        self.assertEqual(proc.subtree(child.pid), [])

    def test_threads_are_counted(self) -> None:
        child = self.child("import threading\n"
                           "for _ in range(3):\n"
                           "    threading.Thread(target=threading.Event().wait, daemon=True)"
                           ".start()")
        self.assertEqual(proc.thread_count(child.pid), 4)


class EnvironTest(ProcTestCase):
    def test_an_entry_is_found_anywhere_in_the_block(self) -> None:
        for block in (b"M=1\0A=b\0", b"A=b\0M=1\0", b"X=1\0M=1\0Y=2\0", b"M=1", b"A=b\0M=1"):
            self.assertTrue(proc.has_env(block, b"M=1"), block)

    def test_only_a_whole_entry_counts(self) -> None:
        for block in (b"M=10\0", b"XM=1\0", b"A=M=1\0", b"", b"M=\0"):
            self.assertFalse(proc.has_env(block, b"M=1"), block)

    def test_a_childs_environment_is_read(self) -> None:
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True,
            env=dict(os.environ, HARNESS_TEST_ENV_MARK="m-42"))
        self.procs.append(child)
        assert child.stdout is not None
        self.assertEqual(child.stdout.readline().strip(), "up")
        block = proc.environ(child.pid)
        assert block is not None
        self.assertTrue(proc.has_env(block, b"HARNESS_TEST_ENV_MARK=m-42"))
        self.assertFalse(proc.has_env(block, b"HARNESS_TEST_ENV_MARK=m-4"))


class SocketInodesTest(ProcTestCase):
    def test_an_open_socket_is_listed_until_it_is_closed(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        inode = os.fstat(sock.fileno()).st_ino
        self.assertIn(inode, proc.socket_inodes(os.getpid()))
        sock.close()
        self.assertNotIn(inode, proc.socket_inodes(os.getpid()))

    def test_a_process_that_is_gone_has_none(self) -> None:
        child = self.exited_child()
        child.wait(HANG)
        self.assertEqual(proc.socket_inodes(child.pid), set())


if __name__ == "__main__":
    unittest.main()
