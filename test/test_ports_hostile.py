"""Ports among hostile neighbours: a shared lease directory other users can write to,
planted lock files, umask 077, an address the machine does not have, privileged ports.

The lease directory here is a sticky, world-writable directory like /tmp,
as ``HARNESS_LEASE_DIR`` is on a shared machine.  Everything a planted entry
can do must end in a ``HarnessError`` that says what was found and what to
do: never a hang, never a bare ``OSError``, and never a port handed out
whose lease could not be verified.  Tests that need a second user run parts
of themselves as a throwaway uid (``_other_user``) and skip unless root.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import unittest
from typing import Any, Callable, Dict, List, Optional
from unittest import mock

from _other_user import IS_ROOT, OTHER_UID, THIRD_UID, needs_root, run_as, start_as
from _support import ROOT, ipv6_available, python_env, quiet_window

import harness
from harness import HarnessError, PortAllocator, ports

LINUX = sys.platform.startswith("linux")


def _outcome_of(call: Callable[[], Any]) -> Dict[str, Any]:
    """What a call did, as plain data a forked child can send back."""
    try:
        value = call()
    except Exception as exc:  # the test asserts on the type and message
        return {"error": type(exc).__name__, "message": str(exc),
                "harness_error": isinstance(exc, HarnessError)}
    if isinstance(value, ports.PortLease):
        port = value.port
        value.release()
        return {"port": port}
    return {"value": value}


def lease_port(lease_dir: str, port: int) -> Dict[str, Any]:
    return _outcome_of(lambda: PortAllocator((port, port), lease_dir=lease_dir).acquire_port(port))


def lease_any(lease_dir: str, low: int, high: int, times: int = 1) -> List[Dict[str, Any]]:
    allocator = PortAllocator((low, high), lease_dir=lease_dir)
    return [_outcome_of(allocator.acquire) for _ in range(times)]


def construct(lease_dir: str) -> Dict[str, Any]:
    return _outcome_of(lambda: PortAllocator(lease_dir=lease_dir).lease_dir)


def hold_lease(lease_dir: str, port: int) -> str:
    """Lease ``port`` and keep it (the child holds it until told to exit)."""
    lease = PortAllocator((port, port), lease_dir=lease_dir).acquire_port(port)
    return oct(os.stat(os.path.join(lease_dir, f"port-{lease.port}.lock")).st_mode & 0o7777)


class SharedDirectoryMixin:
    """A sticky world-writable lease directory (like /tmp) and a window of 2 quiet ports."""

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.lease_dir = tempfile.mkdtemp(prefix="harness-test-shared-")
        os.chmod(self.lease_dir, 0o1777)
        self.addCleanup(shutil.rmtree, self.lease_dir, True)  # type: ignore[attr-defined]
        self.window = quiet_window(2, test=self)  # type: ignore[arg-type]
        self.port, self.spare = self.window

    def lock_path(self, port: int) -> str:
        return os.path.join(self.lease_dir, f"port-{port}.lock")


class LeaseDirectoryRulesTest(unittest.TestCase):
    def setUp(self) -> None:
        self.parent = tempfile.mkdtemp(prefix="harness-test-")
        self.addCleanup(shutil.rmtree, self.parent, True)

    def make(self, mode: int) -> str:
        path = os.path.join(self.parent, f"leases-{mode:o}")
        os.mkdir(path)
        os.chmod(path, mode)
        return path

    def test_a_directory_others_can_write_without_the_sticky_bit_is_refused(self) -> None:
        # Anyone could unlink a held lock file and lock a new one at its path:
        # two processes would both believe they hold the port.
        for mode in (0o777, 0o770, 0o733):
            with self.subTest(mode=oct(mode)):
                path = self.make(mode)
                with self.assertRaises(HarnessError) as caught:
                    PortAllocator(lease_dir=path)
                message = str(caught.exception)
                self.assertIn(path, message)
                self.assertIn(f"mode {mode:04o}", message)
                self.assertIn("sticky", message)
                self.assertIn(f"chmod +t {path}", message)
        sticky = self.make(0o1777)
        self.assertEqual(PortAllocator(lease_dir=sticky).lease_dir, sticky)

    @needs_root
    def test_a_directory_of_another_user_is_refused_naming_owner_and_mode(self) -> None:
        path = self.make(0o1777)
        os.chown(path, OTHER_UID, OTHER_UID)
        with self.assertRaises(HarnessError) as caught:
            PortAllocator(lease_dir=path)
        message = str(caught.exception)
        for part in (path, f"uid {OTHER_UID}", "mode 1777", "HARNESS_LEASE_DIR"):
            self.assertIn(part, message)

    @needs_root
    def test_a_directory_the_user_cannot_create_files_in_is_refused_at_once(self) -> None:
        os.chmod(self.parent, 0o755)
        path = self.make(0o755)  # root's, readable by all, writable by root only
        outcome = run_as(OTHER_UID, construct, path)
        self.assertEqual(outcome.how, "returned", outcome)
        result = outcome.value
        self.assertEqual(result.get("error"), "HarnessError", result)
        for part in (path, "cannot create lock files", "mode 0755", "uid 0", "chmod 1777"):
            self.assertIn(part, result["message"])


class PlantedLockFileTest(SharedDirectoryMixin, unittest.TestCase):
    """Whatever sits at a port's lock file path, the port is skipped, and
    asking for that port says what is there and who put it there."""

    def plant(self, kind: str, as_uid: Optional[int]) -> int:
        """Put a ``kind`` entry at the lock file path of ``self.port``; return its owner."""
        path = self.lock_path(self.port)
        elsewhere = os.path.join(tempfile.gettempdir(), "harness-test-not-a-lease")

        def make() -> None:
            if kind == "FIFO":
                os.mkfifo(path, 0o666)
            elif kind == "symlink":
                os.symlink(elsewhere, path)
            elif kind == "directory":
                os.mkdir(path)
            elif kind == "socket":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(path)
                sock.close()
            elif kind == "mode 0000":
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0))
                os.chmod(path, 0)

        if as_uid is None or as_uid == os.getuid():
            make()
            return os.getuid()
        outcome = run_as(as_uid, make)
        self.assertEqual(outcome.how, "returned", outcome)
        return as_uid

    def check_planted(self, kind: str, planter: int, prober: Optional[int]) -> None:
        wanted = run_as(prober, lease_port, self.lease_dir, self.port)
        self.assertEqual(wanted.how, "returned", f"asking for port {self.port}: {wanted}")
        result = wanted.value
        self.assertEqual(result.get("error"), "PortUnavailable", result)
        message = result["message"]
        self.assertIn(self.lock_path(self.port), message)
        self.assertIn(kind, message)
        self.assertIn(f"uid {planter}", message)
        self.assertIn("remove it", message)
        # A free choice skips the port every time and hands out the other one.
        chosen = run_as(prober, lease_any, self.lease_dir, *self.window, 6)
        self.assertEqual(chosen.how, "returned", chosen)
        self.assertEqual(chosen.value, [{"port": self.spare}] * 6)
        # The planted port alone: the range is exhausted, and the error says why.
        alone = run_as(prober, lease_any, self.lease_dir, self.port, self.port)
        self.assertEqual(alone.how, "returned", alone)
        result = alone.value[0]
        self.assertEqual(result.get("error"), "PortUnavailable", result)
        self.assertNotIn("in use or leased by other processes", result["message"])
        self.assertIn("lock file", result["message"])
        self.assertIn(kind, result["message"])

    def test_planted_entries_are_skipped_and_named(self) -> None:
        planter = OTHER_UID if IS_ROOT else None
        path = self.lock_path(self.port)
        for kind in ("FIFO", "symlink", "directory", "socket"):
            with self.subTest(kind=kind):
                try:
                    self.check_planted(kind, self.plant(kind, planter), None)
                finally:
                    if os.path.isdir(path) and not os.path.islink(path):
                        os.rmdir(path)
                    elif os.path.lexists(path):
                        os.unlink(path)

    def test_an_unreadable_lock_file_is_skipped_and_named(self) -> None:
        # Root reads any file, so the prober must be an ordinary user.
        if IS_ROOT:
            planter, prober = OTHER_UID, THIRD_UID
        else:
            planter, prober = os.getuid(), None
        self.plant("mode 0000", planter)
        self.check_planted("mode 0000", planter, prober)

    def test_a_fifo_does_not_hang_reap(self) -> None:
        self.plant("FIFO", None)
        env = python_env()
        env["HARNESS_LEASE_DIR"] = self.lease_dir
        proc = subprocess.run([sys.executable, "-m", "harness", "reap", "--dry-run",
                               "--runner", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn(f"left alone: lease file {self.lock_path(self.port)}", proc.stdout)
        self.assertIn("FIFO", proc.stdout)
        self.assertTrue(stat.S_ISFIFO(os.lstat(self.lock_path(self.port)).st_mode))


@needs_root
class OtherUsersLeasesTest(SharedDirectoryMixin, unittest.TestCase):
    def test_lock_files_are_usable_by_every_user_whatever_their_creators_umask(self) -> None:
        holder = start_as(OTHER_UID, hold_lease, self.lease_dir, self.port, umask=0o077,
                          hold=True)
        self.addCleanup(holder.end)
        held = holder.result()
        self.assertEqual(held.how, "returned", held)
        self.assertEqual(held.value, "0o644", "a lock file must be readable by every user")
        info = os.stat(self.lock_path(self.port))
        self.assertEqual(info.st_uid, OTHER_UID)

        # Another ordinary user sees the lease, whatever the creator's umask.
        asked = run_as(THIRD_UID, lease_port, self.lease_dir, self.port)
        self.assertEqual(asked.how, "returned", asked)
        self.assertEqual(asked.value.get("error"), "PortUnavailable", asked.value)
        self.assertIn("leased by another harness process", asked.value["message"])
        chosen = run_as(THIRD_UID, lease_any, self.lease_dir, *self.window, 4)
        self.assertEqual(chosen.value, [{"port": self.spare}] * 4, chosen)

        # The holder dies without releasing: its lock file stays, unlocked.
        holder.end()
        self.assertTrue(os.path.exists(self.lock_path(self.port)))
        # The third user leases it and releases it; it cannot unlink another
        # user's file in a sticky directory, so the file stays ...
        again = run_as(THIRD_UID, lease_port, self.lease_dir, self.port)
        self.assertEqual(again.value, {"port": self.port}, again)
        self.assertEqual(os.stat(self.lock_path(self.port)).st_ino, info.st_ino)
        # ... and keeps working as the port's lock for everybody.
        self.assertEqual(lease_port(self.lease_dir, self.port), {"port": self.port})


def _fake_ipv6_less_socket(real: Callable[..., socket.socket], how: int) -> Callable[..., Any]:
    """A socket factory for a machine without IPv6: ``how`` is the errno it gives."""
    calls: List[int] = []

    def make(family: int, *args: Any, **kwargs: Any) -> socket.socket:
        calls.append(family)
        if family != socket.AF_INET6:
            return real(family, *args, **kwargs)
        if how == errno.EAFNOSUPPORT:  # booted with ipv6.disable=1
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
        sock = real(socket.AF_INET, *args, **kwargs)  # disable_ipv6=1: no ::1 to bind

        class NoAddress:
            def __getattr__(self, name: str) -> Any:
                return getattr(sock, name)

            def __enter__(self) -> "NoAddress":
                return self

            def __exit__(self, *exc: object) -> None:
                sock.close()

            def connect(self, address: Any) -> None:
                raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))

            bind = connect

        return NoAddress()  # type: ignore[return-value]

    make.calls = calls  # type: ignore[attr-defined]
    return make


class UnusableHostTest(unittest.TestCase):
    def test_ipv6_host_without_ipv6_says_so_at_once(self) -> None:
        for how in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            with self.subTest(errno=errno.errorcode[how]):
                fake = _fake_ipv6_less_socket(socket.socket, how)
                with mock.patch.object(ports, "_new_socket", fake):
                    allocator = PortAllocator(host="::1")
                    with self.assertRaises(HarnessError) as caught:
                        allocator.acquire()
                    message = str(caught.exception)
                    self.assertIn("IPv6", message)
                    self.assertIn("unavailable", message)
                    self.assertIn("127.0.0.1", message)  # what to use instead
                    self.assertNotIn("in use or leased", message)
                    self.assertLessEqual(len(fake.calls), 4, "it tried port after port")  # type: ignore[attr-defined]
                    with self.assertRaises(HarnessError) as caught:
                        allocator.acquire_port(quiet_window(1, test=self)[0])
                    self.assertIn("IPv6", str(caught.exception))
                    with self.assertRaises(HarnessError) as caught:
                        harness.listening_socket("::1")
                    self.assertIn("IPv6", str(caught.exception))

    @unittest.skipUnless(LINUX, "uses a Linux network namespace")
    def test_ipv6_host_on_a_machine_without_ipv6_for_real(self) -> None:
        script = ("import sys\nfrom harness import PortAllocator, HarnessError\n"
                  "try:\n    PortAllocator(host='::1').acquire()\n"
                  "except HarnessError as e:\n    print(type(e).__name__, e)\n"
                  "else:\n    print('leased')\n")
        if ipv6_available():
            if not (IS_ROOT and shutil.which("unshare") and shutil.which("ip")):
                self.skipTest("this machine has IPv6; switching it off in a network "
                              "namespace needs root, unshare and ip")
            ns_script = ("ip link set lo up && "
                         "echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6 && "
                         'exec "$0" -c "$1"')
            argv = ["unshare", "--net", "sh", "-c", ns_script, sys.executable, script]
        else:
            argv = [sys.executable, "-c", script]
        proc = subprocess.run(argv, env=python_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
        if proc.returncode != 0 and "unshare" in proc.stderr:
            self.skipTest(f"no network namespace here: {proc.stderr.strip()}")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertTrue(proc.stdout.startswith("HarnessError "), proc.stdout)
        self.assertIn("IPv6 is unavailable", proc.stdout)
        self.assertNotIn("in use or leased", proc.stdout)

    def test_a_host_that_is_not_an_address_of_this_machine_says_so(self) -> None:
        # 192.0.2.1 (TEST-NET-1) is never assigned to a machine.  In a child:
        # trying every port of the range, each until a connect times out,
        # would take hours.
        outcome = run_as(None, _outcome_of, PortAllocator(host="192.0.2.1").acquire)
        self.assertEqual(outcome.how, "returned", outcome)
        self.assertEqual(outcome.value.get("error"), "HarnessError", outcome.value)
        self.assertIn("192.0.2.1", outcome.value["message"])
        self.assertIn("not an address of this machine", outcome.value["message"])


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


def _free_privileged_port() -> Optional[int]:
    """A port below the unprivileged start that nothing listens on (and, as root, bindable)."""
    for port in range(min(_unprivileged_port_start(), 1024) - 1, 0, -1):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            continue
        except ConnectionRefusedError:
            pass
        except OSError:
            continue
        if not IS_ROOT or harness.is_port_free(port):
            return port
    return None


def privileged_attempts(port: int) -> Dict[str, Any]:
    return {
        "fixed": _outcome_of(lambda: PortAllocator().acquire_port(port)),
        "range": _outcome_of(lambda: PortAllocator((port, port)).acquire()),
        "handoff": _outcome_of(lambda: harness.listening_socket(port=port).close()),
    }


@unittest.skipUnless(LINUX, "net.ipv4.ip_unprivileged_port_start is Linux's")
class PrivilegedPortTest(unittest.TestCase):
    def test_a_privileged_port_says_it_needs_privileges(self) -> None:
        if _unprivileged_port_start() == 0:
            self.skipTest("net.ipv4.ip_unprivileged_port_start is 0: no port is privileged")
        user = OTHER_UID if IS_ROOT else None
        port = _free_privileged_port()
        if port is None:
            self.skipTest("every privileged port is in use")
        outcome = run_as(user, privileged_attempts, port)
        self.assertEqual(outcome.how, "returned", outcome)
        for attempt, result in outcome.value.items():
            with self.subTest(attempt=attempt):
                self.assertEqual(result.get("error"), "PortUnavailable", result)
                message = result["message"]
                self.assertIn(f"port {port}", message)
                self.assertIn("privileges", message)
                self.assertIn("ip_unprivileged_port_start", message)
                self.assertNotIn("unknown holder", message)
                self.assertNotIn("in use or leased", message)


if __name__ == "__main__":
    unittest.main()
