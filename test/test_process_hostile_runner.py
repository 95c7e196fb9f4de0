"""The runner's side under hostile conditions: configuration that goes bad
after start(), signals and interpreters, kept logs that must not pile up,
and arguments that would only fail at spawn.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from _process_helpers import OK_APP, NoLeftoversMixin, my_harness_dirs, pid_alive, remove_kept
from _support import python_env

from harness import HarnessError, ServerProcess, ServerStartError, start_server
from harness.ports import held_ports

HANG = 30.0
CRASH = "import sys\nprint('crash-marker', flush=True)\nsys.exit(3)\n"


class ManyOpenFilesTest(unittest.TestCase):
    """A runner with more than 1024 files open (a load test's connections,
    a big fixture): ``select()`` cannot watch a descriptor past 1023, and
    the zygote inherits the runner's numbers for its sockets."""

    def test_a_server_starts_and_stops_in_a_runner_with_2000_files_open(self) -> None:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 2200:
            self.skipTest(f"RLIMIT_NOFILE hard limit {hard} < 2200")
        code = ("import os, resource\n"
                "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
                "resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2200), hard))\n"
                "held = [os.open(os.devnull, os.O_RDONLY) for _ in range(2000)]\n"
                "from harness import start_server\n"
                f"server = start_server({OK_APP!r})\n"
                "print(min(held) < 1024 < max(held), server.get('/x').json()['path'],\n"
                "      server.stop())\n")
        done = subprocess.run([sys.executable, "-c", code], env=python_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=HANG * 2)
        self.assertEqual((done.returncode, done.stdout.splitlines()[-1:]),
                         (0, ["True /x 143"]), done.stdout)


class LateConfigurationTest(NoLeftoversMixin, unittest.TestCase):
    """HARNESS_TIMEOUT_FACTOR changed after start(): stop() still ends everything."""

    def set_factor(self, value: str) -> None:
        os.environ["HARNESS_TIMEOUT_FACTOR"] = value
        self.addCleanup(os.environ.pop, "HARNESS_TIMEOUT_FACTOR", None)

    def assertStopsCleanly(self, value: str) -> None:
        server = start_server(OK_APP)
        directory = os.path.dirname(server.log_path)
        self.set_factor(value)
        started = time.monotonic()
        with self.assertLogs("harness", "WARNING") if value in ("abc", "0") else _nothing():
            self.assertEqual(server.stop(), 143)
        self.assertLess(time.monotonic() - started, HANG)
        self.assertFalse(pid_alive(server.pid))
        self.assertNotIn(server.port, held_ports())
        self.assertFalse(os.path.exists(directory))

    def test_a_factor_that_is_not_a_number(self) -> None:
        self.assertStopsCleanly("abc")

    def test_a_factor_of_zero(self) -> None:
        self.assertStopsCleanly("0")

    def test_a_huge_factor_is_clamped_not_overflowed(self) -> None:
        self.assertStopsCleanly("1e9")

    def test_a_bad_factor_at_start_is_named_before_anything_starts(self) -> None:
        self.set_factor("abc")
        before = my_harness_dirs()
        with self.assertRaisesRegex(ValueError, "HARNESS_TIMEOUT_FACTOR must be a positive") \
                as raised:
            start_server(OK_APP)
        self.assertIn("troubleshooting.html#timeout-factor", str(raised.exception))
        self.assertEqual(my_harness_dirs(), before)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


class ImportSideEffectTest(unittest.TestCase):
    def test_importing_harness_installs_no_signal_handler(self) -> None:
        code = ("import signal\nbefore = (signal.getsignal(signal.SIGTERM), "
                "signal.getsignal(signal.SIGINT))\n"
                "import harness, harness.pytest_plugin\n" if _have_pytest() else
                "import signal\nbefore = (signal.getsignal(signal.SIGTERM), "
                "signal.getsignal(signal.SIGINT))\nimport harness\n")
        code += ("after = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))\n"
                 "print(before == after)\n")
        out = subprocess.run([sys.executable, "-c", code], env=python_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, timeout=HANG).stdout
        self.assertEqual(out.strip().splitlines()[-1], "True", out)


