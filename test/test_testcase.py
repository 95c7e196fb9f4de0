"""ServerTestMixin: servers per test and per class, stopped whatever happens,
log tails in failure reports, ports, temp files and the assertions.

Most tests run a small TestCase class defined inside the test through a
plain ``unittest.TestResult`` in this process, and then check what a user
would see: the result's text, whether the server processes still exist
(by pid *and* start time, so a reused pid cannot fool them), which files
are left.  The end-to-end runs under ``python -m unittest`` and pytest are
in test_testcase_runners.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import os
import re
import stat
import sys
import unittest
from typing import Any, Dict, List

from harness._os import procinfo as _procinfo
from harness._runner import merge_arguments, report_blocks
from harness._server import logstore
from harness.checks import wait_until
from harness.errors import PortUnavailable, RequestFailed, ServerStartError
from harness.http import Response, RetryPolicy
from harness.ports import PortAllocator, held_ports, release_port
from harness.process import LOG_TAIL_LINES, ServerProcess
from harness.testcase import ServerTestCase, ServerTestMixin

# A stdlib JSON server: every request is logged ("served /path"), /health
# answers {"status": "ok", "message": "ready"}, anything else echoes its path.
APP = r'''
import http.server, json, os, socketserver

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK

    def do_GET(self):
        print("served", self.path, flush=True)
        if self.path == "/health":
            body = {"status": "ok", "message": "ready"}
        else:
            body = {"path": self.path}
        data = json.dumps(body).encode()
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

print("app listening on port", os.environ["PORT"], flush=True)
Server((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
'''

# APP that first prints its T5_* environment variables, sorted.
ENV_APP = ('import os\nprint("env:", sorted((k, v) for k, v in os.environ.items() '
           'if k.startswith("T5_")), flush=True)\n' + APP)

# A server that dies of the first request to /crash: the exception leaves
# serve_forever, Python prints its traceback and exits with code 1.
CRASH_ON_REQUEST_APP = r'''
import http.server, os

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/crash":
            raise RuntimeError("crash-marker: the handler broke")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

class Server(http.server.HTTPServer):
    def handle_error(self, request, client_address):
        raise

print("app listening on port", os.environ["PORT"], flush=True)
Server((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
'''

CRASHING_APP = 'import sys\nprint("crash-marker: config missing", flush=True)\nsys.exit(3)\n'


def run_case(case: type, *names: str) -> unittest.TestResult:
    """Run the tests of ``case`` (all, or ``names``) as unittest would."""
    loader = unittest.TestLoader()
    if names:
        suite = unittest.TestSuite(case(name) for name in names)
    else:
        suite = loader.loadTestsFromTestCase(case)
    result = unittest.TestResult()
    suite.run(result)
    # Run class-level teardown (a TestSuite does it when the next class starts).
    suite._tearDownPreviousClass(None, result)  # type: ignore[attr-defined]
    return result


def reports(result: unittest.TestResult) -> str:
    return "\n".join(text for _, text in result.errors + result.failures)


def gone(tokens: List[str]) -> bool:
    return not any(_procinfo.is_alive(t) for t in tokens)


def make_response(status: int, body: bytes, content_type: str = "application/json") -> Response:
    headers = http.client.parse_headers(io.BytesIO(
        f"Content-Type: {content_type}\r\n\r\n".encode()))
    return Response(method="GET", url="http://127.0.0.1:1/x", status=status, reason="OK",
                    headers=headers, body=body)


#: What a report's server section says of a log the test's error already shows.
SHOWN_ABOVE = "(the error above shows its log up to the failure; nothing written since)"
SHOWN_SINCE = "(the error above shows its log up to the failure; written since:)"


class FailedRequestReportTest(unittest.TestCase):
    """The report's section for the server of a failed request, whose error
    already carries its log's tail: which of the error and the server's exit
    came first must not change what it says."""

    def server(self, app: str) -> ServerProcess:
        server = ServerProcess(app, health="/", ready_successes=1, name="api")
        self.addCleanup(lambda: logstore.discard(server.log_path))  # kept: it died alone
        self.addCleanup(server.stop)
        return server.start()

    def crash(self, server: ServerProcess) -> None:
        with self.assertRaises(RequestFailed):
            server.get("/crash", retry=RetryPolicy(attempts=1))
        wait_until(lambda: not server.running, timeout=30, what="the server's exit")

    def error(self, server: ServerProcess) -> BaseException:
        """A failed request's error, as ``ServerProcess.request`` makes it now."""
        reset = ConnectionResetError("connection reset by peer")
        error = RequestFailed(f"GET {server.url}/crash failed: {reset}", errors=[reset])
        server._attach_tail(error)
        return error

    def test_a_server_that_had_exited_when_the_request_failed_gets_its_end_said(self):
        server = self.server(CRASH_ON_REQUEST_APP)
        self.crash(server)
        error = self.error(server)
        self.assertIn("exited with code 1 when the request failed", str(error))
        self.assertIn("RuntimeError: crash-marker", str(error))
        blocks = report_blocks([("test", server)], 30, error)
        self.assertEqual(len(blocks), 1, blocks)
        head, body = blocks[0].split("\n", 1)
        self.assertIn(", exited with code 1)", head)
        self.assertEqual(body.strip(), SHOWN_ABOVE)

    def test_a_server_that_exited_after_the_request_failed_gets_only_its_new_lines(self):
        server = self.server(CRASH_ON_REQUEST_APP)
        error = self.error(server)
        self.assertIn("running when the request failed", str(error))
        self.crash(server)
        blocks = report_blocks([("test", server)], 30, error)
        self.assertEqual(len(blocks), 1, blocks)
        head, body = blocks[0].split("\n", 1)
        self.assertIn(", exited with code 1)", head)
        self.assertIn("RuntimeError: crash-marker", body)
        self.assertNotIn("app listening on port", body, "shown in the error already")

    def test_a_server_still_running_is_left_out_until_it_writes_more(self):
        server = self.server(APP)
        error = self.error(server)
        self.assertEqual(report_blocks([("test", server)], 30, error), [])
        server.get("/after-the-error")
        blocks = report_blocks([("test", server)], 30, error)
        self.assertEqual(len(blocks), 1, blocks)
        head, body = blocks[0].split("\n", 1)
        self.assertIn(", running)", head)
        self.assertIn("served /after-the-error", body)
        self.assertNotIn("app listening on port", body, "shown in the error already")

    def test_lines_like_those_shown_in_the_error_are_still_new_lines(self):
        server = self.server(APP)
        for _ in range(LOG_TAIL_LINES + 5):  # the error's tail: nothing but these lines
            server.get("/same")
        error = self.error(server)
        for _ in range(2):
            server.get("/same")
        blocks = report_blocks([("test", server)], 30, error)
        self.assertEqual(len(blocks), 1, blocks)
        body = blocks[0].split("\n", 1)[1].splitlines()
        self.assertEqual([line.strip() for line in body],
                         [SHOWN_SINCE, "served /same", "served /same"])

    def test_a_coloured_log_shows_only_its_new_lines_without_colours(self):
        server = self.server(APP.replace('print("served", self.path',
                                         'print("\\x1b[32mserved\\x1b[0m", self.path'))
        server.get("/before-the-error")
        error = self.error(server)
        self.assertEqual(report_blocks([("test", server)], 30, error), [])
        server.get("/after-the-error")
        blocks = report_blocks([("test", server)], 30, error)
        self.assertEqual(len(blocks), 1, blocks)
        body = blocks[0].split("\n", 1)[1].splitlines()
        self.assertEqual([line.strip() for line in body],
                         [SHOWN_SINCE, "served /after-the-error"])


