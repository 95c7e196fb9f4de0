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


if __name__ == "__main__":
    unittest.main()