def _have_pytest() -> bool:
    try:
        import pytest  # noqa: F401
    except ImportError:
        return False
    return True


CATCH_BREAK_TEST = r'''
import os, sys, time, unittest
from harness import ServerTestCase

OK_APP = {ok_app!r}


class Slow(ServerTestCase):
    def test_server_then_ctrl_c(self):
        server = self.start_server(OK_APP)
        with open({pid_file!r} + ".tmp", "w") as f:
            f.write(str(server.pid))
        os.replace({pid_file!r} + ".tmp", {pid_file!r})
        end = time.monotonic() + 20
        while time.monotonic() < end and not os.path.exists({go_file!r}):
            time.sleep(0.01)

    def test_z_after(self):  # runs last: the first Ctrl-C must stop the run before it
        pass
'''


class SignalTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="t-signals-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def wait_for(self, path: str, proc: subprocess.Popen) -> None:
        end = time.monotonic() + HANG
        while not os.path.exists(path) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
        self.assertTrue(os.path.exists(path), proc.communicate()[0] if proc.poll() is not None
                        else "timed out")

    def test_unittest_catch_break_keeps_its_graceful_first_ctrl_c(self) -> None:
        pid_file, go_file = os.path.join(self.dir, "pid"), os.path.join(self.dir, "go")
        with open(os.path.join(self.dir, "test_cb.py"), "w") as f:
            f.write(CATCH_BREAK_TEST.format(ok_app=OK_APP, pid_file=pid_file, go_file=go_file))
        bootstrap = ("import signal, sys, unittest\n"
                     "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                     "unittest.main(module=None, argv=['python -m unittest', '-c', 'test_cb'])\n")
        proc = subprocess.Popen([sys.executable, "-c", bootstrap], cwd=self.dir, env=python_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.wait_for(pid_file, proc)
        with open(pid_file) as f:
            server = int(f.read())
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)  # (test code) let unittest's handler run before the test goes on
        open(go_file, "w").close()
        out, _ = proc.communicate(timeout=HANG)
        self.assertNotIn("KeyboardInterrupt", out)
        self.assertIn("Ran 1 test", out, "the run stopped after the test, with its summary")
        self.assertFalse(pid_alive(server))

    def test_ctrl_c_during_start_keeps_nothing(self) -> None:
        pid_file = os.path.join(self.dir, "pid")
        slow = ("import os, time\n"
                f"open({pid_file!r} + '.tmp', 'w').write(str(os.getpid()))\n"
                f"os.replace({pid_file!r} + '.tmp', {pid_file!r})\n"
                "time.sleep(60)\n")
        code = ("import json, signal, sys, tempfile\n"
                "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                "from harness import start_server\n"
                "try:\n"
                f"    start_server({slow!r}, start_timeout=60)\n"
                "except KeyboardInterrupt:\n"
                "    print('interrupted', flush=True)\n")
        env = python_env()
        tmp = os.path.join(self.dir, "tmp")
        os.mkdir(tmp)
        env["TMPDIR"] = tmp
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, universal_newlines=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.wait_for(pid_file, proc)
        with open(pid_file) as f:
            server = int(f.read())
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=HANG)
        self.assertIn("interrupted", out)
        self.assertFalse(pid_alive(server))
        self.assertEqual(os.listdir(tmp), [], "an interrupted start left files behind")