class FailureReportTest(unittest.TestCase):
    """A failing test's report ends with its servers' log tails."""

    def test_failure_error_and_subtest_reports_carry_the_log_tail_and_servers_stop(self):
        seen: List[Any] = []

        class Case(ServerTestCase):
            def test_fails(self):
                server = self.start_server(APP)
                seen.append(server)
                server.get("/only-in-the-failing-test")
                self.assertEqual(server.get("/health").json()["status"], "not ok")

            def test_errors(self):
                server = self.start_server(APP)
                seen.append(server)
                server.get("/only-in-the-erroring-test")
                {}["message"]

            def test_subtest_fails(self):
                server = self.start_server(APP)
                seen.append(server)
                server.get("/only-in-the-subtest")
                with self.subTest(case=1):
                    self.fail("subtest failed")

        result = run_case(Case)
        self.assertEqual((len(result.failures), len(result.errors)), (2, 1), reports(result))
        by_test = {test.id().split(".")[-1].split(" ")[0]: text
                   for test, text in result.failures + result.errors}
        self.assertIn("/only-in-the-failing-test", by_test["test_fails"])
        self.assertIn("AssertionError", by_test["test_fails"])
        self.assertIn("/only-in-the-erroring-test", by_test["test_errors"])
        self.assertIn("KeyError: 'message'", by_test["test_errors"])
        self.assertIn("/only-in-the-subtest", by_test["test_subtest_fails"])
        # Each report shows only its own test's server, once, with the log's own lines.
        self.assertNotIn("/only-in-the-erroring-test", by_test["test_fails"])
        self.assertEqual(by_test["test_fails"].count("harness: log tail of the servers of"), 1)
        self.assertIn("app listening on port", by_test["test_fails"])
        self.assertIn("--- test server 'test_fails'", by_test["test_fails"])
        self.assertEqual(len(seen), 3)
        for server in seen:
            self.assertFalse(server.running, server)
            self.assertIsNotNone(server.returncode)

    def test_passing_test_and_failing_test_without_servers_have_no_log_block(self):
        class Case(ServerTestCase):
            def test_fails_without_server(self):
                self.fail("plain failure")

        result = run_case(Case)
        self.assertEqual(len(result.failures), 1)
        self.assertIn("plain failure", reports(result))
        self.assertNotIn("harness: log tail", reports(result))

    def test_log_tail_lines_limits_the_report_and_zero_disables_it(self):
        class Short(ServerTestCase):
            log_tail_lines = 2

            def test_fails(self):
                server = self.start_server(APP)
                for i in range(5):
                    server.get(f"/request-{i}")
                self.fail("boom")

        class Off(Short):
            log_tail_lines = 0

        text = reports(run_case(Short))
        self.assertIn("/request-4", text)
        self.assertIn("/request-3", text)
        self.assertNotIn("/request-2", text)
        self.assertNotIn("harness: log tail", reports(run_case(Off)))

    def test_class_server_tail_is_in_the_report_of_a_failing_test(self):
        class Case(ServerTestCase):
            @classmethod
            def setUpClass(cls):
                super().setUpClass()
                cls.shared = cls.start_class_server(APP)

            def test_fails(self):
                self.shared.get("/asked-of-the-class-server")
                self.fail("boom")

        text = reports(run_case(Case))
        self.assertIn("--- class server 'Case'", text)
        self.assertIn("/asked-of-the-class-server", text)

    def test_start_error_is_reported_once_with_its_own_log(self):
        class Case(ServerTestCase):
            def test_crash(self):
                self.start_server(CRASHING_APP, start_timeout=30)

        result = run_case(Case)
        self.assertEqual(len(result.errors), 1)
        text = reports(result)
        self.assertIn("ServerStartError", text)
        self.assertEqual(text.count("crash-marker: config missing"), 1, text)
        # The test failed: the log is kept where the message says.
        kept = re.search(r"kept at (\S+\.log)", text).group(1)
        self.addCleanup(logstore.discard, kept)
        with open(kept) as f:
            self.assertIn("crash-marker: config missing", f.read())

    def test_a_server_that_crashed_under_the_test_is_reported_once_as_it_ended(self):
        # The request fails as soon as the server closes the connection; the
        # server exits a moment later, or already has when the error is made
        # (it won that race about once in 25 runs with HARNESS_WARM=1).
        # Either way: its log once (in the error), and a head line that says
        # how it ended, not "running" above its crash traceback.
        seen: List[Any] = []

        class Case(ServerTestCase):
            def test_crash(self):
                server = self.start_server(CRASH_ON_REQUEST_APP, health="/", ready_successes=1)
                seen.append(server)
                server.get("/crash", retry=RetryPolicy(attempts=1))

        reported_first = sys.version_info >= (3, 11)  # before 3.11, after the cleanups
        with self.assertLogs("harness.process", "WARNING") if reported_first \
                else contextlib.nullcontext():  # "... exited with code 1 before stop()"
            result = run_case(Case)
        self.addCleanup(logstore.discard, seen[0].log_path)  # kept by stop(): it died alone
        self.assertEqual(len(result.errors), 1, reports(result))
        text = reports(result)
        self.assertEqual(text.count("RuntimeError: crash-marker: the handler broke"), 1, text)
        block = re.search(r"^(--- test server 'test_crash' \(.*\))\n(.*)$", text, re.M)
        self.assertIsNotNone(block, text)
        head, body = block.groups()
        self.assertNotIn("running", head)
        self.assertEqual(body.strip(), SHOWN_ABOVE, text)
        if reported_first:
            self.assertIn(", exited with code 1)", head)
        else:  # the cleanup's stop() came first: the state it left is what is true
            self.assertRegex(head, r", (exited with code 1|was killed by SIGTERM)")

    def test_a_start_failure_points_at_the_tests_line(self):
        class Case(ServerTestCase):
            def test_crash(self):
                self.start_server(CRASHING_APP, start_timeout=30)

        text = reports(run_case(Case))
        kept = re.search(r"kept at (\S+\.log)", text).group(1)
        self.addCleanup(logstore.discard, kept)
        frames = re.findall(r'^  File "([^"]+)", line \d+, in (\w+)$', text, re.M)
        self.assertEqual(frames, [(__file__, "test_crash")], text)

    def test_a_start_failure_the_test_expected_leaves_no_log_behind(self):
        kept: List[str] = []

        class Case(ServerTestCase):
            def test_expects_the_crash(self):
                with self.assertRaises(ServerStartError) as caught:
                    self.start_server(CRASHING_APP, start_timeout=30)
                kept.append(caught.exception.log_path)
                self.assertTrue(os.path.exists(kept[0]))  # kept while the test runs

        result = run_case(Case)
        self.assertTrue(result.wasSuccessful(), reports(result))
        self.assertFalse(os.path.exists(kept[0]))

    def test_report_survives_buffered_output(self):
        class Case(ServerTestCase):
            def test_fails(self):
                print("printed by the test")
                self.start_server(APP).get("/buffered-run")
                self.fail("boom")

        result = unittest.TestResult()
        result.buffer = True
        with contextlib.redirect_stdout(io.StringIO()):  # where buffer mode echoes it
            unittest.TestSuite([Case("test_fails")]).run(result)
        text = reports(result)
        self.assertIn("printed by the test", text)
        self.assertIn("/buffered-run", text)


