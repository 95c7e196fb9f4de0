# run: pytest -n 2
# needs: xdist
import pytest

from harness import HttpCheck
from harness.ports import held_ports
from harness.pytest_plugin import server_fixture

APP = '''
import http.server, json, os

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "message": os.environ.get("GREETING", "hi")})
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
'''

# One server for the whole session (one per worker under pytest-xdist);
# usually in conftest.py, where every test module sees it.
shared_api = server_fixture(APP, scope="session", env={"GREETING": "shared"})


@pytest.fixture
def harness_server_defaults():
    """ServerProcess arguments for every harness_server of this module (or conftest.py)."""
    return {"health": HttpCheck("/health", json={"message": str}), "env": {"GREETING": "hi"}}


FIRST_PID = {}


def test_shared(shared_api):
    assert shared_api.name == "shared_api"   # named after the fixture
    assert shared_api.get("/health").json()["message"] == "shared"


def test_the_same_server(shared_api):
    # Whichever test of this worker asks first starts it; the others get the same one.
    assert FIRST_PID.setdefault("pid", shared_api.pid) == shared_api.pid


def test_the_same_server_again(shared_api):
    assert FIRST_PID.setdefault("pid", shared_api.pid) == shared_api.pid


def test_health(harness_server):
    server = harness_server(APP)          # started, ready, stopped after the test
    assert server.get("/health").json()["message"] == "hi"


def test_env_merges(harness_server):
    server = harness_server(APP, env={"DEBUG": "1"})   # GREETING from the defaults stays
    assert server.get("/health").json()["message"] == "hi"


def test_two_servers(harness_server):
    first, second = harness_server(APP), harness_server(APP, name="second")
    assert first.port != second.port


def test_on_a_chosen_port(harness_server, harness_port):
    assert harness_port in held_ports()   # leased to this test
    server = harness_server(APP, port=harness_port)
    assert server.port == harness_port
