"""The framed messages between the runner, its zygotes and their keepers.

A receiver's timeout must never cost it bytes of a frame: a header read
and then given up on would leave the body to be read as the next header,
and every message after it would be garbage (the runner would take a live
keeper for lost and SIGKILL its server at once).
"""
from __future__ import annotations

import array
import fcntl
import os
import pickle
import socket
import struct
import termios
import threading
import unittest
from typing import Tuple
from unittest import mock

from _support import open_fds

from harness._server import channel
from harness._wait import Deadline, pause


def frame(message: dict) -> Tuple[bytes, bytes]:
    """The header and the body of ``message``'s frame."""
    body = pickle.dumps(message, protocol=4)
    return struct.pack("!I", len(body)), body


def unread(sock: socket.socket) -> int:
    """Bytes waiting to be read on ``sock``."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    return count[0]


class ChannelTest(unittest.TestCase):

    def setUp(self) -> None:
        self.sender, self.receiver = socket.socketpair()
        self.addCleanup(self.sender.close)
        self.addCleanup(self.receiver.close)

    def send_after_the_header_is_read(self, data: bytes) -> threading.Thread:
        """Send ``data`` once the receiver has taken everything sent so far (the
        header): the body then comes after the receiver started on the frame."""
        def send() -> None:
            deadline = Deadline(30.0)  # catches a hang only
            while unread(self.receiver) and not deadline.expired:
                pause(0.001)
            self.sender.sendall(data)

        thread = threading.Thread(target=send)
        thread.start()
        self.addCleanup(thread.join)
        return thread

    def test_a_body_that_comes_after_the_timeout_is_received_with_its_header(self) -> None:
        header, body = frame({"exited": 143})
        self.sender.sendall(header)
        self.send_after_the_header_is_read(body)
        message, fds = channel.recv(self.receiver, timeout=0.0)
        self.assertEqual(message, {"exited": 143})
        self.assertEqual(fds, [])
        channel.send(self.sender, {"stopped": 143, "survivors": []})
        self.assertEqual(channel.recv(self.receiver, timeout=30.0)[0],
                         {"stopped": 143, "survivors": []}, "the next frame is intact")

    def test_a_header_that_comes_in_pieces_is_read_whole(self) -> None:
        header, body = frame({"started": 12})
        self.sender.sendall(header[:1])
        self.send_after_the_header_is_read(header[1:] + body)
        self.assertEqual(channel.recv(self.receiver, timeout=0.0)[0], {"started": 12})

    def test_descriptors_sent_with_the_header_come_with_the_late_body(self) -> None:
        header, body = frame({"op": "spawn"})
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        self.sender.sendmsg([header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", [w]))])
        self.send_after_the_header_is_read(body)
        message, fds = channel.recv(self.receiver, timeout=0.0)
        self.assertEqual(message, {"op": "spawn"})
        self.assertEqual(len(fds), 1)
        os.write(fds[0], b"x")
        os.close(fds[0])
        self.assertEqual(os.read(r, 1), b"x")

    def test_a_timeout_before_a_frame_starts_takes_nothing(self) -> None:
        with self.assertRaises(channel.ChannelTimeout):
            channel.recv(self.receiver, timeout=0.0)
        channel.send(self.sender, {"exited": 0})
        self.assertEqual(channel.recv(self.receiver, timeout=30.0)[0], {"exited": 0})

    def test_a_frame_that_stops_halfway_closes_the_channel_and_its_descriptors(self) -> None:
        # A peer that is alive but stuck in the middle of a frame has made the
        # stream unusable: the caller must treat the link as broken, not retry
        # (a retry would read the rest of the body as a header).
        header, body = frame({"exited": 1})
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        before = open_fds()
        self.sender.sendmsg([header + body[:3]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                   array.array("i", [w]))])
        with mock.patch.object(channel, "FRAME_STALL", 0.05):
            with self.assertRaises(channel.ChannelClosed):
                channel.recv(self.receiver, timeout=0.0)
        self.assertEqual(open_fds(), before, "the descriptors that came are closed")

    def test_a_frame_that_is_not_a_pickle_closes_the_channel(self) -> None:
        self.sender.sendall(struct.pack("!I", 4) + b"junk")
        with self.assertRaises(channel.ChannelClosed):
            channel.recv(self.receiver, timeout=30.0)

    def test_end_of_file_in_the_middle_of_a_frame_closes_the_channel(self) -> None:
        header, body = frame({"exited": 1})
        self.sender.sendall(header + body[:2])
        self.sender.close()
        with self.assertRaises(channel.ChannelClosed):
            channel.recv(self.receiver, timeout=30.0)


if __name__ == "__main__":
    unittest.main()