class MinimalResult:
    """A duck-typed result with no addSubTest and no failure lists (as some runners have)."""

    def __init__(self) -> None:
        self.events: List[Any] = []

    def startTest(self, test: Any) -> None:
        self.events.append("start")

    def stopTest(self, test: Any) -> None:
        self.events.append("stop")

    def addSuccess(self, test: Any) -> None:
        self.events.append("success")

    def addFailure(self, test: Any, err: Any) -> None:
        self.events.append(("failure", err[1]))

    def addError(self, test: Any, err: Any) -> None:
        self.events.append(("error", err[1]))

    def addDuration(self, test: Any, elapsed: float) -> None:
        pass  # 3.12+ warns without it


class ResultProxyTest(unittest.TestCase):
    def test_a_duck_typed_result_gets_the_tail_as_a_note_and_no_fake_methods(self):
        class Case(ServerTestCase):
            def test_fails(self):
                self.start_server(APP).get("/for-the-minimal-result")
                with self.subTest(n=1):  # without addSubTest, unittest reports it plainly
                    self.fail("boom")

        result = MinimalResult()
        Case("test_fails").run(result)
        failures = [e for e in result.events if isinstance(e, tuple)]
        self.assertEqual(len(failures), 1, result.events)
        notes = getattr(failures[0][1], "__notes__", [])
        self.assertEqual(len(notes), 1)
        self.assertIn("/for-the-minimal-result", notes[0])
        self.assertEqual(result.events[0], "start")
        self.assertEqual(result.events[-1], "stop")


