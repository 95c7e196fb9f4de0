"""``harness.pytest_plugin.server_fixture``: a server shared by a scope
(function, class, module, session), run by a real pytest in a subprocess on
generated files, alone and under ``pytest -n 2``.

The generated tests record, for every test, which server process (pid and
start time) each scope's fixture gave it, and check from the inside that
the servers of scopes that already ended are gone.  This test then counts
the servers per scope instance from the record: one per instance, never
shared between two, and a session server per xdist worker.  Failing tests
that used a shared server, directly or through another fixture, must show
its log tail once; passing ones nothing.
"""
from __future__ import annotations

import collections
import os
import re
import tempfile
import unittest
from typing import Dict, Set

from test_pytest_plugin import _rmtree
from test_testcase import APP, reserve_window
from test_testcase_runners import HAVE_PYTEST, HAVE_XDIST, run_pytest, without_short_summary

from harness._os import procinfo as _procinfo

CONFTEST = '''
import sys

import pytest

from harness.pytest_plugin import server_fixture

APP = {app!r}

session_api = server_fixture(APP, scope="session", port_range={window}, ready_successes=1)
module_api = server_fixture(APP, scope="module", port_range={window}, ready_successes=1)
class_api = server_fixture(APP, scope="class", port_range={window}, ready_successes=1)
function_api = server_fixture(APP, port_range={window}, ready_successes=1)
argv_api = server_fixture(argv=[sys.executable, "-c", APP], name="orders", scope="module",
                          port_range={window}, ready_successes=1)


@pytest.fixture
def client(session_api):
    """A user's fixture built on the shared server."""
    return session_api.url
'''

MODULE = '''
import os

from harness._os import procinfo

RECORD = {record!r}


def keys(request):
    return {{"session": str(os.getpid()), "module": request.module.__name__,
            "class": request.node.nodeid.rsplit("::", 1)[0], "function": request.node.nodeid}}


def record(request, **servers):
    """Write down each scope's server, after checking that the servers of the
    scope instances this process ran before are gone."""
    here = keys(request)
    with open(RECORD) as f:
        earlier = [line.split() for line in f]
    for pid, scope, key, identity in earlier:
        if pid == str(os.getpid()) and scope in servers and key != here[scope]:
            assert not procinfo.is_alive(identity), (scope, key, "still running")
    with open(RECORD, "a") as f:
        for scope, server in servers.items():
            assert server.get("/health").json()["message"] == "ready"
            f.write(f"{{os.getpid()}} {{scope}} {{here[scope]}} "
                    f"{{procinfo.identity(server.pid)}}\\n")


class TestFirst:
    def test_1(self, request, session_api, module_api, class_api, function_api):
        record(request, session=session_api, module=module_api, function=function_api,
               **{{"class": class_api}})

    def test_2(self, request, session_api, module_api, class_api, function_api):
        record(request, session=session_api, module=module_api, function=function_api,
               **{{"class": class_api}})


class TestSecond:
    def test_1(self, request, session_api, module_api, class_api, function_api):
        record(request, session=session_api, module=module_api, function=function_api,
               **{{"class": class_api}})

    def test_2(self, request, session_api, module_api, class_api, function_api):
        record(request, session=session_api, module=module_api, function=function_api,
               **{{"class": class_api}})


def test_every_server_process_argument_is_taken(argv_api):
    assert argv_api.name == "orders"
    assert argv_api.argv[1] == "-c"
'''

# A failing test in each module: one asks for the shared server itself, the
# other for a fixture built on it.
FAILING = {
    "test_one": '''

def test_fails_with_the_shared_server(session_api, function_api):
    session_api.get("/MARK-direct-{tag}")
    assert session_api.get("/health").json()["message"] == "not ready"
''',
    "test_two": '''

def test_fails_through_a_fixture(client):
    from harness.http import request
    request("GET", client + "/MARK-indirect-{tag}")
    assert client == "not this"
''',
}

BROKEN_CONFTEST = '''
from harness.pytest_plugin import server_fixture

CRASH = "import sys\\nprint('crash-marker-' + 'fixture')\\nsys.exit(3)\\n"

broken_api = server_fixture(CRASH, scope="session")  # THE-FIXTURE-LINE
'''

BROKEN_TESTS = '''
def test_one(broken_api):
    pass


def test_two(broken_api):
    pass
'''


