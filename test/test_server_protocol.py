"""The runner <-> zygote <-> keeper protocol (``harness/_server/protocol.py``).

Every message is built by one constructor both ends use, carries exactly
the fields of its ``TypedDict``, and pickles to plain values only (the
zygote loads harness under another package name: a pickled harness class
would name a module it does not have).  The runner's end of a keeper's
link is driven here by a fake keeper on a socketpair.
"""
from __future__ import annotations

import errno
import pickle
import pickletools
import socket
import threading
import unittest
from typing import Any, Callable, List

from harness._os.identity import ProcessId
from harness._server import channel, protocol, supervisor

EXAMPLES: List[Any] = [
    (protocol.Init, protocol.init(["flask"], ["/x"])),
    (protocol.InitReply, protocol.init_reply(ready=True, pid=1, subreaper=True)),
    (protocol.InitReply, protocol.init_reply(ready=False, pid=1, subreaper=False,
                                             refused=protocol.refusal("m", threads=2))),
    (protocol.Import, protocol.import_module("myapp")),
    (protocol.ImportReply, protocol.import_reply()),
    (protocol.Learn, protocol.learn(["werkzeug"])),
    (protocol.LearnReply, protocol.learn_reply(["a"], module="b", changed="threads")),
    (protocol.Dir, protocol.directory("/tmp/x", add=True)),
    (protocol.Spawn, protocol.spawn("argv", warm=False, argv=["true"], env={}, cwd="/")),
    (protocol.Spawn, protocol.spawn("target", warm=True, argv=[], env={}, cwd="/",
                                    payload=b"x", payload_path="/p", learn=True)),
    (protocol.Forked, protocol.forked(12, 11, "12:345")),
    (protocol.SpawnFailed, protocol.spawn_failed(FileNotFoundError(errno.ENOENT, "nope"))),
    (protocol.Started, protocol.started(12)),
    (protocol.Exited, protocol.exited(-9)),
    (protocol.Stop, protocol.stop(5.0, 5.0)),
    (protocol.Stopped, protocol.stopped(143, ["13:456"])),
]


class MessageTest(unittest.TestCase):
    def test_each_message_has_exactly_its_fields(self) -> None:
        for kind, message in EXAMPLES:
            with self.subTest(kind=kind.__name__):
                self.assertEqual(set(message), set(kind.__annotations__))

    def test_messages_pickle_to_plain_values_only(self) -> None:
        for kind, message in EXAMPLES:
            with self.subTest(kind=kind.__name__):
                globals_named = [arg for op, arg, _ in pickletools.genops(pickle.dumps(message))
                                 if op.name in ("GLOBAL", "STACK_GLOBAL")]
                self.assertEqual(globals_named, [], "a class or function was pickled")

    def test_a_spawn_failure_is_a_structured_value(self) -> None:
        failed = protocol.spawn_failed(PermissionError(errno.EACCES, "Permission denied"))
        self.assertEqual((failed["errno"], failed["error"]), (errno.EACCES, "PermissionError"))
        self.assertEqual(protocol.spawn_failed(ValueError("x"))["errno"], 0)


class KeeperLinkTest(unittest.TestCase):
    """The runner's end of a keeper's link, against a fake keeper."""

    def link(self, keeper: Callable[[socket.socket], None]) -> supervisor.KeeperLink:
        mine, theirs = socket.socketpair()
        thread = threading.Thread(target=keeper, args=(theirs,))
        thread.start()
        self.addCleanup(thread.join, 10)
        link = supervisor.KeeperLink(mine)
        self.addCleanup(link.close)
        return link

    def test_started_after_forked(self) -> None:
        def keeper(sock: socket.socket) -> None:
            channel.send(sock, protocol.forked(4242, 4241, "4242:99"))
            channel.send(sock, protocol.started(4242))
            channel.send(sock, protocol.exited(3))
            sock.close()
        link = self.link(keeper)
        self.assertEqual(link.wait_started(10), 4242)
        self.assertEqual((link.keeper_pid, link.identity), (4241, ProcessId(4242, "99")))
        self.assertTrue(link.exited(10))
        self.assertEqual(link.status, 3)

    def test_a_keeper_that_dies_after_forking_leaves_the_server_named(self) -> None:
        def keeper(sock: socket.socket) -> None:
            channel.send(sock, protocol.forked(4242, 4241, "4242:99"))
            sock.close()
        with self.assertRaises(supervisor.LaunchError) as ctx:
            self.link(keeper).wait_started(10)
        self.assertEqual(ctx.exception.orphan, ProcessId(4242, "99"))

    def test_a_failed_exec_is_a_launch_error_with_its_errno(self) -> None:
        def keeper(sock: socket.socket) -> None:
            channel.send(sock, protocol.forked(4242, 4241, "4242:99"))
            channel.send(sock, protocol.spawn_failed(
                FileNotFoundError(errno.ENOENT, "No such file or directory: 'nope'")))
            sock.close()
        with self.assertRaises(supervisor.LaunchError) as ctx:
            self.link(keeper).wait_started(10)
        self.assertEqual(ctx.exception.errno, errno.ENOENT)
        self.assertIn("FileNotFoundError", str(ctx.exception))
        self.assertIn("'nope'", str(ctx.exception))

    def test_stop_returns_the_survivors_and_the_status(self) -> None:
        def keeper(sock: socket.socket) -> None:
            channel.send(sock, protocol.forked(4242, 4241, "4242:99"))
            channel.send(sock, protocol.started(4242))
            order, _ = channel.recv(sock, 10)
            assert order == protocol.stop(1.0, 2.0), order
            channel.send(sock, protocol.exited(-15))
            channel.send(sock, protocol.stopped(-15, ["77:1"]))
            sock.close()
        link = self.link(keeper)
        link.wait_started(10)
        self.assertEqual(link.stop(1.0, 2.0), [ProcessId(77, "1")])
        self.assertEqual(link.status, -15)


if __name__ == "__main__":
    unittest.main()
