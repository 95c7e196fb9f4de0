"""``_server/diagnostics.py``: what a person reads when a server did not start.

``start_failure`` is a pure function of the facts gathered while the
server still existed, so every case is built here from a ``StartFacts``
without starting anything: the first line says what happened (an exit
code, a signal, a daemonized server, a lost keeper, a lost port, a
timeout with the factor that scaled it, a server on other ports), the
body shows the command, the probes and the log (and where it is kept),
and the last line is the one ``fix:`` most likely to help.  The same for
``launch_failure`` (nothing ran), ``ready_report`` (the INFO line of a
start and the WARNING when harness waited) and ``describe_exit``.
"""
from __future__ import annotations

import dataclasses
import errno
import signal
import unittest
from typing import Any, Dict, List, Optional

from harness._server.diagnostics import (
    NOTABLE_WAIT,
    ReadyFacts,
    StartFacts,
    describe_exit,
    launch_failure,
    ready_report,
    shown,
    start_failure,
)
from harness.checks import WaitEnd
from harness.errors import ServerNotReady, ServerStartError


def facts(**overrides: Any) -> StartFacts:
    """A start that timed out probing a plain HTTP server, changed by ``overrides``."""
    base: Dict[str, Any] = dict(
        name="api", reason=WaitEnd.TIMEOUT, elapsed=10.25, returncode=None,
        command=["python", "serve.py", "--port", "4001"], pid=4242,
        where="http://127.0.0.1:4001", handoff=False, check="HttpCheck('/health')",
        successes=2, summary="HTTP 503 \u00d73", counts={"HTTP 503": 3},
        details={"HTTP 503": "warming up"}, other_ports=set(), port=4001, lost="",
        fixed_port=False, deadline_seconds=10.0, start_timeout=10.0, factor=1.0,
        log_lines=["starting", "loading models"], log_path="/logs/api-4242.log")
    base.update(overrides)
    return StartFacts(**base)


def message(**overrides: Any) -> str:
    return start_failure(facts(**overrides))[1]


def fix_line(text: str) -> str:
    """The ``fix:`` line of a message (it must be the last one)."""
    last = text.splitlines()[-1]
    assert last.startswith("  fix: "), text
    return last[len("  fix: "):]


def exited(returncode: Optional[int] = 1, log: Optional[List[str]] = None,
           **overrides: Any) -> StartFacts:
    """A server that exited during start-up, its log ``log``."""
    return facts(reason=WaitEnd.EXITED, returncode=returncode, elapsed=0.5,
                 log_lines=log if log is not None else ["Traceback ...", "SystemExit: 1"],
                 counts={"connection refused": 2}, summary="connection refused \u00d72",
                 details={}, **overrides)


def probed(counts: Dict[str, int], **overrides: Any) -> StartFacts:
    """A start that timed out with probes that saw ``counts``."""
    return facts(counts=counts, details={}, summary="...", **overrides)


class DescribeExitTest(unittest.TestCase):
    def test_an_exit_code_is_said_as_such(self) -> None:
        self.assertEqual(describe_exit(3), "exited with code 3")
        self.assertEqual(describe_exit(0), "exited with code 0")

    def test_a_negative_status_names_the_signal(self) -> None:
        self.assertEqual(describe_exit(-signal.SIGKILL), "was killed by SIGKILL")
        self.assertEqual(describe_exit(-signal.SIGSEGV), "was killed by SIGSEGV")

    def test_a_signal_without_a_name_is_a_number(self) -> None:
        number = max(signal.valid_signals()) + 7
        self.assertEqual(describe_exit(-number), f"was killed by signal {number}")

    def test_no_status_is_still_running(self) -> None:
        self.assertEqual(describe_exit(None), "is still running")


class ShownTest(unittest.TestCase):
    def test_a_command_is_quoted_for_a_shell_and_long_items_shortened(self) -> None:
        long = "x" * 300
        self.assertEqual(shown(["run", "a b", long]), f"run 'a b' {'x' * 60}...")


