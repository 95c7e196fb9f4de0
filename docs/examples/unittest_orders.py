import json
import os
import unittest

from harness import HttpCheck, ServerTestCase, load

APP = '''
import http.server, json, os, socketserver

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK

    def do_GET(self):
        if self.path == "/config":
            with open(os.environ["CONFIG"]) as f:
                body = json.load(f)
        else:
            body = {"status": "ok", "message": "orders service"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default of 5 drops a burst of connections

Server((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
'''


class OrdersTest(ServerTestCase):
    # ServerProcess arguments for every server of this class; keywords override them.
    server_defaults = {"health": HttpCheck("/health", json={"message": str}),
                       "env": {"CONFIG": os.devnull}}
    # Optional: where the class's ports come from.  Leases already keep suites
    # that share a range (or run in parallel processes) from colliding.
    port_range = (20000, 20999)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.shared = cls.start_class_server(APP)  # one server for the class's tests

    def setUp(self):
        super().setUp()  # always call super(): the mixin cooperates with other mixins

    def server_options(self):
        # Options that depend on the test: each test's servers run in a
        # private directory of their own.
        return dict(super().server_options(), cwd=self.make_temp_dir())

    def test_shared_server(self):
        self.assertResponse(self.shared.get("/health"), json={"message": "orders service"})

    def test_own_server_with_a_config_file(self):
        config = self.make_temp_file(json.dumps({"debug": True}), suffix=".json")
        server = self.start_server(APP, env={"CONFIG": config})  # stopped after the test
        self.assertResponse(server.get("/config"), json={"debug": True})
        self.assertEqual(os.listdir(server.cwd), [])  # its own directory

    def test_a_port_you_choose(self):
        port = self.get_next_port()  # from port_range, leased to this test
        server = self.start_server(APP, port=port)
        self.assertEqual(server.port, port)

    def test_500_requests(self):
        result = load(self.shared.url + "/health", requests=500, concurrency=16)
        self.assertEqual((result.ok, result.failed), (500, 0), result)

    def test_no_leak(self):
        server = self.start_server(APP)
        self.assertNoLeak(server, lambda: [server.get("/health") for _ in range(20)],
                          rounds=5, warmup=2)


if __name__ == "__main__":
    unittest.main()