class CleanupTest(unittest.TestCase):
    """Servers go away whatever happens to the test."""

    def test_setup_error_after_starting_a_server_still_stops_it(self):
        seen: List[Any] = []
        tokens: List[str] = []

        class Case(ServerTestCase):
            def setUp(self):
                super().setUp()
                seen.append(self.start_server(APP))
                tokens.append(_token(seen[-1]))
                raise RuntimeError("setUp broke after the server started")

            def test_never_runs(self):
                raise AssertionError("unreachable")

        result = run_case(Case)
        self.assertEqual(len(result.errors), 1)
        self.assertIn("setUp broke", reports(result))
        self.assertIn("--- test server", reports(result))
        self.assertFalse(seen[0].running)
        self.assertTrue(gone(tokens))

    def test_interrupted_test_stops_its_servers_before_the_interrupt_propagates(self):
        seen: List[Any] = []

        class Case(ServerTestCase):
            def test_interrupted(self):
                seen.append(self.start_server(APP))
                raise KeyboardInterrupt

        with self.assertRaises(KeyboardInterrupt):
            Case("test_interrupted").run(unittest.TestResult())
        self.assertFalse(seen[0].running)

    def test_server_left_running_fails_the_test_and_is_stopped(self):
        seen: List[Any] = []

        class Case(ServerTestCase):
            def test_leaks_a_server(self):
                seen.append(ServerProcess(APP, name="forgotten").start())

            def test_stops_its_own(self):
                with ServerProcess(APP, name="tidy") as server:
                    seen.append(server)

        result = run_case(Case)
        self.assertEqual(len(result.failures), 1, reports(result))
        test, text = result.failures[0]
        self.assertIn("test_leaks_a_server", test.id())
        self.assertIn("left 1 server(s) running", text)
        self.assertIn("'forgotten'", text)
        self.assertIn("troubleshooting.html#left-running", text)  # the manual explains it
        self.assertFalse(seen[0].running)

    def test_leftover_check_can_be_turned_off(self):
        seen: List[Any] = []

        class Case(ServerTestCase):
            check_leftover_servers = False

            def test_keeps_a_server(self):
                seen.append(ServerProcess(APP).start())

        try:
            result = run_case(Case)
            self.assertTrue(result.wasSuccessful(), reports(result))
            self.assertTrue(seen[0].running)
        finally:
            for server in seen:
                server.stop()

    def test_class_server_is_shared_by_the_class_and_stopped_after_it(self):
        pids: List[Any] = []
        tokens: List[str] = []

        class Case(ServerTestCase):
            @classmethod
            def setUpClass(cls):
                super().setUpClass()
                cls.server = cls.start_class_server(APP)
                tokens.append(_token(cls.server))

            def test_a(self):
                pids.append((self.server.pid, self.server.running))

            def test_b(self):
                pids.append((self.server.pid, self.server.running))

        result = run_case(Case)
        self.assertTrue(result.wasSuccessful(), reports(result))
        self.assertEqual(len(pids), 2)
        self.assertEqual(pids[0], pids[1])
        self.assertTrue(pids[0][1])
        self.assertTrue(gone(tokens))
        self.assertFalse(Case.server.running)

    def test_setupclass_failure_after_a_class_server_stops_it(self):
        holder: List[Any] = []

        class Case(ServerTestCase):
            @classmethod
            def setUpClass(cls):
                holder.append(cls.start_class_server(APP))
                raise RuntimeError("setUpClass broke")

            def test_never_runs(self):
                raise AssertionError("unreachable")

        result = unittest.TestResult()
        unittest.TestSuite([Case("test_never_runs")]).run(result)
        self.assertIn("setUpClass broke", reports(result))
        self.assertFalse(holder[0].running)

    def test_each_class_has_its_own_class_cleanups(self):
        class A(ServerTestCase):
            pass

        class B(ServerTestCase):
            pass

        A.addClassCleanup(lambda: None)
        try:
            self.assertEqual(B._class_cleanups, [])  # type: ignore[attr-defined]
        finally:
            A.doClassCleanups()

    def test_temp_files_and_dirs_are_private_and_removed_even_on_failure(self):
        made: List[str] = []

        class Case(ServerTestCase):
            def test_uses_files(self):
                directory = self.make_temp_dir()
                path = self.make_temp_file("hello", suffix=".txt")
                raw = self.make_temp_file(b"\x00\x01")
                made.extend([directory, path, raw])
                with open(path) as f:
                    self.assertEqual(f.read(), "hello")
                with open(raw, "rb") as f:
                    self.assertEqual(f.read(), b"\x00\x01")
                self.assertTrue(path.endswith(".txt"))
                self.assertEqual(os.listdir(directory), [])
                self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
                self.fail("fails after making files")

        result = run_case(Case)
        self.assertEqual(len(result.failures), 1)
        self.assertEqual(len(made), 3)
        for path in made:
            self.assertFalse(os.path.exists(path), path)
        self.assertFalse(os.path.exists(os.path.dirname(made[0])))

    def test_temp_file_arguments_are_checked(self):
        case = ServerTestCase()
        with self.assertRaisesRegex(TypeError, "content"):
            case.make_temp_file(42)  # type: ignore[arg-type]
        with self.assertRaisesRegex(ValueError, "suffix"):
            case.make_temp_file("x", suffix="/etc")
        case.doCleanups()