class KeptLogsTest(NoLeftoversMixin, unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.logs = tempfile.mkdtemp(prefix="t-kept-logs-")
        self.addCleanup(shutil.rmtree, self.logs, True)
        for var, value in (("HARNESS_LOG_DIR", self.logs), ("HARNESS_KEEP_LOGS", "3")):
            os.environ[var] = value
            self.addCleanup(os.environ.pop, var, None)

    def test_failed_starts_keep_their_logs_in_one_bounded_folder(self) -> None:
        paths = []
        for _ in range(5):
            with self.assertRaises(ServerStartError) as ctx:
                start_server(CRASH)
            paths.append(ctx.exception.log_path)
            self.assertIn(f"kept at {ctx.exception.log_path}", str(ctx.exception))
            with open(ctx.exception.log_path) as f:
                self.assertIn("crash-marker", f.read())
        self.assertEqual(sorted(os.listdir(self.logs)),
                         sorted(os.path.basename(p) for p in paths[-3:]))
        self.assertTrue(all(os.path.dirname(p) == self.logs for p in paths))

    def test_zero_keeps_none(self) -> None:
        os.environ["HARNESS_KEEP_LOGS"] = "0"
        with self.assertRaises(ServerStartError) as ctx:
            start_server(CRASH)
        self.assertIsNone(ctx.exception.log_path)
        self.assertIn("not kept (HARNESS_KEEP_LOGS=0)", str(ctx.exception))
        self.assertIn("crash-marker", str(ctx.exception))  # the log is in the message

    def test_the_default_folder_is_private_and_refuses_a_planted_symlink(self) -> None:
        os.environ.pop("HARNESS_LOG_DIR")
        tmp = tempfile.mkdtemp(prefix="t-tmp-")
        self.addCleanup(shutil.rmtree, tmp, True)
        previous = tempfile.tempdir
        tempfile.tempdir = tmp
        self.addCleanup(setattr, tempfile, "tempdir", previous)
        with self.assertRaises(ServerStartError) as ctx:
            start_server(CRASH)
        folder = os.path.dirname(ctx.exception.log_path)
        self.assertEqual(os.path.dirname(folder), tmp)
        self.assertEqual(os.stat(folder).st_mode & 0o777, 0o700)
        remove_kept(ctx.exception.log_path)
        shutil.rmtree(folder, ignore_errors=True)
        os.symlink(self.logs, folder)  # someone plants a link where the folder goes
        with self.assertRaises(ServerStartError) as ctx:
            start_server(CRASH)
        self.assertIsNone(ctx.exception.log_path)
        self.assertRegex(str(ctx.exception), "not kept: .*not a directory .*symlink")
        self.assertIn("crash-marker", str(ctx.exception))
        self.assertEqual(os.listdir(self.logs), [], "a log was written through the link")


class UpFrontArgumentTest(unittest.TestCase):
    def test_nul_bytes_are_refused_before_anything_starts(self) -> None:
        before = my_harness_dirs()
        with self.assertRaisesRegex(ValueError, r"env\['A'\] contains a NUL byte"):
            ServerProcess(OK_APP, env={"A": "x\0y"})
        with self.assertRaisesRegex(ValueError, r"argv\[1\] contains a NUL byte"):
            ServerProcess(argv=[sys.executable, "a\0b"])
        self.assertEqual(my_harness_dirs(), before)

    @unittest.skipUnless(os.geteuid() == 0 and sys.platform.startswith("linux")
                         and shutil.which("mount"), "needs root to mount a tiny tmpfs")
    def test_a_full_temp_dir_is_a_harness_error_and_leaves_nothing(self) -> None:
        full = tempfile.mkdtemp(prefix="t-full-")
        self.addCleanup(shutil.rmtree, full, True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", full],
                          stderr=subprocess.DEVNULL).returncode != 0:
            self.skipTest("cannot mount a tmpfs here")
        self.addCleanup(subprocess.run, ["umount", full])
        with open(os.path.join(full, "filler"), "wb") as f:
            try:
                f.write(b"x" * (1 << 20))
            except OSError:
                pass
        previous = tempfile.tempdir
        tempfile.tempdir = full
        self.addCleanup(setattr, tempfile, "tempdir", previous)
        with self.assertRaisesRegex(HarnessError, "free space"):
            start_server(OK_APP)
        self.assertEqual(sorted(os.listdir(full)), ["filler"])


if __name__ == "__main__":
    unittest.main()
