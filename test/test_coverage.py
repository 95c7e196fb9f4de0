"""Coverage of servers: setting COVERAGE_PROCESS_START is all a user has to do.

A server's lines only count if coverage runs inside the server process and
writes its data when the server stops.  For ``app_code`` servers both are
harness's job: the boot script starts coverage when the variable is set
(coverage >= 7.10 does it anyway through its own .pth file; older releases,
such as the last one for Python 3.8, do not), and SIGTERM becomes
``SystemExit`` so coverage's atexit hook saves the data.
"""
from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import unittest
from typing import Dict, List, Optional

from harness import HttpCheck, ServerProcess
from harness._server import launch as _launch

# The user's code lives in a module of their project, so its measured lines
# are keyed by a path that still exists when the report is made.
SHOP = '''\
def price(kind):
    if kind == "book":
        return 12  # TAKEN
    return 99  # NEVER
'''

APP = '''\
import http.server
import json
import os
from urllib.parse import parse_qs, urlparse

import shop


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            body = {"status": "ok"}
        elif url.path == "/price":
            body = {"price": shop.price(parse_qs(url.query)["kind"][0])}  # APP TAKEN
        else:
            body = {"error": "not found"}  # APP NEVER
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
'''


# A SIGTERM that arrives while coverage's tracer holds its data lock.
# coverage 7.5.5 to 7.17 take that lock in Python code (Collector.lock_data,
# called by the C tracer at every call into a measured file): a SIGTERM
# handled there raised SystemExit with the lock taken, and coverage's save at
# exit waited for it for ever (the server was SIGKILLed at the end of
# stop_timeout: -9, no data).  The trap makes the first acquire take the
# real lock and SIGTERM the process in one C call, so the handler runs in
# lock_data with the lock held, as a SIGTERM arriving at that moment does.
TRAP_APP = '''\
import collections, functools, operator, os, signal, sys
import coverage
import shop

collector = coverage.Coverage.current()._collector
if not callable(getattr(type(collector), "lock_data", None)):
    print("this coverage takes its data lock in C", flush=True)
    sys.exit(3)


class Trap:
    def __init__(self, lock):
        self.lock, self.armed = lock, True

    @property
    def acquire(self):
        if not self.armed:
            return self.lock.acquire
        self.armed = False
        steps = [self.lock.acquire, functools.partial(os.kill, os.getpid(), signal.SIGTERM)]
        return functools.partial(collections.deque(maxlen=0).extend,
                                 map(operator.methodcaller("__call__"), steps))

    def release(self):
        self.lock.release()

    def __enter__(self):
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


collector.data_lock = Trap(collector.data_lock)
print("price", shop.price("book"), flush=True)
print("not reached: SIGTERM ends the app", flush=True)
'''

# The same moment without coverage, on any version of it: a Python trace
# function whose module is named like coverage's takes a lock, and SIGTERM
# arrives while it holds it; an atexit function takes it again, as coverage's
# save does.  The handler must let the trace function finish first.
STAND_IN_APP = '''\
import atexit, os, signal, sys, threading

lock = threading.Lock()


def save():
    with lock:
        print("saved", flush=True)


atexit.register(save)
TRACER = """
def tracer(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "measured":
        lock.acquire()
        os.kill(os.getpid(), signal.SIGTERM)
        lock.release()
"""
namespace = {"__name__": "coverage.stand_in", "lock": lock, "os": os, "signal": signal}
exec(compile(TRACER, "<coverage stand-in>", "exec"), namespace)


def measured():
    return 1


sys.settrace(namespace["tracer"])
measured()
print("not reached: SIGTERM ends the app", flush=True)
'''

def line_of(source: str, marker: str) -> int:
    """The 1-based number of the line of ``source`` that ends with ``# marker``."""
    matches = [n for n, line in enumerate(source.splitlines(), 1)
               if line.rstrip().endswith("# " + marker)]
    assert len(matches) == 1, (marker, matches)
    return matches[0]


def write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