def _token(server: Any) -> str:
    token = _procinfo.identity(server.pid)
    assert token is not None, f"cannot identify pid {server.pid}"
    return token


class CooperationTest(unittest.TestCase):
    """setUp/tearDown chain in any position; IsolatedAsyncioTestCase works."""

    def test_setup_and_teardown_chain_through_other_mixins_in_any_order(self):
        calls: List[str] = []

        class Recording:
            def setUp(self):
                calls.append("Recording.setUp")
                super().setUp()  # type: ignore[misc]

            def tearDown(self):
                calls.append("Recording.tearDown")
                super().tearDown()  # type: ignore[misc]

        class First(ServerTestMixin, Recording, unittest.TestCase):
            def test_it(self):
                calls.append("test " + str(self.start_server(APP).get("/health").status))

        class Last(Recording, ServerTestMixin, unittest.TestCase):
            def test_it(self):
                calls.append("test " + str(self.start_server(APP).get("/health").status))

        for case in (First, Last):
            del calls[:]
            result = run_case(case)
            self.assertTrue(result.wasSuccessful(), reports(result))
            self.assertEqual(calls, ["Recording.setUp", "test 200", "Recording.tearDown"])

    def test_isolated_asyncio_test_case(self):
        seen: List[Any] = []

        class Case(ServerTestMixin, unittest.IsolatedAsyncioTestCase):
            async def test_async_fails(self):
                server = self.start_server(APP)
                seen.append(server)
                await asyncio.sleep(0)
                server.get("/from-the-async-test")
                self.fail("async failure")

        result = run_case(Case)
        self.assertEqual(len(result.failures), 1, reports(result))
        self.assertIn("/from-the-async-test", reports(result))
        self.assertFalse(seen[0].running)