class StartFailureFirstLineTest(unittest.TestCase):
    """What happened, said first, and which exception class carries it."""

    def test_an_exit_with_a_code_is_a_start_error_with_the_time(self) -> None:
        cls, text = start_failure(exited(returncode=2))
        self.assertIs(cls, ServerStartError)
        self.assertEqual(text.splitlines()[0],
                         "server 'api' exited with code 2 during start-up after 0.50 s")

    def test_an_exit_by_a_signal_names_it(self) -> None:
        cls, text = start_failure(exited(returncode=-signal.SIGSEGV))
        self.assertIs(cls, ServerStartError)
        self.assertEqual(text.splitlines()[0],
                         "server 'api' was killed by SIGSEGV during start-up after 0.50 s")

    def test_exit_0_is_taken_for_a_daemonized_server(self) -> None:
        cls, text = start_failure(exited(returncode=0))
        self.assertIs(cls, ServerStartError)
        first = text.splitlines()[0]
        self.assertIn("exited with code 0 during start-up", first)
        self.assertIn("one that daemonizes cannot be supervised", first)
        self.assertIn("run the server in the foreground", fix_line(text))
        self.assertIn("did it daemonize?", fix_line(text))

    def test_a_lost_keeper_says_so_and_what_not_to_do(self) -> None:
        cls, text = start_failure(exited(returncode=None, keeper_lost=True))
        self.assertIs(cls, ServerStartError)
        first = text.splitlines()[0]
        self.assertTrue(first.startswith("server 'api' lost its keeper"), first)
        self.assertIn("after 0.50 s", first)
        self.assertIn("the server has been stopped", first)
        self.assertIn("do not signal the server's parent process (os.getppid())", fix_line(text))

    def test_a_lost_keeper_wins_over_the_log(self) -> None:
        text = start_failure(exited(returncode=None, keeper_lost=True, log=[
            "ModuleNotFoundError: No module named 'flask'"]))[1]
        self.assertIn("os.getppid()", fix_line(text))

    def test_a_lost_port_is_not_ready_and_says_why(self) -> None:
        cls, text = start_failure(facts(
            reason=WaitEnd.PORT_LOST, elapsed=1.5,
            lost="port answered by another process: pid 77 (nc -l), user bob (uid 1001)"))
        self.assertIs(cls, ServerNotReady)
        self.assertEqual(text.splitlines()[0],
                         "server 'api' did not get its port after 1.50 s: port answered by "
                         "another process: pid 77 (nc -l), user bob (uid 1001)")
        self.assertEqual(fix_line(text),
                         "stop the process named above, which listens on the server's port")

    def test_a_lost_fixed_port_says_to_free_it_or_let_harness_choose(self) -> None:
        text = message(reason=WaitEnd.PORT_LOST, lost="taken", fixed_port=True)
        self.assertEqual(fix_line(text), "port 4001 was given explicitly: free it (see above "
                                         "who holds it), or let harness choose one (port=None)")

    def test_a_timeout_shows_the_deadline_and_the_start_timeout(self) -> None:
        cls, text = start_failure(facts())
        self.assertIs(cls, ServerNotReady)
        self.assertEqual(text.splitlines()[0],
                         "server 'api' was not ready within 10.0 s (start_timeout=10); "
                         "it has been stopped")

    def test_a_timeout_shows_the_factor_that_scaled_it(self) -> None:
        text = message(deadline_seconds=25.0, factor=2.5)
        self.assertEqual(text.splitlines()[0],
                         "server 'api' was not ready within 25.0 s (start_timeout=10 x "
                         "HARNESS_TIMEOUT_FACTOR=2.5); it has been stopped")

    def test_a_server_given_up_on_names_the_ports_it_listens_on(self) -> None:
        cls, text = start_failure(facts(reason=WaitEnd.GAVE_UP, other_ports={8080, 5000}))
        self.assertIs(cls, ServerNotReady)
        self.assertEqual(text.splitlines()[0],
                         "server 'api' was given up after 10.25 s: it listens on port 5000, "
                         "8080 instead of 4001 (its $PORT); it has been stopped")
        self.assertIn("  the server listens on port 5000, 8080 instead of 4001",
                      text.splitlines())
        self.assertEqual(fix_line(text), "make the server listen on $PORT (4001) instead of "
                                         "5000, 8080 (or '{port}' in argv)")

    def test_other_ports_are_named_after_a_timeout_too(self) -> None:
        text = message(other_ports={9000})
        self.assertIn("  the server listens on port 9000 instead of 4001", text.splitlines())
        self.assertIn("instead of 9000", fix_line(text))


