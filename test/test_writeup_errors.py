"""The incident write-up's production-error suite, rewritten with harness.

The failure it chased: "address already in use", because several suites
picked ports from overlapping ranges (9000-9100, 9100-9200, ...) and one
probed a port free just before another bound it.  Its fix was separate
ranges, randomisation and a 2 s sleep after each test.  With harness a
port is *leased* before the server binds it, so suites may share one tight
range, run at the same time in several processes, and still never collide;
a range is optional (``port_range`` on the class) and a port held by a
stranger is skipped, or named in the error when asked for explicitly.

A stopped server's port keeps its connections in TIME_WAIT for about a
minute (the write-up's "insufficient time for the OS to release ports",
which no 2 s sleep fixes).  harness prefers ports without any, and hands
out such a port only when a range has nothing else left: a server that
sets SO_REUSEADDR binds it at once, and one that does not is relaunched on
another port.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
from typing import Any, List

from _support import python_env
from test_testcase import reserve_window

from harness.errors import PortUnavailable
from harness.testcase import ServerTestCase

APP = r'''
import http.server, json, os, socketserver

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK

    def do_GET(self):
        data = json.dumps({"status": "ok", "message": "up on " + os.environ["PORT"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 128

Server((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
'''

# One "suite" of the incident: three tests, each with a server, in a fixed range.
SUITE = '''
import unittest
from harness.testcase import ServerTestCase

APP = {app!r}

class ProductionErrorSuite(ServerTestCase):
    port_range = {port_range!r}

    def check(self):
        server = self.start_server(APP)
        low, high = self.port_range
        self.assertTrue(low <= server.port <= high, server.port)
        self.assertResponse(server.get("/health"), json={{"message": "up on %d" % server.port}})

    def test_a(self):
        self.check()

    def test_b(self):
        self.check()

    def test_c(self):
        self.check()
'''

HANG = 240  # a hang-catcher, not a timing assertion


class ProductionErrorTest(ServerTestCase):
    def test_three_suites_at_once_share_one_tight_range(self):
        window = reserve_window(self, 12)  # 9 servers from 3 processes at once
        directory = tempfile.mkdtemp(prefix="t5-suites-")
        self.addCleanup(shutil.rmtree, directory, True)
        with open(os.path.join(directory, "suite_prod.py"), "w") as f:
            f.write(SUITE.format(app=APP, port_range=(window[0], window[-1])))
        runs = [subprocess.Popen([sys.executable, "-m", "unittest", "suite_prod"],
                                 cwd=directory, env=python_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, universal_newlines=True)
                for _ in range(3)]
        outputs = []
        for run in runs:
            output, _ = run.communicate(timeout=HANG)
            outputs.append((run.returncode, output))
        for code, output in outputs:
            self.assertEqual(code, 0, output)
            self.assertIn("Ran 3 tests", output)
            self.assertNotIn("already in use", output)

    def test_servers_started_at_the_same_moment_get_distinct_ports(self):
        window = reserve_window(self, 10)

        class Suite(ServerTestCase):
            port_range = (window[0], window[-1])

        suite = Suite()
        servers: List[Any] = []
        errors: List[BaseException] = []
        gate = threading.Barrier(6)

        def start() -> None:
            gate.wait(timeout=HANG)
            try:
                servers.append(suite.start_server(APP))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANG)
        try:
            self.assertEqual(errors, [])
            self.assertEqual(len({s.port for s in servers}), 6)
            for server in servers:
                self.assertIn(server.port, window)
                self.assertResponse(server.get("/health"), json={"message": str})
        finally:
            suite.doCleanups()
        self.assertFalse(any(s.running for s in servers))

    def test_a_port_held_by_a_stranger_is_skipped(self):
        window = reserve_window(self, 3)
        stranger = socket.socket()
        self.addCleanup(stranger.close)
        stranger.bind(("127.0.0.1", window[1]))
        stranger.listen()

        class Suite(ServerTestCase):
            port_range = (window[0], window[-1])

        suite = Suite()
        try:
            ports = {suite.start_server(APP).port for _ in range(2)}
        finally:
            suite.doCleanups()
        self.assertEqual(ports, {window[0], window[2]})

    def test_a_taken_fixed_port_names_its_holder(self):
        port = reserve_window(self, 1)[0]
        holder = subprocess.Popen(
            [sys.executable, "-c", "import socket, sys\ns = socket.socket()\n"
             f"s.bind(('127.0.0.1', {port}))\ns.listen()\nprint('ok', flush=True)\n"
             "sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)
        self.addCleanup(holder.wait, HANG)
        self.addCleanup(holder.stdin.close)
        self.addCleanup(holder.stdout.close)
        self.assertEqual(holder.stdout.readline().strip(), "ok")
        with self.assertRaises(PortUnavailable) as caught:
            self.start_server(APP, port=port)
        self.assertIn(str(holder.pid), str(caught.exception))
        self.assertIn(str(port), str(caught.exception))


if __name__ == "__main__":
    unittest.main()