class ConfigurationTest(unittest.TestCase):
    """server_defaults, port_range and get_next_port."""

    def test_server_defaults_and_port_range_apply_and_calls_override(self):
        window = reserve_window(self, 6)
        seen: List[Any] = []

        class Case(ServerTestCase):
            server_defaults = {"env": {"GREETING": "from-defaults"}, "ready_successes": 1}
            port_range = (window[0], window[-1])

            def test_it(self):
                seen.append(self.start_server(APP))
                seen.append(self.start_server(APP, name="custom"))
                port = self.get_next_port()
                self.assertIn(port, window)
                self.assertIn(port, held_ports())
                seen.append(port)

        result = run_case(Case)
        self.assertTrue(result.wasSuccessful(), reports(result))
        first, second, port = seen
        self.assertIn(first.port, window)
        self.assertIn(second.port, window)
        self.assertEqual(first.name, "test_it")
        self.assertEqual(second.name, "custom")
        self.assertEqual(first.ready_successes, 1)
        self.assertNotIn(port, held_ports())  # the test's lease ended with it

    def test_env_of_a_call_merges_onto_the_defaults_env(self):
        # A call that sets one variable must not lose the defaults' others
        # (a user lost a database URL that way and chased a KeyError).
        outputs: List[str] = []
        defaults_env = {"T5_DB": "postgres://db", "T5_MODE": "default", "T5_GONE": "x"}

        class Case(ServerTestCase):
            server_defaults = {"env": defaults_env, "ready_successes": 1}

            def test_it(self):
                outputs.append(self.start_server(
                    ENV_APP, env={"T5_MODE": "call", "T5_EXTRA": "1", "T5_GONE": None}).output())
                outputs.append(self.start_server(ENV_APP, env=None).output())

        result = run_case(Case)
        self.assertTrue(result.wasSuccessful(), reports(result))
        self.assertIn("env: [('T5_DB', 'postgres://db'), ('T5_EXTRA', '1'), ('T5_MODE', 'call')]",
                      outputs[0])  # the call wins, None removes, the rest stays
        self.assertIn("env: [('T5_DB', 'postgres://db'), ('T5_GONE', 'x'), "
                      "('T5_MODE', 'default')]", outputs[1])  # env=None adds nothing
        self.assertEqual(defaults_env, {"T5_DB": "postgres://db", "T5_MODE": "default",
                                        "T5_GONE": "x"})

    def test_server_options_can_depend_on_the_test(self):
        outputs: Dict[str, str] = {}

        class Case(ServerTestCase):
            server_defaults = {"env": {"T5_DB": "postgres://db"}, "ready_successes": 1}

            def server_options(self):
                options = dict(super().server_options())
                options["env"] = dict(options["env"], T5_TEST=self._testMethodName)
                return options

            def test_one(self):
                outputs["one"] = self.start_server(ENV_APP, env={"T5_EXTRA": "1"}).output()

            def test_two(self):
                outputs["two"] = self.start_server(ENV_APP).output()

        result = run_case(Case)
        self.assertTrue(result.wasSuccessful(), reports(result))
        self.assertIn("env: [('T5_DB', 'postgres://db'), ('T5_EXTRA', '1'), "
                      "('T5_TEST', 'test_one')]", outputs["one"])
        self.assertIn("env: [('T5_DB', 'postgres://db'), ('T5_TEST', 'test_two')]",
                      outputs["two"])

    def test_class_server_options_serve_the_class_server_and_by_default_the_tests(self):
        outputs: List[str] = []

        class Case(ServerTestCase):
            @classmethod
            def class_server_options(cls):
                return {"env": {"T5_CLASS": cls.__name__}, "ready_successes": 1}

            @classmethod
            def setUpClass(cls):
                super().setUpClass()
                cls.shared = cls.start_class_server(ENV_APP)

            def test_it(self):
                outputs.append(self.shared.output())
                outputs.append(self.start_server(ENV_APP).output())

        result = run_case(Case)
        self.assertTrue(result.wasSuccessful(), reports(result))
        self.assertEqual(len(outputs), 2)
        for output in outputs:
            self.assertIn("env: [('T5_CLASS', 'Case')]", output)

    def test_bad_server_options_are_named(self):
        class Typo(ServerTestCase):
            def server_options(self):
                return {"prot": 1}

            def test_it(self):
                self.start_server(APP)

        class NotADict(ServerTestCase):
            @classmethod
            def class_server_options(cls):
                return ["port", 1]

            def test_it(self):
                self.start_server(APP)

        self.assertIn("Typo.server_options(): 'prot' is not a ServerProcess argument",
                      reports(run_case(Typo)))
        self.assertIn("NotADict.class_server_options() must be a dict of ServerProcess "
                      "arguments, got ['port', 1]", reports(run_case(NotADict)))

    def test_start_server_on_a_port_from_get_next_port(self):
        seen: List[Any] = []

        class Case(ServerTestCase):
            def test_it(self):
                port = self.get_next_port()
                server = self.start_server(APP, port=port)
                self.assertEqual(server.port, port)
                seen.append(port)

        result = run_case(Case)
        self.assertTrue(result.wasSuccessful(), reports(result))
        self.assertNotIn(seen[0], held_ports())

    def test_a_port_from_find_free_port_is_taken_over_by_its_server(self):
        from harness import find_free_port
        port = find_free_port()
        self.addCleanup(release_port, port)
        server = ServerProcess(APP, port=port).start()
        try:
            self.assertEqual(server.port, port)
            self.assertIn(port, held_ports())  # still leased: no window for anyone else
        finally:
            server.stop()
        self.assertNotIn(port, held_ports())

    def test_next_port_is_leased_against_other_harness_users(self):
        class Case(ServerTestCase):
            def test_it(self):
                port = self.get_next_port()
                with self.assertRaises(PortUnavailable):
                    PortAllocator().acquire_port(port)

        result = run_case(Case)
        self.assertTrue(result.wasSuccessful(), reports(result))

    def test_bad_configuration_is_named(self):
        class Typo(ServerTestCase):
            server_defaults = {"prot": 1}

            def test_it(self):
                self.start_server(APP)

        class BadRange(ServerTestCase):
            port_range = (9000, 80)

            def test_it(self):
                self.start_server(APP)

        class BadKeyword(ServerTestCase):
            def test_it(self):
                self.start_server(APP, helth="/health")

        text = reports(run_case(Typo))
        self.assertIn("Typo.server_defaults: 'prot' is not a ServerProcess argument", text)
        self.assertIn("BadRange.port_range", reports(run_case(BadRange)))
        self.assertIn("'helth' is not a ServerProcess argument", reports(run_case(BadKeyword)))

    def test_a_fixed_port_in_the_call_replaces_a_default_port_range(self):
        seen: List[Any] = []

        class Case(ServerTestCase):
            server_defaults = {"port_range": (61000, 64999)}

            def test_it(self):
                port = self.get_next_port()
                seen.append((port, self.start_server(APP, port=port).port))

        result = run_case(Case)
        self.assertTrue(result.wasSuccessful(), reports(result))
        self.assertEqual(seen[0][0], seen[0][1])

    def test_argv_in_the_call_replaces_an_app_code_default(self):
        seen: List[Any] = []

        class Case(ServerTestCase):
            server_defaults = {"app_code": CRASHING_APP}

            def test_it(self):
                seen.append(self.start_server(argv=[sys.executable, "-c", APP]))
                seen.append(self.start_server(APP))

        result = run_case(Case)
        self.assertTrue(result.wasSuccessful(), reports(result))
        self.assertIsNotNone(seen[0].argv)
        self.assertEqual(seen[1].app_code, APP)