class StartFailureBodyTest(unittest.TestCase):
    """The command, the address, the probes and the log, between the two."""

    def test_the_command_pid_address_and_probes_are_shown(self) -> None:
        lines = message().splitlines()
        self.assertEqual(lines[1], "  command: python serve.py --port 4001")
        self.assertEqual(lines[2], "  pid 4242, http://127.0.0.1:4001")
        self.assertEqual(lines[3], "  readiness HttpCheck('/health'), 2 passes in a row "
                                   "needed: HTTP 503 \u00d73")
        self.assertEqual(lines[4], "  last HTTP 503: 'warming up'")

    def test_a_handed_off_socket_is_said(self) -> None:
        self.assertEqual(message(handoff=True).splitlines()[2],
                         "  pid 4242, http://127.0.0.1:4001 (socket handed off as fd 3)")

    def test_at_most_four_details_the_most_frequent_first(self) -> None:
        counts = {f"kind {n}": n for n in range(1, 7)}
        details = {label: f"saw {label}" for label in counts}
        lines = message(counts=counts, details=details).splitlines()
        shown_details = [line for line in lines if line.startswith("  last ")]
        self.assertEqual(shown_details, [f"  last kind {n}: 'saw kind {n}'"
                                         for n in (6, 5, 4, 3)])

    def test_a_long_detail_is_cut(self) -> None:
        lines = message(details={"HTTP 503": "y" * 500}).splitlines()
        self.assertIn(f"  last HTTP 503: {'y' * 200!r}", lines)

    def test_the_log_is_shown_with_where_it_is_kept(self) -> None:
        lines = message().splitlines()
        start = lines.index("  log (kept at /logs/api-4242.log):")
        self.assertEqual(lines[start + 1:start + 3], ["    starting", "    loading models"])

    def test_a_log_not_kept_says_why(self) -> None:
        text = message(log_path=None, not_kept="cannot write /logs: Permission denied")
        self.assertIn("  log (not kept: cannot write /logs: Permission denied):",
                      text.splitlines())

    def test_a_log_not_kept_by_setting_names_the_setting(self) -> None:
        text = message(log_path=None, not_kept="HARNESS_KEEP_LOGS=0")
        self.assertIn("  log (not kept (HARNESS_KEEP_LOGS=0)):", text.splitlines())

    def test_an_empty_log_says_it_is_empty(self) -> None:
        text = message(log_lines=[])
        self.assertIn("  log: empty (kept at /logs/api-4242.log)", text.splitlines())


