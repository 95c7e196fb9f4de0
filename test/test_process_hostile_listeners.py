"""Readiness never accepts a listener that is not the server's.

A hostile neighbour on the same host can answer on the server's port in
several ways; each must fail readiness (or move the server to a new port),
never be reported ready with the neighbour answering:

* a dual-stack ``[::]`` listener takes the leased port while the server is
  slow to bind (it sits in the IPv6 table, which 0.1 never read);
* a ``SO_REUSEPORT`` co-listener on ``127.0.0.1:PORT`` next to a server
  bound to ``0.0.0.0``: *a* listener on the port is the server's, another
  is not;
* a callable readiness check, which never talks to the port at all.
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import sys
import threading
import time
import unittest

from _process_helpers import NoLeftoversMixin
from _support import ipv6_available

from harness import HttpCheck, LogCheck, ServerProcess
from harness._os import proc

HANG = 30.0
LINUX = proc.HAVE_PROC

# Serves /health 200 with its pid, after binding with SO_REUSEPORT to $BIND:$PORT.
REUSEPORT_APP = r'''
import http.server, json, os, socket, time
time.sleep(float(os.environ.get("BIND_DELAY", "0")))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = int(os.environ.get("STATUS", "200"))
        body = json.dumps({"who": "server", "pid": os.getpid()}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.HTTPServer):
    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
S((os.environ.get("BIND", os.environ["HOST"]), int(os.environ["PORT"])), H).serve_forever()
'''


class Intruder:
    """An HTTP server of the test process answering 200 {"who": "intruder"}."""

    def __init__(self, test: unittest.TestCase, address: tuple, family: int = socket.AF_INET,
                 reuseport: bool = False, dual_stack: bool = False) -> None:
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"who": "intruder", "message": "ok"}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class S(http.server.HTTPServer):
            address_family = family

            def server_bind(self) -> None:
                if reuseport:
                    self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if dual_stack:
                    self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                socket.socket.bind(self.socket, self.server_address)
                self.server_address = self.socket.getsockname()[:2]

        self.server = S(address, H)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()
        test.addCleanup(self.thread.join, HANG)
        test.addCleanup(self.server.server_close)
        test.addCleanup(self.server.shutdown)


@unittest.skipUnless(LINUX, "listener ownership is read from Linux's socket tables")
class ForeignListenerTest(NoLeftoversMixin, unittest.TestCase):
    def start_in_thread(self, server: ServerProcess) -> tuple:
        """Start ``server`` in a thread; (thread, result list) once its port is known."""
        result: list = []

        def start() -> None:
            try:
                result.append(server.start())
            except Exception as exc:  # reported by the test's assertions
                result.append(exc)
        starter = threading.Thread(target=start)
        starter.start()
        end = time.monotonic() + HANG
        while server.port is None and time.monotonic() < end:
            time.sleep(0.001)
        return starter, result

    def wait_listening(self, port: int) -> None:
        end = time.monotonic() + HANG
        while time.monotonic() < end:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.005)
        self.fail(f"the server never listened on {port}")

    def assertMovedAwayFrom(self, server: ServerProcess, starter: threading.Thread,
                            result: list, taken: int) -> None:
        starter.join(HANG)
        try:
            self.assertEqual(result, [server], "start() did not return the server")
            self.assertNotEqual(server.port, taken, "ready on the port the intruder answers")
            self.assertEqual(server.get("/health").json()["who"], "server")
            self.assertIn(f"port {taken} was lost (port answered by another process: pid "
                          f"{os.getpid()}", server.output())
        finally:
            server.stop()

    @unittest.skipUnless(ipv6_available(), "needs an IPv6 loopback")
    def test_dual_stack_intruder_on_a_slow_binders_port_moves_the_server(self) -> None:
        server = ServerProcess(REUSEPORT_APP, env={"BIND_DELAY": "1.0"},
                               health=HttpCheck(json={"who": str}), start_timeout=HANG)
        starter, result = self.start_in_thread(server)
        taken = server.port
        # [::]:PORT, dual-stack: it takes 127.0.0.1:PORT's connections too.
        Intruder(self, ("::", taken), socket.AF_INET6, dual_stack=True)
        self.assertMovedAwayFrom(server, starter, result, taken)

    @unittest.skipUnless(hasattr(socket, "SO_REUSEPORT"), "needs SO_REUSEPORT")
    def test_reuseport_co_listener_moves_the_server(self) -> None:
        first = os.path.join(self.make_dir(), "first-launch-done")
        # The first launch answers 503 (never ready itself), the relaunched one 200.
        app = (f"import os\nif not os.path.exists({first!r}):\n"
               f"    open({first!r}, 'w').close()\n    os.environ['STATUS'] = '503'\n"
               + REUSEPORT_APP)
        server = ServerProcess(app, env={"BIND": "0.0.0.0"}, start_timeout=HANG)
        starter, result = self.start_in_thread(server)
        taken = server.port
        self.wait_listening(taken)
        Intruder(self, ("127.0.0.1", taken), reuseport=True)  # shares the port, answers 200
        self.assertMovedAwayFrom(server, starter, result, taken)

    @unittest.skipUnless(hasattr(socket, "SO_REUSEPORT"), "needs SO_REUSEPORT")
    def test_a_callable_check_also_needs_every_listener_to_be_the_servers(self) -> None:
        go = os.path.join(self.make_dir(), "go")
        server = ServerProcess(REUSEPORT_APP, env={"BIND": "0.0.0.0"},
                               health=lambda s: os.path.exists(go), start_timeout=HANG)
        starter, result = self.start_in_thread(server)
        taken = server.port
        self.wait_listening(taken)
        Intruder(self, ("127.0.0.1", taken), reuseport=True)
        open(go, "w").close()  # the check passes from now on; the listener check must not
        self.assertMovedAwayFrom(server, starter, result, taken)

    def make_dir(self) -> str:
        import shutil
        import tempfile
        path = tempfile.mkdtemp(prefix="t-listeners-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def test_listens_false_is_for_servers_without_a_port(self) -> None:
        worker = [sys.executable, "-c", "import time; print('working', flush=True); "
                                        "time.sleep(60)"]
        with ServerProcess(argv=worker, listens=False, health=LogCheck("working")) as server:
            self.assertTrue(server.running)
        with self.assertRaisesRegex(ValueError, "listens=False"):
            ServerProcess(argv=worker, listens=False, health=HttpCheck())

    @unittest.skipUnless(os.geteuid() == 0 and sys.version_info >= (3, 9) and ipv6_available(),
                         "needs root to run an intruder as another user")
    def test_another_users_intruder_is_named_by_uid(self) -> None:
        import subprocess
        python = "/usr/bin/python3"  # the test's own may be in a directory nobody may enter
        if not os.path.exists(python):
            self.skipTest("no /usr/bin/python3 for the other user")
        code = ("import socket, sys\n"
                "port = int(sys.stdin.readline())\n"
                "s = socket.socket(socket.AF_INET6)\n"
                "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
                "s.bind(('::', port))\ns.listen(8)\nprint('up', flush=True)\n"
                "while True:\n    c, _ = s.accept()\n"
                "    c.recv(1000)\n"
                "    c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok')\n"
                "    c.close()\n")
        intruder = subprocess.Popen([python, "-c", code], user=65534, cwd="/",
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    universal_newlines=True)
        try:
            server = ServerProcess(REUSEPORT_APP, env={"BIND_DELAY": "1.0"},
                                   health=HttpCheck(), start_timeout=HANG)
            starter, result = self.start_in_thread(server)
            taken = server.port
            intruder.stdin.write(f"{taken}\n")
            intruder.stdin.flush()
            self.assertEqual(intruder.stdout.readline().strip(), "up")
            starter.join(HANG)
            try:
                self.assertEqual(result, [server])
                self.assertNotEqual(server.port, taken)
                self.assertRegex(server.output(), rf"port {taken} was lost \(port answered by "
                                                  rf"another process: .*uid 65534")
            finally:
                server.stop()
        finally:
            intruder.kill()
            intruder.wait(HANG)
            intruder.stdin.close()
            intruder.stdout.close()


def _user_name() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return ""


if __name__ == "__main__":
    unittest.main()
