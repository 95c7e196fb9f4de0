"""``_os/leases.py``: the lease protocol, tested directly.

The lock file's name is written and read back in one place; a lock file
nobody holds is removed and a held one is kept, by the same protocol a
release follows (lock, check the path still names the file locked, unlink
while holding); whatever is planted at a lock file's path (a FIFO, a
symlink) is refused without blocking and named; and the lease directory
must be one nobody else can tamper with.  The end-to-end behaviour (the
allocator, other users, ``reap``) is in ``test_ports*.py`` and
``test_reap.py``.
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
import tempfile
import unittest

from _support import quiet_window

from harness import HarnessError
from harness._os import leases
from harness._os.users import describe_user

LINUX = sys.platform.startswith("linux")
needs_flock = unittest.skipUnless(leases.HAVE_FLOCK, "file leases need fcntl.flock")


class LockFileNameTest(unittest.TestCase):
    def test_the_name_written_is_the_name_read_back(self) -> None:
        for port in (1, 80, 1024, 40001, 65535):
            with self.subTest(port=port):
                path = leases.lock_path("/some/dir", port)
                self.assertEqual(os.path.dirname(path), "/some/dir")
                self.assertEqual(os.path.basename(path), f"port-{port}.lock")
                self.assertEqual(leases.lock_file_port(os.path.basename(path)), port)

    def test_names_harness_never_writes_are_not_lock_files(self) -> None:
        for name in ("notes.txt", "port-.lock", "port-abc.lock", "port-0.lock", "port-080.lock",
                     "port-65536.lock", "port-80.lock.tmp", "xport-80.lock", "port-80"):
            with self.subTest(name=name):
                self.assertIsNone(leases.lock_file_port(name))


class LeaseDirTest(unittest.TestCase):
    def setUp(self) -> None:
        self.parent = tempfile.mkdtemp(prefix="harness-test-")
        self.addCleanup(shutil.rmtree, self.parent, True)

    def test_a_new_directory_is_made_sticky_and_writable_by_all(self) -> None:
        path = os.path.join(self.parent, "leases")
        self.assertEqual(leases.ensure_lease_dir(path), path)
        self.assertEqual(stat.S_IMODE(os.lstat(path).st_mode), 0o1777)
        self.assertEqual(leases.ensure_lease_dir(path), path)  # and accepted as it is

    def test_one_others_can_write_to_without_the_sticky_bit_is_refused(self) -> None:
        path = os.path.join(self.parent, "open")
        os.mkdir(path)
        os.chmod(path, 0o777)
        with self.assertRaises(HarnessError) as caught:
            leases.ensure_lease_dir(path)
        self.assertIn("not sticky", str(caught.exception))
        self.assertIn(f"owner {describe_user(os.getuid())}", str(caught.exception))

    def test_a_symlink_is_refused_naming_its_target(self) -> None:
        target = os.path.join(self.parent, "elsewhere")
        os.mkdir(target)
        link = os.path.join(self.parent, "leases")
        os.symlink(target, link)
        with self.assertRaises(HarnessError) as caught:
            leases.ensure_lease_dir(link)
        self.assertIn(f"not a directory but a symlink to {target}", str(caught.exception))

    def test_the_environment_selects_file_leases(self) -> None:
        path = os.path.join(self.parent, "from-env")
        old = os.environ.get("HARNESS_LEASE_DIR")
        os.environ["HARNESS_LEASE_DIR"] = path
        try:
            self.assertEqual(leases.default_lease_dir(), path)
            self.assertEqual(leases.lease_dir_in_use(), path)
        finally:
            if old is None:
                del os.environ["HARNESS_LEASE_DIR"]
            else:
                os.environ["HARNESS_LEASE_DIR"] = old
        self.assertEqual(leases.lease_dir_in_use(self.parent), self.parent)


@needs_flock
class FileLeaseTest(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="harness-test-leases-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.port = quiet_window(1, test=self)[0]
        self.path = leases.lock_path(self.directory, self.port)

    def take(self) -> leases.Lease:
        taken = leases.take(self.port, self.directory)
        assert isinstance(taken, leases.Lease), taken.why
        self.addCleanup(taken.close)
        return taken

    def test_a_lease_is_held_until_released_and_its_file_goes_with_it(self) -> None:
        lease = self.take()
        self.assertTrue(os.path.isfile(self.path))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o644)
        again = leases.take(self.port, self.directory)
        self.assertIsInstance(again, leases.NoLease)
        assert isinstance(again, leases.NoLease)
        self.assertTrue(again.held)
        self.assertIs(leases.held(self.port, self.directory), True)
        if LINUX:
            self.assertIn(os.getpid(), leases.holders(self.port, self.directory))
        lease.close()
        self.assertFalse(os.path.exists(self.path))
        self.assertIs(leases.held(self.port, self.directory), False)
        self.assertEqual(leases.holders(self.port, self.directory), [])

    def test_a_stale_lock_file_is_removed(self) -> None:
        open(self.path, "w").close()  # as a holder killed outright leaves it
        self.assertTrue(leases.is_stale(self.path))
        self.assertEqual(leases.lock_files(self.directory), [self.path])
        self.assertEqual(leases.remove_if_stale(self.path), (leases.Removal.REMOVED, ""))
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual(leases.remove_if_stale(self.path), (leases.Removal.GONE, ""))

    def test_a_held_lock_file_is_kept(self) -> None:
        self.take()
        self.assertFalse(leases.is_stale(self.path))
        self.assertEqual(leases.remove_if_stale(self.path), (leases.Removal.HELD, ""))
        self.assertTrue(os.path.isfile(self.path))

    def test_files_that_are_not_lock_files_are_not_listed(self) -> None:
        for name in ("notes.txt", "port-abc.lock"):
            open(os.path.join(self.directory, name), "w").close()
        self.assertEqual(leases.lock_files(self.directory), [])
        self.assertEqual(leases.lock_files(os.path.join(self.directory, "missing")), [])

    def test_a_planted_fifo_is_refused_at_once_and_named(self) -> None:
        os.mkfifo(self.path, 0o666)
        planted = f"a FIFO planted by {describe_user(os.getuid())}, not a lock file harness made"
        self.assertIn(planted, leases.lock_file_problem(self.path) or "")
        taken = leases.take(self.port, self.directory)  # never blocks on the FIFO
        assert isinstance(taken, leases.NoLease)
        self.assertFalse(taken.held)
        self.assertIn(f"lock file {self.path} is {planted}", taken.why)
        self.assertFalse(leases.is_stale(self.path))
        removal, detail = leases.remove_if_stale(self.path)
        self.assertEqual(removal, leases.Removal.FAILED)
        self.assertIn(planted, detail)
        self.assertTrue(stat.S_ISFIFO(os.lstat(self.path).st_mode), "a planted FIFO was removed")

    def test_a_planted_symlink_is_refused_and_never_followed(self) -> None:
        target = os.path.join(self.directory, "target")
        open(target, "w").close()
        os.symlink(target, self.path)
        self.assertIn(f"a symlink to {target} planted by",
                      leases.lock_file_problem(self.path) or "")
        taken = leases.take(self.port, self.directory)
        assert isinstance(taken, leases.NoLease)
        self.assertFalse(taken.held)
        self.assertIn("symlink", taken.why)
        self.assertFalse(leases.is_stale(self.path))
        removal, detail = leases.remove_if_stale(self.path)  # planted after reap found it
        self.assertEqual(removal, leases.Removal.FAILED, "not 'gone meanwhile'")
        self.assertIn(f"a symlink to {target} planted by", detail)
        self.assertTrue(os.path.islink(self.path))
        self.assertTrue(os.path.isfile(target))

    def test_a_regular_file_is_no_problem(self) -> None:
        self.assertIsNone(leases.lock_file_problem(self.path))  # not there at all
        open(self.path, "w").close()
        self.assertIsNone(leases.lock_file_problem(self.path))


@unittest.skipUnless(LINUX, "abstract-namespace leases are Linux's")
@unittest.skipIf(os.environ.get("HARNESS_LEASE_DIR"), "HARNESS_LEASE_DIR selects file leases")
class AbstractLeaseTest(unittest.TestCase):
    def test_one_holder_at_a_time_and_seen_by_name(self) -> None:
        port = quiet_window(1, test=self)[0]
        first = leases.take(port, None)
        assert isinstance(first, leases.Lease)
        self.addCleanup(first.close)
        self.assertIsInstance(first.sock, socket.socket)
        second = leases.take(port, None)
        assert isinstance(second, leases.NoLease)
        self.assertTrue(second.held)
        self.assertIs(leases.held(port, None), True)
        self.assertIn(os.getpid(), leases.holders(port, None))
        first.close()
        self.assertIs(leases.held(port, None), False)


if __name__ == "__main__":
    unittest.main()