class StartFailureFixTest(unittest.TestCase):
    """The one change most likely to fix it, chosen from the facts and the log."""

    def test_a_missing_module_in_the_log_is_named(self) -> None:
        text = start_failure(exited(log=[
            "Traceback (most recent call last):",
            "ModuleNotFoundError: No module named 'flask_cors'"]))[1]
        fix = fix_line(text)
        self.assertTrue(fix.startswith("make 'flask_cors' importable in the server"), fix)
        self.assertIn("PYTHONPATH", fix)

    def test_address_in_use_says_to_bind_port(self) -> None:
        text = start_failure(exited(log=["OSError: [Errno 98] Address already in use"]))[1]
        self.assertEqual(fix_line(text),
                         "bind the port in $PORT (or '{port}' in argv), not a fixed one")

    def test_address_in_use_under_handoff_says_to_use_fd_3(self) -> None:
        text = start_failure(exited(handoff=True, log=["bind: EADDRINUSE"]))[1]
        self.assertIn("use the listening socket on fd 3 (LISTEN_FDS=1)", fix_line(text))

    def test_address_in_use_on_a_fixed_port_says_to_free_it(self) -> None:
        text = start_failure(exited(fixed_port=True, log=["error: errno 98"]))[1]
        self.assertEqual(fix_line(text), "port 4001 was given explicitly and is taken; free "
                                         "it or let harness choose one (port=None)")

    def test_any_other_exit_points_at_the_end_of_the_output(self) -> None:
        text = start_failure(exited())[1]
        self.assertEqual(fix_line(text),
                         "fix the error at the end of the server's output, shown above")

    def test_http_404_says_to_point_health_at_a_path_the_server_answers(self) -> None:
        text = start_failure(probed({"connection refused": 3, "HTTP 404": 5}))[1]
        self.assertIn("point health= at a path the server answers", fix_line(text))

    def test_a_json_mismatch_says_to_match_or_relax_json(self) -> None:
        text = start_failure(probed({"JSON missing 'status'": 4}))[1]
        self.assertIn("HttpCheck(json=...)", fix_line(text))

    def test_only_refused_connections_say_to_listen_on_host_and_port(self) -> None:
        text = start_failure(probed({"connection refused": 40}))[1]
        self.assertIn("make the server listen on $HOST:$PORT (or '{host}:{port}' in argv)",
                      fix_line(text))

    def test_refused_connections_on_a_unix_socket_name_socket_path(self) -> None:
        text = start_failure(probed({"connection refused": 3, "FileNotFoundError": 9},
                                    port=None, where="unix socket /tmp/x/server.sock"))[1]
        self.assertIn("make the server listen on the Unix socket $SOCKET_PATH", fix_line(text))

    def test_a_check_that_passed_with_nothing_listening_names_listens_false(self) -> None:
        text = start_failure(probed(
            {"check passed, but nothing listens on port 4001 yet": 3}))[1]
        self.assertIn("pass listens=False if it has no port", fix_line(text))

    def test_a_slow_server_is_told_the_timeout_and_the_factor(self) -> None:
        text = start_failure(probed({"HTTP 503": 3}, start_timeout=7.5))[1]
        self.assertEqual(fix_line(text), "if the server is only slow, raise start_timeout "
                                         "(now 7.5 s) or HARNESS_TIMEOUT_FACTOR on a slow machine")

    def test_no_probe_at_all_is_taken_for_a_slow_server(self) -> None:
        text = start_failure(probed({}))[1]
        self.assertIn("raise start_timeout", fix_line(text))

    def test_every_case_is_pure(self) -> None:
        given = exited(log=["ModuleNotFoundError: No module named 'x'"])
        before = dataclasses.replace(given)
        self.assertEqual(start_failure(given), start_failure(given))
        self.assertEqual(given, before)


class LaunchFailureTest(unittest.TestCase):
    """A server that could not be launched (or whose keeper died as it started)."""

    def failure(self, **overrides: Any) -> str:
        arguments: Dict[str, Any] = dict(
            what="[Errno 2] No such file or directory: 'nosuchprog'", errno=errno.ENOENT,
            detail="", keeper_died=False, command=["nosuchprog", "--port", "4001"],
            cwd="/srv", preload=None)
        arguments.update(overrides)
        return launch_failure("api", **arguments)

    def test_a_program_that_is_missing_says_to_fix_the_command(self) -> None:
        lines = self.failure().splitlines()
        self.assertEqual(lines[0], "could not launch server 'api': [Errno 2] No such file or "
                                   "directory: 'nosuchprog'")
        self.assertEqual(lines[1], "  command: nosuchprog --port 4001")
        self.assertEqual(lines[2], "  cwd: /srv")
        self.assertIn("is the program installed, on PATH and executable?", fix_line("\n".join(
            lines)))

    def test_a_program_that_is_not_executable_says_the_same(self) -> None:
        text = self.failure(what="[Errno 13] Permission denied", errno=errno.EACCES)
        self.assertIn("fix the command", fix_line(text))

    def test_a_dead_keeper_says_not_to_signal_the_parent(self) -> None:
        text = self.failure(what="keeper died", errno=None, keeper_died=True)
        self.assertIn("do not signal the server's parent process", fix_line(text))

    def test_what_the_server_wrote_before_its_keeper_died_is_shown_and_where_it_is_kept(
            self) -> None:
        # The keeper can die after the program started: its output is evidence.
        text = self.failure(what="the zygote or the server's keeper died", errno=None,
                            keeper_died=True, log_lines=["up", "killing my parent"],
                            log_path="/tmp/harness-logs-0/x-sh-0.log")
        lines = text.splitlines()
        self.assertIn("  log (kept at /tmp/harness-logs-0/x-sh-0.log):", lines)
        self.assertEqual(lines[lines.index("  log (kept at /tmp/harness-logs-0/x-sh-0.log):")
                               + 1:][:2], ["    up", "    killing my parent"])
        self.assertTrue(lines[-1].startswith("  fix: do not signal the server's parent"))
        self.assertNotIn("log", self.failure())  # nothing ran, nothing written: no log line

    def test_a_preload_that_cannot_be_imported_is_named(self) -> None:
        detail = ("Traceback (most recent call last):\n"
                  "ModuleNotFoundError: No module named 'myapp'\n")
        text = self.failure(what="the warm launcher failed", errno=None, detail=detail,
                            command=[], preload=["myapp"])
        lines = text.splitlines()
        self.assertEqual(lines[1], "  command: (the warm launcher, preload ['myapp'])")
        self.assertIn("    ModuleNotFoundError: No module named 'myapp'", lines)
        self.assertTrue(fix_line(text).startswith("make 'myapp' importable by the test runner "
                                                  "itself"), fix_line(text))

    def test_another_import_error_points_at_it(self) -> None:
        text = self.failure(what="the warm launcher failed", errno=None,
                            detail="ImportError: cannot import name 'x'")
        self.assertEqual(fix_line(text),
                         "fix the import error above (in a preload or target module)")

    def test_anything_else_says_the_next_start_gets_a_fresh_launcher(self) -> None:
        text = self.failure(what="the launcher is gone", errno=None)
        self.assertEqual(fix_line(text),
                         "see the error above; the next start launches a fresh launcher")


