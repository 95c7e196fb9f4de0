"""``_server/address.py``: where a server listens, taken before a launch and given back after.

Unix socket paths fit sun_path (a long ``TMPDIR`` gets a short private
dir of its own); a socket path something still accepts on is refused (its
answers would pass for the server's), a stale socket file is removed, and
a file of any other kind is never touched.  ``ServerAddress`` leases the
TCP port (and gives the lease back), binds it first under handoff, or
names the socket path; ``accepts`` tells whether anything still answers.
Real leases, sockets and files, all in this process and its temp dirs.
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import unittest
from typing import Any, List

from _support import server_spec

from harness import ports
from harness._server import address
from harness._server.address import ServerAddress
from harness.errors import HarnessError, PortUnavailable

UNIX = hasattr(socket, "AF_UNIX")


class AddressTestCase(unittest.TestCase):
    def private_dir(self, prefix: str = "h-addr-") -> str:
        directory = tempfile.mkdtemp(prefix=prefix)
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def unix_socket(self, path: str, listening: bool = True) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        if listening:
            sock.listen(8)
        return sock

    def address(self, **overrides: Any) -> ServerAddress:
        taken = ServerAddress(server_spec(**overrides))
        self.addCleanup(taken.release)
        return taken


@unittest.skipUnless(UNIX, "Unix sockets")
class SocketPathTest(AddressTestCase):
    def test_a_short_directory_holds_the_socket(self) -> None:
        directory = self.private_dir()
        self.assertEqual(address.socket_path(directory),
                         (os.path.join(directory, "server.sock"), None))

    def test_a_long_directory_gets_a_short_private_one_linked_from_it(self) -> None:
        directory = os.path.join(self.private_dir(), "d" * 100)
        os.mkdir(directory)
        path, extra = address.socket_path(directory)
        assert extra is not None
        self.addCleanup(shutil.rmtree, extra, True)
        self.assertEqual(path, os.path.join(extra, "s"))
        self.assertLessEqual(len(os.fsencode(path)), address.SUN_PATH_MAX)
        self.assertEqual(stat.S_IMODE(os.stat(extra).st_mode), 0o700)
        self.assertEqual(os.readlink(os.path.join(directory, "socket-dir")), extra)
        self.unix_socket(path)  # it works as a socket address
        address.remove_socket_dir(directory)
        self.assertFalse(os.path.exists(extra))

    def test_removing_a_socket_dir_that_was_never_made_does_nothing(self) -> None:
        directory = self.private_dir()
        address.remove_socket_dir(directory)
        self.assertTrue(os.path.isdir(directory))


@unittest.skipUnless(UNIX, "Unix sockets")
class CheckFreeTest(AddressTestCase):
    def setUp(self) -> None:
        self.path = os.path.join(self.private_dir(), "s.sock")

    def test_an_absent_path_is_free(self) -> None:
        address.check_free(self.path)
        self.assertFalse(os.path.exists(self.path))

    def test_a_stale_socket_file_is_removed(self) -> None:
        self.unix_socket(self.path).close()  # a crashed server's: the file stays
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
        address.check_free(self.path)
        self.assertFalse(os.path.lexists(self.path))

    def test_a_socket_something_accepts_on_is_refused_and_left(self) -> None:
        self.unix_socket(self.path)
        with self.assertRaises(FileExistsError) as caught:
            address.check_free(self.path)
        self.assertIn("something already accepts connections on the Unix socket",
                      str(caught.exception))
        self.assertTrue(os.path.exists(self.path))

    def test_a_regular_file_is_refused_and_left(self) -> None:
        with open(self.path, "w") as f:
            f.write("data")
        with self.assertRaises(FileExistsError) as caught:
            address.check_free(self.path)
        self.assertIn("exists and is not a socket", str(caught.exception))
        with open(self.path) as f:
            self.assertEqual(f.read(), "data")

    def test_remove_socket_leaves_anything_but_a_socket(self) -> None:
        with open(self.path, "w") as f:
            f.write("data")
        address.remove_socket(self.path)
        self.assertTrue(os.path.isfile(self.path))
        os.unlink(self.path)
        os.mkdir(self.path)
        address.remove_socket(self.path)
        self.assertTrue(os.path.isdir(self.path))
        address.remove_socket(self.path + ".absent")  # nothing there: nothing raised


class AcceptsTest(AddressTestCase):
    def test_a_listening_tcp_socket_accepts_and_a_closed_one_does_not(self) -> None:
        port = ports.find_free_port()  # leased: no other harness user takes it meanwhile
        self.addCleanup(ports.release_port, port)
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", port))
        sock.listen(8)
        self.assertTrue(address.accepts("127.0.0.1", port, None))
        sock.close()
        self.assertFalse(address.accepts("127.0.0.1", port, None))

    @unittest.skipUnless(UNIX, "Unix sockets")
    def test_a_unix_socket_accepts_while_it_listens(self) -> None:
        path = os.path.join(self.private_dir(), "s.sock")
        self.assertFalse(address.accepts(None, None, path))
        sock = self.unix_socket(path)
        self.assertTrue(address.accepts(None, None, path))
        sock.close()
        self.assertFalse(address.accepts(None, None, path))

    def test_no_address_accepts_nothing(self) -> None:
        self.assertFalse(address.accepts(None, None, None))
        self.assertFalse(address.accepts("127.0.0.1", None, None))


class TcpAddressTest(AddressTestCase):
    def test_a_port_is_leased_for_the_launch_and_given_back_after(self) -> None:
        taken = self.address()
        taken.take(self.private_dir())
        port = taken.port
        assert port is not None
        self.assertIn(port, ports.held_ports())
        self.assertIsNone(taken.listener)
        self.assertIsNone(taken.listen_inode)
        self.assertEqual(taken.describe(), f"port {port}")
        taken.release()
        self.assertNotIn(port, ports.held_ports())
        taken.release()  # twice is fine

    def test_under_handoff_the_port_is_bound_and_listening(self) -> None:
        taken = self.address(handoff=True, health=None)
        taken.take(self.private_dir())
        assert taken.listener is not None and taken.port is not None
        self.assertEqual(taken.listener.getsockname()[1], taken.port)
        self.assertEqual(taken.listen_inode, os.fstat(taken.listener.fileno()).st_ino)
        self.assertTrue(taken.listener.get_inheritable())
        self.assertTrue(taken.accepts())  # connections queue from this moment
        taken.close_listener()  # the server has its copy: ours goes
        self.assertIsNone(taken.listener)
        self.assertFalse(taken.accepts())
        self.assertIn(taken.port, ports.held_ports())  # the lease stays until release
        taken.release()
        self.assertNotIn(taken.port, ports.held_ports())

    def test_a_port_a_stranger_bound_is_leased_again_under_handoff(self) -> None:
        stranger = socket.socket()
        self.addCleanup(stranger.close)
        stranger.bind(("127.0.0.1", 0))
        stranger.listen(1)
        taken_port = stranger.getsockname()[1]
        handed: List[FakeLease] = []

        def lease(host: str, port_range: Any, port: Any) -> Any:
            if handed:
                real = ports.lease_for_server(host, port_range, port)
                self.addCleanup(real.release)
                handed.append(FakeLease(real.port))
            else:
                handed.append(FakeLease(taken_port))
            return handed[-1]

        taken = ServerAddress(server_spec(handoff=True, health=None), lease=lease)
        self.addCleanup(taken.release)
        taken.take(self.private_dir())
        self.assertEqual(len(handed), 2)
        self.assertTrue(handed[0].released)  # the taken port's lease went back
        self.assertNotEqual(taken.port, taken_port)
        self.assertIsNotNone(taken.listener)

    def test_a_fixed_port_a_stranger_bound_is_refused(self) -> None:
        stranger = socket.socket()
        self.addCleanup(stranger.close)
        stranger.bind(("127.0.0.1", 0))
        stranger.listen(1)
        port = stranger.getsockname()[1]
        lease = FakeLease(port)
        taken = ServerAddress(server_spec(handoff=True, health=None, port=port),
                              lease=lambda host, port_range, fixed: lease)
        with self.assertRaises(PortUnavailable):
            taken.take(self.private_dir())
        self.assertTrue(lease.released)
        self.assertIsNone(taken.listener)

    def test_a_process_without_a_port_takes_nothing(self) -> None:
        taken = self.address(listens=False, health=lambda server: True)
        taken.take(self.private_dir())
        self.assertIsNone(taken.port)
        self.assertIsNone(taken.socket_path)
        self.assertEqual(taken.describe(), "no port")
        self.assertFalse(taken.accepts())


@unittest.skipUnless(UNIX, "Unix sockets")
class UnixAddressTest(AddressTestCase):
    def test_unix_socket_true_names_a_path_in_the_servers_dir(self) -> None:
        directory = self.private_dir()
        taken = self.address(unix_socket=True)
        taken.take(directory)
        self.assertEqual(taken.socket_path, os.path.join(directory, "server.sock"))
        self.assertIsNone(taken.port)
        self.assertIsNone(taken.listener)
        self.assertFalse(os.path.exists(os.path.join(directory, "server.sock")))
        self.assertEqual(taken.describe(), f"socket {taken.socket_path}")

    def test_under_handoff_the_unix_socket_listens(self) -> None:
        directory = self.private_dir()
        taken = self.address(unix_socket=True, handoff=True)
        taken.take(directory)
        assert taken.listener is not None
        self.assertEqual(taken.listen_inode, os.fstat(taken.listener.fileno()).st_ino)
        self.assertTrue(taken.accepts())
        taken.release()
        self.assertFalse(taken.accepts())

    def test_the_tests_own_path_is_used_and_a_stale_socket_there_removed(self) -> None:
        path = os.path.join(self.private_dir(), "app.sock")
        self.unix_socket(path).close()  # stale
        taken = self.address(unix_socket=path)
        taken.take(self.private_dir())
        self.assertEqual(taken.socket_path, path)
        self.assertFalse(os.path.lexists(path))

    def test_the_tests_own_path_something_accepts_on_is_refused(self) -> None:
        path = os.path.join(self.private_dir(), "app.sock")
        self.unix_socket(path)
        taken = self.address(unix_socket=path, name="api")
        with self.assertRaises(HarnessError) as caught:
            taken.take(self.private_dir())
        self.assertIn("server 'api': something already accepts connections", str(caught.exception))

    def test_the_tests_own_socket_file_is_removed_once_done(self) -> None:
        path = os.path.join(self.private_dir(), "app.sock")
        taken = self.address(unix_socket=path)
        taken.take(self.private_dir())
        self.unix_socket(path).close()  # the server made it, and is gone
        taken.forget_test_socket()
        self.assertFalse(os.path.lexists(path))


class FakeLease:
    """Stands in for a ``PortLease``: a port, and whether it was given back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.released = False

    def release(self) -> None:
        self.released = True


if __name__ == "__main__":
    unittest.main()