class MergeArgumentsTest(unittest.TestCase):
    """How defaults and a call make ServerProcess arguments (mixin and plugin alike)."""

    def test_a_program_in_the_call_replaces_the_defaults_program_and_its_arguments(self):
        defaults = {"target": "pkg.app:serve", "args": (1,), "kwargs": {"debug": True},
                    "health": "/ready"}
        self.assertEqual(merge_arguments(defaults, "print(1)", {}, "t"),
                         {"app_code": "print(1)", "health": "/ready", "name": "t"})
        self.assertEqual(merge_arguments({"app_code": "x"}, None,
                                         {"target": "pkg.other:run", "args": (2,)}, "t"),
                         {"target": "pkg.other:run", "args": (2,), "name": "t"})
        # Without a program, the call's arguments replace the defaults' one by one.
        self.assertEqual(merge_arguments(defaults, None, {"args": (3,)}, "t")["args"], (3,))

    def test_env_merges_and_the_rest_replaces(self):
        defaults = {"env": {"A": "1", "B": "2"}, "port_range": (9000, 9100), "name": "d"}
        merged = merge_arguments(defaults, None, {"env": {"B": None, "C": "3"}, "port": 9050},
                                 "t")
        self.assertEqual(merged, {"env": {"A": "1", "B": None, "C": "3"}, "port": 9050,
                                  "name": "d"})
        self.assertEqual(defaults["env"], {"A": "1", "B": "2"})  # not modified
        self.assertEqual(merge_arguments({}, None, {"env": {"A": "1"}}, "t")["env"], {"A": "1"})
        self.assertEqual(merge_arguments(defaults, None, {"env": None}, "t")["env"],
                         {"A": "1", "B": "2"})