def ready(**overrides: Any) -> ReadyFacts:
    """A warm start that passed its check at once on its port, changed by ``overrides``."""
    base: Dict[str, Any] = dict(
        name="api", pid=4242, where="http://127.0.0.1:4001", warm=True, preparing=0.0,
        launched=0.002, first_pass=0.010, probes=1, done=0.015, verifying=0.0002,
        successes=2, port=4001, elsewhere="", without_port=False, waited=0.0, relaunches=0)
    base.update(overrides)
    return ReadyFacts(**base)


class ReadyReportTest(unittest.TestCase):
    def test_the_info_line_has_each_step(self) -> None:
        info, warning = ready_report(ready())
        self.assertEqual(info, "server 'api' ready in 0.015 s (pid 4242, http://127.0.0.1:4001, "
                               "warm): launched in 2.0 ms; check passed at 10.0 ms after 1 "
                               "probe; 2 passes in a row at 15.0 ms; listener proof 0.2 ms")
        self.assertIsNone(warning)

    def test_starting_the_launchers_and_relaunches_are_steps_too(self) -> None:
        info, _ = ready_report(ready(preparing=0.25, probes=3, successes=1, relaunches=2,
                                     warm=False, verifying=0.0))
        self.assertIn("(pid 4242, http://127.0.0.1:4001): launchers started in 250.0 ms "
                      "(not counted); ", info)
        self.assertIn("after 3 probes; 1 pass in a row", info)
        self.assertTrue(info.endswith("; 2 relaunches on a new port"), info)
        self.assertNotIn("listener proof", info)

    def test_a_server_on_another_socket_says_where_and_its_port_unused(self) -> None:
        info, warning = ready_report(ready(elsewhere="unix:/run/app.sock"))
        self.assertIn("http://127.0.0.1:4001 unused", info)
        self.assertIn("it listens on unix:/run/app.sock, not on its $PORT 4001", info)
        self.assertIsNone(warning)

    def test_a_wait_for_the_listener_over_50_ms_is_a_warning(self) -> None:
        info, warning = ready_report(ready(waited=NOTABLE_WAIT + 0.1))
        assert warning is not None
        self.assertTrue(warning.startswith("server 'api' passed its check 0.150 s before it "
                                           "listened on $PORT 4001"), warning)
        self.assertIn("pass listens=False for a process without a port", warning)

    def test_a_shorter_wait_is_not(self) -> None:
        self.assertIsNone(ready_report(ready(waited=NOTABLE_WAIT / 2))[1])

    def test_a_process_taken_for_one_without_a_port_is_a_warning(self) -> None:
        info, warning = ready_report(ready(without_port=True, waited=1.0))
        self.assertIn("taken for a process without a port", info)
        self.assertIn("http://127.0.0.1:4001 unused", info)
        assert warning is not None
        self.assertIn("its process tree listens nowhere (no TCP port, no Unix socket): "
                      "waited 1.000 s", warning)
        self.assertIn("Pass listens=False", warning)


if __name__ == "__main__":
    unittest.main()
