"""Helpers for the server lifecycle tests (test_process*.py); holds no tests."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

from harness._os import procinfo as _procinfo

SERVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "servers")

OK_APP = '''
import http.server, json, os, socket

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"message": "ok", "path": self.path, "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

host, port = os.environ["HOST"], int(os.environ["PORT"])
http.server.HTTPServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
if os.environ.get("LISTEN_PID") == str(os.getpid()):
    server = http.server.HTTPServer((host, port), H, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=3)
else:
    server = http.server.HTTPServer((host, port), H)
server.serve_forever()
'''


def server_argv(name: str, *extra: str) -> List[str]:
    return [sys.executable, os.path.join(SERVERS, name)] + list(extra)


def pid_alive(pid: int) -> bool:
    token = _procinfo.identity(pid)
    return token is not None and _procinfo.is_alive(token)


def my_harness_dirs() -> set:
    """harness temp dirs created by this process (other processes make theirs)."""
    import tempfile

    from harness._server import marker as _marker
    tmp, mine = tempfile.gettempdir(), _marker.owner_id()
    return {d for d in os.listdir(tmp)
            if d.startswith("harness-") and _marker.read_owner(os.path.join(tmp, d)) == mine}


def remove_kept(log_path: Optional[str]) -> None:
    """Remove the log harness kept for a failed server (in the kept-logs folder)."""
    from harness._server import logstore
    if log_path:
        logstore.discard(log_path)


def _record_kept_logs() -> List[str]:
    """Every log harness keeps in this process from now on (failed starts keep
    theirs in a folder shared with other processes, so only this process's
    own record says which were this test's)."""
    from harness._server import logstore
    record: List[str] = []
    keep = logstore.keep

    def keep_and_record(source: str, name: str, pid: Optional[int]) -> Optional[str]:
        path = keep(source, name, pid)
        if path is not None:
            record.append(path)
        return path
    logstore.keep = keep_and_record  # type: ignore[assignment]
    return record


_KEPT_HERE = _record_kept_logs()


class NoKeptLogsMixin:
    """Fails a test that leaves a kept failure log behind: a test that makes a
    start fail on purpose removes its log (``remove_kept``)."""

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        del _KEPT_HERE[:]
        # A cleanup added first runs last: after the test's own cleanups.
        self.addCleanup(self._no_kept_logs)  # type: ignore[attr-defined]

    def _no_kept_logs(self) -> None:
        left = [path for path in _KEPT_HERE if os.path.exists(path)]
        del _KEPT_HERE[:]
        for path in left:  # the next test starts clean whatever this one asserts
            remove_kept(path)
        self.assertEqual(left, [], "kept failure logs left behind")  # type: ignore[attr-defined]


class NoLeftoversMixin(NoKeptLogsMixin):
    """Fails a test that leaves a child process, a harness temp dir or a kept log behind."""

    def setUp(self) -> None:
        super().setUp()
        self._dirs_before = my_harness_dirs()
        self._children_before = set(_procinfo.descendants(os.getpid()))

    def tearDown(self) -> None:
        from harness._server import supervisor
        zygotes = set(supervisor.running())  # they live as long as the runner, by design
        children = set(_procinfo.descendants(os.getpid())) - self._children_before - zygotes
        children = {p for p in children if pid_alive(p)}
        self.assertEqual(children, set(), "child processes left behind")
        self.assertEqual(my_harness_dirs() - self._dirs_before, set(), "temp dirs left behind")
        super().tearDown()