class AssertionsTest(unittest.TestCase):
    def test_assert_response_passes_and_returns_the_response(self):
        case = ServerTestCase()
        response = make_response(200, b'{"message": "hi", "count": 2}')
        self.assertIs(case.assertResponse(response, json={"message": str, "count": 2}), response)
        case.assertResponse(make_response(204, b""), status=range(200, 300))
        case.assertResponse(make_response(404, b"nope", "text/plain"), status=None)

    def test_assert_response_failures_name_the_problem(self):
        case = ServerTestCase()
        with self.assertRaises(AssertionError) as caught:
            case.assertResponse(make_response(200, b'{"status": "ok"}'), json={"message": str})
        self.assertIn("'message' is missing", str(caught.exception))
        self.assertIn("status", str(caught.exception))  # the keys present are listed
        with self.assertRaises(AssertionError) as caught:
            case.assertResponse(make_response(404, b"no route"), msg="health")
        self.assertIn("expected status 200", str(caught.exception))
        self.assertIn("no route", str(caught.exception))
        self.assertIn("health", str(caught.exception))
        with self.assertRaises(AssertionError) as caught:
            case.assertResponse(make_response(200, b"<html>"), json={"message": str})
        self.assertIn("not valid JSON", str(caught.exception))

    def test_assert_response_checks_its_arguments(self):
        case = ServerTestCase()
        with self.assertRaisesRegex(TypeError, "response"):
            case.assertResponse({"status": 200})
        with self.assertRaisesRegex(TypeError, "json must be"):
            case.assertResponse(make_response(200, b"{}"), json=["message"])
        with self.assertRaisesRegex(ValueError, "HTTP status"):
            case.assertResponse(make_response(200, b"{}"), status=[999])


def reserve_window(test: unittest.TestCase, size: int) -> range:
    """``size`` consecutive free ports for ``test`` alone, until it ends.

    Taken above the ephemeral range (and harness's default range), where
    nobody else's ports are, and locked against this suite's tests running
    in parallel processes (see ``quiet_window``).
    """
    from _support import quiet_window
    return quiet_window(size, low=61000, high=64999, test=test)


if __name__ == "__main__":
    unittest.main()