def failure_reports(output: str) -> Dict[str, str]:
    """Each failing test's report (pytest's FAILURES section), by test name."""
    section = without_short_summary(output.split("= FAILURES =", 1)[-1])
    parts = re.split(r"^_{3,} (\S+) _{3,}$", section, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@unittest.skipUnless(HAVE_PYTEST, "pytest is not installed")
class ServerFixtureTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="t5-srvfix-")
        self.addCleanup(_rmtree, self.dir)
        self.tmp = tempfile.mkdtemp(prefix="t5-srvfix-tmp-")  # the child's TMPDIR
        self.addCleanup(_rmtree, self.tmp)
        with open(os.path.join(self.dir, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        window = reserve_window(self, 24)
        self.window = (window[0], window[-1])
        self.record = os.path.join(self.dir, "record.txt")
        open(self.record, "w").close()

    def write(self, name: str, text: str) -> None:
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(text)

    def write_suite(self, tag: str) -> None:
        self.write("conftest.py", CONFTEST.format(app=APP, window=self.window))
        for module in ("test_one", "test_two"):
            self.write(module + ".py", MODULE.format(record=self.record)
                       + FAILING[module].format(tag=tag))

    def servers(self) -> Dict[str, Dict[str, Set[str]]]:
        """scope -> scope instance -> the server processes it was given."""
        found: Dict[str, Dict[str, Set[str]]] = collections.defaultdict(
            lambda: collections.defaultdict(set))
        with open(self.record) as f:
            for line in f:
                _, scope, key, identity = line.split()
                found[scope][key].add(identity)
        return found

    def check_one_server_per_scope_instance(self, expected: Dict[str, int]) -> None:
        servers = self.servers()
        for scope, count in expected.items():
            instances = servers[scope]
            self.assertEqual(len(instances), count, (scope, dict(instances)))
            for key, identities in instances.items():
                self.assertEqual(len(identities), 1, (scope, key, identities))
            every = [identity for identities in instances.values() for identity in identities]
            self.assertEqual(len(set(every)), count, (scope, every))  # none shared
            for identity in every:
                self.assertFalse(_procinfo.is_alive(identity), (scope, identity))

    def check_failure_reports(self, output: str, tag: str) -> None:
        reports = failure_reports(output)
        self.assertEqual(sorted(reports), ["test_fails_through_a_fixture",
                                           "test_fails_with_the_shared_server"], output)
        for name, marker in (("test_fails_with_the_shared_server", f"/MARK-direct-{tag}"),
                             ("test_fails_through_a_fixture", f"/MARK-indirect-{tag}")):
            report = reports[name]
            self.assertEqual(report.count("harness: log tail of the servers"), 1, report)
            self.assertEqual(report.count("--- session server 'session_api' (pid "), 1, report)
            self.assertIn(marker, report)
        self.assertIn("--- test server 'function_api' (pid ",
                      reports["test_fails_with_the_shared_server"])
        # Passing tests (-rA prints their sections too) show no server.
        self.assertEqual(output.count("harness: log tail of the servers"), 2, output)

    def test_one_server_per_scope_instance(self):
        self.write_suite("one")
        code, output = run_pytest(["-rA", "test_one.py", "test_two.py"], self.dir,
                                  extra_env={"TMPDIR": self.tmp})
        self.assertEqual(code, 1, output)
        self.assertIn("2 failed, 10 passed", output)
        self.check_one_server_per_scope_instance(
            {"session": 1, "module": 2, "class": 4, "function": 8})
        self.check_failure_reports(output, "one")

    @unittest.skipUnless(HAVE_XDIST, "pytest-xdist is not installed")
    def test_one_session_server_per_xdist_worker(self):
        # --dist loadfile: one module per worker, so each worker is a session.
        self.write_suite("xdist")
        code, output = run_pytest(["-n", "2", "--dist", "loadfile", "-rA", "test_one.py",
                                   "test_two.py"], self.dir, extra_env={"TMPDIR": self.tmp})
        self.assertEqual(code, 1, output)
        self.assertIn("2 failed, 10 passed", output)
        with open(self.record) as f:
            workers = {line.split()[0] for line in f}
        self.assertEqual(len(workers), 2, output)
        self.check_one_server_per_scope_instance(
            {"session": 2, "module": 2, "class": 4, "function": 8})
        self.check_failure_reports(output, "xdist")

    def test_a_failed_start_is_an_error_of_each_test_and_points_at_the_fixture(self):
        self.write("conftest.py", BROKEN_CONFTEST)
        self.write("test_broken.py", BROKEN_TESTS)
        code, output = run_pytest(["-rA", "test_broken.py"], self.dir,
                                  extra_env={"TMPDIR": self.tmp})
        self.assertEqual(code, 1, output)
        self.assertIn("2 errors", output)
        self.assertEqual(without_short_summary(output).count(
            "ServerStartError: server 'broken_api' exited with code 3"), 2, output)
        line = BROKEN_CONFTEST.splitlines().index(
            'broken_api = server_fixture(CRASH, scope="session")  # THE-FIXTURE-LINE') + 1
        self.assertIn(f"harness: the server of the session-scoped fixture 'broken_api' "
                      f"(server_fixture() at conftest.py:{line})", output)
        for source in ("process.py", "pytest_plugin.py", "_runner.py", "def start(self)"):
            self.assertNotIn(source, output)
        self.assertIn("crash-marker-fixture", output)
        self.assertNotIn("harness: log tail of the servers", output)  # the error has the log


@unittest.skipUnless(HAVE_PYTEST, "pytest is not installed")
class ServerFixtureArgumentsTest(unittest.TestCase):
    """Mistakes are named when the conftest is imported, not in every test."""

    def test_a_misspelt_argument_and_a_bad_scope_are_named(self):
        from harness.pytest_plugin import server_fixture
        with self.assertRaisesRegex(TypeError, r"server_fixture\(\): 'prot' is not a "
                                               r"ServerProcess argument; known: app_code, argv"):
            server_fixture(APP, prot=8080)
        with self.assertRaisesRegex(ValueError, r"server_fixture\(\): scope must be one of "
                                                r"'function', .* got 'sesion'"):
            server_fixture(APP, scope="sesion")


if __name__ == "__main__":
    unittest.main()
