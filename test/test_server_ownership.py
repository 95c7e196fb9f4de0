"""``_server/ownership.py``: a passed check counts only if the port is the server's tree's.

Against real sockets this test opens, with this process (or a child that
listens nowhere) standing for the server's tree: a listener of the tree
on the port is accepted; any other process's listener on it (another
process here) is a foreign outcome; a tree that listens elsewhere (another
TCP port, a Unix socket) is accepted with ``where`` naming that place,
unless the server is known to bind ``$PORT``; a tree that listens nowhere
fails until ``grace`` has passed, then is taken for a process without a
port.  ``WrongPortWatch`` warns once about a server on other ports only.
Linux only: elsewhere ownership cannot be read and readiness goes on.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import unittest
from typing import Callable, List, Optional

from _support import ChildProcessesMixin, ipv6_available, spawn_python

from harness import find_free_port, release_port
from harness._os import proc, sockets
from harness._server import ownership
from harness._wait import Deadline, pause
from harness.checks import Outcome

HANG = 30.0  # a bound that catches a hang, never reached when all is well
GRACE = 0.05
LINUX = proc.HAVE_PROC and sockets.listeners(socket.AF_INET) is not None


@unittest.skipUnless(LINUX, "listener ownership is read from Linux's socket tables")
class OwnershipTestCase(ChildProcessesMixin, unittest.TestCase):
    def me(self) -> List[int]:
        return [os.getpid()]

    def port(self) -> int:
        port = find_free_port()
        self.addCleanup(release_port, port)
        return port

    def listen(self, port: int, host: str = "127.0.0.1") -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind((host, port))
        sock.listen(8)
        return sock

    def listen_unix(self) -> str:
        directory = tempfile.mkdtemp(prefix="h-own-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "s.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.listen(8)
        return path

    def stranger(self, port: int, host: str = "127.0.0.1") -> int:
        """Another process listening on ``port``: its pid, once it listens."""
        family = "AF_INET6" if ":" in host else "AF_INET"
        child = spawn_python(
            f"import socket, sys\n"
            f"s = socket.socket(socket.{family}, socket.SOCK_STREAM)\n"
            f"s.bind(({host!r}, {port}))\n"
            f"s.listen(8)\n"
            f"print('listening', flush=True)\n"
            f"sys.stdin.read()\n")
        self.procs.append(child)
        assert child.stdout is not None
        self.assertEqual(child.stdout.readline().strip(), "listening")
        return child.pid

    def quiet_tree(self) -> Callable[[], List[int]]:
        """A process tree (one child) that listens nowhere."""
        child = spawn_python("import sys; print('up', flush=True); sys.stdin.read()")
        self.procs.append(child)
        assert child.stdout is not None
        self.assertEqual(child.stdout.readline().strip(), "up")
        return lambda: [child.pid]

    def proof(self, port: Optional[int], tree: Optional[Callable[[], List[int]]] = None, *,
              check_uses_port: bool = False, expects_port: bool = False,
              daemon_check: Optional[Callable[[List[sockets.Listener]], bool]] = None
              ) -> ownership.ListenerProof:
        return ownership.ListenerProof(port, tree or self.me, check_uses_port=check_uses_port,
                                       expects_port=expects_port, grace=GRACE,
                                       daemon_check=daemon_check)


class LookTest(OwnershipTestCase):
    def test_the_trees_listener_on_the_port_is_ours(self) -> None:
        port = self.port()
        sock = self.listen(port)
        facts = ownership.look(port, self.me())
        assert facts is not None
        self.assertEqual([item.inode for item in facts.ours], [os.fstat(sock.fileno()).st_ino])
        self.assertEqual(facts.ours[0].address, "127.0.0.1")
        self.assertEqual(facts.ours[0].uid, os.geteuid())
        self.assertEqual(facts.foreign, [])

    @unittest.skipUnless(ipv6_available(), "no IPv6 loopback here")
    def test_an_ipv6_listener_of_the_tree_is_ours_too(self) -> None:
        port = self.port()
        self.listen(port, "::1")
        facts = ownership.look(port, self.me())
        assert facts is not None
        self.assertEqual([item.address for item in facts.ours], ["::1"])

    def test_another_process_on_the_port_is_foreign(self) -> None:
        port = self.port()
        pid = self.stranger(port)
        facts = ownership.look(port, self.me())
        assert facts is not None
        self.assertEqual(facts.ours, [])
        self.assertEqual([(item.port, item.address) for item in facts.foreign],
                         [(port, "127.0.0.1")])
        who = ownership.describe_foreign(facts.foreign[0])
        self.assertTrue(who.startswith(f"pid {pid} ("), who)
        self.assertTrue(who.endswith(f"listening on 127.0.0.1:{port}"), who)

    @unittest.skipUnless(ipv6_available(), "no IPv6 loopback here")
    def test_a_stranger_in_the_ipv6_table_is_seen(self) -> None:
        port = self.port()
        self.listen(port)
        self.stranger(port, "::1")
        facts = ownership.look(port, self.me())
        assert facts is not None
        self.assertEqual([item.address for item in facts.ours], ["127.0.0.1"])
        self.assertEqual([item.address for item in facts.foreign], ["::1"])
        self.assertIn(f"listening on [::1]:{port}",
                      ownership.describe_foreign(facts.foreign[0]))

    def test_where_else_the_tree_listens_is_told(self) -> None:
        port, other = self.port(), self.port()
        self.listen(other)
        path = self.listen_unix()
        facts = ownership.look(port, self.me())
        assert facts is not None
        self.assertEqual((facts.ours, facts.foreign), ([], []))
        self.assertIn(other, facts.other_ports)
        self.assertIn(path, facts.unix)
        self.assertIn(f"port {other}", facts.elsewhere())
        self.assertIn(f"unix:{path}", facts.elsewhere())
        self.assertEqual(ownership.look(port, self.me(), unix=False).unix, [])  # type: ignore

    def test_listen_ports_are_the_trees_tcp_ports(self) -> None:
        port, other = self.port(), self.port()
        self.listen(port)
        self.listen(other)
        self.assertTrue({port, other} <= ownership.listen_ports(self.me()))
        self.assertEqual(ownership.listen_ports(self.quiet_tree()()), set())


class ListenerProofTest(OwnershipTestCase):
    def test_a_listener_of_the_tree_on_the_port_is_accepted(self) -> None:
        port = self.port()
        self.listen(port)
        proof = self.proof(port, check_uses_port=True)
        self.assertIsNone(proof())
        self.assertTrue(proof.seen_on_port)
        self.assertEqual(proof.where, "")
        self.assertFalse(proof.without_port)

    def test_a_stranger_on_the_port_is_a_foreign_outcome(self) -> None:
        port = self.port()
        self.listen(port)  # even beside the tree's own listener
        pid = self.stranger(port, "127.0.0.2")
        outcome = self.proof(port)()
        assert outcome is not None
        self.assertFalse(outcome.ok)
        self.assertTrue(outcome.foreign)
        self.assertTrue(outcome.label.startswith(f"port answered by another process: pid {pid}"),
                        outcome.label)

    def test_a_tree_on_another_port_is_accepted_there(self) -> None:
        port, other = self.port(), self.port()
        self.listen(other)
        proof = self.proof(port)
        self.assertIsNone(proof())
        self.assertIn(f"port {other}", proof.where)
        self.assertFalse(proof.seen_on_port)

    def test_a_tree_on_a_unix_socket_is_accepted_there(self) -> None:
        path = self.listen_unix()
        proof = self.proof(self.port())
        self.assertIsNone(proof())
        self.assertIn(f"unix:{path}", proof.where)

    def test_a_check_that_talks_to_the_port_is_not_about_another_socket(self) -> None:
        port, other = self.port(), self.port()
        self.listen(other)
        outcome = self.proof(port, check_uses_port=True)()
        assert outcome is not None
        self.assertEqual(outcome.label, f"check passed, but nothing listens on port {port} yet")
        self.assertIn(f"it listens on port {other}", outcome.detail)

    def test_a_tree_that_listens_nowhere_fails_until_the_grace_then_has_no_port(self) -> None:
        port = self.port()
        proof = self.proof(port, self.quiet_tree())
        first = proof()
        assert first is not None
        self.assertFalse(first.ok)
        self.assertFalse(first.foreign)
        self.assertEqual(first.label, f"check passed, but nothing listens on port {port} yet")
        self.assertIn("listens nowhere yet", first.detail)
        verdict: Optional[Outcome] = first
        deadline = Deadline(HANG)
        while verdict is not None and not deadline.expired:
            pause(0.005)
            verdict = proof()
        self.assertIsNone(verdict)
        self.assertTrue(proof.without_port)
        self.assertGreaterEqual(proof.waited, GRACE)
        self.assertFalse(proof.seen_on_port)

    def test_a_server_known_to_bind_its_port_is_never_taken_without_it(self) -> None:
        port, other = self.port(), self.port()
        self.listen(other)  # not even a socket elsewhere counts
        proof = self.proof(port, expects_port=True)
        deadline = Deadline(HANG)
        while not deadline.expired:  # until well past the grace, by the proof's own clock
            outcome = proof()
            assert outcome is not None
            self.assertFalse(outcome.ok)
            assert proof.unbound_since is not None
            if time.monotonic() - proof.unbound_since > 2 * GRACE:
                break
            pause(0.005)
        self.assertIsNotNone(proof())
        self.assertFalse(proof.without_port)
        self.listen(port)
        self.assertIsNone(proof())  # and accepted once it listens there
        self.assertTrue(proof.seen_on_port)

    def test_a_port_held_by_what_the_server_left_behind_is_not_its_own(self) -> None:
        port = self.port()
        self.listen(port)
        outcome = self.proof(port, daemon_check=lambda ours: True)()
        assert outcome is not None
        self.assertEqual(outcome.label, "port held by a process the server left behind "
                                        "(it daemonized?)")

    def test_without_a_port_there_is_nothing_to_prove(self) -> None:
        self.assertIsNone(self.proof(None, lambda: self.fail("the tree was looked at"))())


class WrongPortWatchTest(OwnershipTestCase):
    def watch(self, port: int, tree: Callable[[], List[int]]) -> List[str]:
        """Run a watch until it warned or ``HANG``: its warnings, each checked to come
        after the grace."""
        warnings: List[str] = []
        lasted: List[float] = []

        def warn(message: str) -> None:
            warnings.append(message)
            assert watch.since is not None
            lasted.append(time.monotonic() - watch.since)

        # A grace of a few looks (EVERY apart), so a warning at the first
        # look after the situation began would come too early.
        grace = 3 * ownership.WrongPortWatch.EVERY
        watch = ownership.WrongPortWatch(port, tree, grace, warn)
        deadline = Deadline(HANG)
        while not warnings and not deadline.expired:
            self.assertIsNone(watch())  # it decides nothing
            pause(0.005)
        # Once warned, never again: three more looks' worth of calls.
        until = time.monotonic() + 3 * ownership.WrongPortWatch.EVERY
        while time.monotonic() < until:
            self.assertIsNone(watch())
            pause(0.005)
        self.assertEqual(len(lasted), len(warnings))
        for seconds in lasted:  # by the watch's own clock: not before its grace
            self.assertGreaterEqual(seconds, grace)
        return warnings

    def test_other_ports_only_are_said_once_after_the_grace(self) -> None:
        port, other = self.port(), self.port()
        self.listen(other)
        warnings = self.watch(port, self.me)
        self.assertEqual(len(warnings), 1)
        self.assertIn("listens on port", warnings[0])
        self.assertIn(str(other), warnings[0])
        self.assertIn(f"but not on its $PORT {port}", warnings[0])
        self.assertIn("still waiting for $PORT until start_timeout", warnings[0])

    def test_a_tree_on_its_port_or_nowhere_is_no_warning(self) -> None:
        port, other = self.port(), self.port()
        self.listen(other)
        self.listen(port)
        quiet = self.quiet_tree()
        for tree in (self.me, quiet):
            warnings: List[str] = []
            watch = ownership.WrongPortWatch(port, tree, GRACE, warnings.append)
            looks, last, deadline = 0, watch.last_look, Deadline(HANG)
            # Three looks (at least EVERY apart) span more than the grace: a
            # watch that were to warn here would have.
            while looks < 3 and not deadline.expired:
                self.assertIsNone(watch())
                if watch.last_look != last:
                    looks, last = looks + 1, watch.last_look
                pause(0.005)
            self.assertEqual(looks, 3)
            self.assertEqual(warnings, [])
            self.assertIsNone(watch.since)


if __name__ == "__main__":
    unittest.main()