@unittest.skipUnless(importlib.util.find_spec("coverage"), "coverage is not installed")
class ServerCoverageTest(unittest.TestCase):

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory(prefix="covtest-")
        self.addCleanup(tmp.cleanup)
        self.tmp = os.path.realpath(tmp.name)  # coverage records real paths
        self.project = os.path.join(self.tmp, "project")
        os.mkdir(self.project)
        self.shop = write(os.path.join(self.project, "shop.py"), SHOP)
        self.data_file = os.path.join(self.tmp, ".coverage")
        self.rcfile = write(os.path.join(self.tmp, ".coveragerc"),
                            f"[run]\nparallel = True\ndata_file = {self.data_file}\n")

    def coverage_env(self) -> Dict[str, Optional[str]]:
        return {
            "COVERAGE_PROCESS_START": self.rcfile,
            # A run of this suite under `coverage run` with patch = subprocess
            # passes its own configuration this way; it would win over ours.
            "COVERAGE_PROCESS_CONFIG": None,
            "PYTHONPATH": os.pathsep.join(filter(None, [self.project,
                                                        os.environ.get("PYTHONPATH")])),
        }

    def data_files(self) -> List[str]:
        return sorted(name for name in os.listdir(self.tmp) if name.startswith(".coverage."))

    def combine(self):  # -> coverage.CoverageData
        """``coverage combine`` of the processes' data files into the data file."""
        import coverage
        self.assertTrue(self.data_files(), "the server wrote no coverage data")
        cov = coverage.Coverage(data_file=self.data_file, config_file=self.rcfile)
        cov.combine(data_paths=[self.tmp])
        cov.save()
        return cov.get_data()

    def test_app_code_server_is_measured_by_setting_the_variable(self) -> None:
        server = ServerProcess(APP, env=self.coverage_env(),
                               health=HttpCheck("/health", json={"status": "ok"}))
        self.addCleanup(server.stop)
        server.start()
        assert server.log_path is not None
        private_dir = os.path.realpath(os.path.dirname(server.log_path))
        self.assertEqual(server.get("/price?kind=book").json(), {"price": 12})
        self.assertEqual(self.data_files(), [], "data is written at exit, not before")
        # 143: the boot script's SIGTERM handler raised SystemExit, so the
        # interpreter exited normally and coverage's atexit hook saved the data.
        self.assertEqual(server.stop(), 143)
        self.assertFalse(os.path.exists(private_dir))

        data = self.combine()
        shop_lines = data.lines(self.shop) or []
        self.assertIn(line_of(SHOP, "TAKEN"), shop_lines)
        self.assertNotIn(line_of(SHOP, "NEVER"), shop_lines)

        # app_code itself is measured too, but under the path of its file in
        # harness's private dir, which stop() removed: its line numbers are
        # those of the app_code string, and a report needs it omitted.
        app_file = os.path.join(private_dir, "app.py")
        self.assertIn(app_file, data.measured_files())
        app_lines = data.lines(app_file) or []
        self.assertIn(line_of(APP, "APP TAKEN"), app_lines)
        self.assertNotIn(line_of(APP, "APP NEVER"), app_lines)

        import coverage
        reporter = coverage.Coverage(data_file=self.data_file, config_file=self.rcfile,
                                     omit=["*/harness-*/*"])
        reporter.load()
        report = io.StringIO()
        reporter.report(file=report, show_missing=True)
        self.assertIn("shop.py", report.getvalue())
        self.assertNotIn("app.py", report.getvalue())

    def test_boot_script_starts_coverage_without_a_pth_file(self) -> None:
        """Older coverage has no .pth file: the boot script alone must start it.

        ``-S`` skips site-packages and so every .pth file; coverage is put on
        the path through PYTHONPATH instead, which runs no .pth.
        """
        import coverage
        boot = _launch.BOOT_PATH
        app = write(os.path.join(self.project, "app.py"),
                    "import shop\nprint(shop.price('book'))\n")
        env = dict(os.environ)
        env.pop("COVERAGE_PROCESS_CONFIG", None)
        env["COVERAGE_PROCESS_START"] = self.rcfile
        env["PYTHONPATH"] = os.pathsep.join(
            [self.project, os.path.dirname(os.path.dirname(os.path.abspath(coverage.__file__)))])
        probe = [sys.executable, "-S", "-c", "import sys; print('coverage' in sys.modules)"]
        self.assertEqual(subprocess.run(probe, env=env, stdout=subprocess.PIPE,
                                        universal_newlines=True, timeout=60).stdout, "False\n",
                         "with -S nothing may start coverage before the boot script")
        done = subprocess.run([sys.executable, "-S", boot, "app", app], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=60)
        self.assertEqual((done.returncode, done.stdout), (0, "12\n"))
        shop_lines = self.combine().lines(self.shop) or []
        self.assertIn(line_of(SHOP, "TAKEN"), shop_lines)
        self.assertNotIn(line_of(SHOP, "NEVER"), shop_lines)

    def test_a_sigterm_while_coverage_holds_its_data_lock_still_saves_the_data(self) -> None:
        app = write(os.path.join(self.project, "app.py"), TRAP_APP)
        env = dict(os.environ)
        env.pop("COVERAGE_PROCESS_CONFIG", None)
        env["COVERAGE_PROCESS_START"] = self.rcfile
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.project, env.get("PYTHONPATH")]))
        # The timeout only catches the hang this test is about.
        done = subprocess.run([sys.executable, _launch.BOOT_PATH, "app", app], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=30)
        if done.returncode == 3:
            self.skipTest(done.stdout.strip())
        self.assertEqual((done.returncode, done.stdout), (143, ""))
        # Saved: what ran before the SIGTERM (shop's import); the app exited
        # as price() was entered, before its body.
        self.assertEqual(self.combine().lines(self.shop), [1])

    def test_boot_script_without_the_variable_does_not_import_coverage(self) -> None:
        """The common case pays nothing: no import, no data."""
        boot = _launch.BOOT_PATH
        app = write(os.path.join(self.project, "app.py"),
                    "import sys\nprint('coverage' in sys.modules)\n")
        env = dict(os.environ)
        for var in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"):
            env.pop(var, None)
        done = subprocess.run([sys.executable, boot, "app", app], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=60)
        self.assertEqual((done.returncode, done.stdout), (0, "False\n"))
        self.assertEqual(self.data_files(), [])


class BootSigtermTest(unittest.TestCase):
    """The boot script's SIGTERM handler, whether coverage is installed or not."""

    def test_a_sigterm_inside_a_coverage_trace_function_waits_for_it_to_return(self) -> None:
        tmp = tempfile.TemporaryDirectory(prefix="boottest-")
        self.addCleanup(tmp.cleanup)
        app = write(os.path.join(tmp.name, "app.py"), STAND_IN_APP)
        done = subprocess.run([sys.executable, _launch.BOOT_PATH, "app", app],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=30)  # catches the hang only
        self.assertEqual((done.returncode, done.stdout), (143, "saved\n"))


if __name__ == "__main__":
    unittest.main()
