"""``_server/spec.py``: every argument of ``ServerProcess`` checked before anything starts.

``ServerSpec.checked`` gets the arguments by name with the signature's
defaults filled in, as ``ServerProcess.__init__`` passes them; here they
are built the same way from ``inspect.signature(ServerProcess)``, so a
default changed there is the default tested here.  Each mistake must be a
``TypeError`` or ``ValueError`` whose message names the argument, and the
spec that comes out is frozen.  Nothing is started: a spec is only values.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import tempfile
import threading
import unittest
from typing import Any, Type
from unittest import mock

from _support import server_arguments

from harness._server.address import SUN_PATH_LIMIT
from harness._server.spec import ServerSpec
from harness.checks import HttpCheck, LogCheck, TcpCheck

try:
    import pwd
except ImportError:  # pragma: no cover - Windows
    pwd = None  # type: ignore[assignment]


def checked(**overrides: Any) -> ServerSpec:
    return ServerSpec.checked(server_arguments(**overrides))


def serve(port: int) -> None:
    """A target importable by name (this module's top level)."""


def _unknown_user_name() -> str:
    name = "harness-no-such-user"
    if pwd is not None:
        while True:
            try:
                pwd.getpwnam(name)
            except KeyError:
                return name
            name += "x"
    return name


class SpecTestCase(unittest.TestCase):
    def refused(self, error: Type[Exception], *words: str,
                **overrides: Any) -> str:
        """``checked(**overrides)`` raises ``error`` whose message holds ``words``."""
        with self.assertRaises(error) as caught:
            checked(**overrides)
        text = str(caught.exception)
        for word in words:
            self.assertIn(word, text)
        return text


class DefaultsTest(SpecTestCase):
    def test_the_arguments_are_the_signature_of_server_process(self) -> None:
        # A new parameter of ServerProcess without a place in checked() would
        # raise KeyError there or go unchecked: the helper must cover them all.
        spec = checked()
        self.assertEqual(spec.kind, "app")
        self.assertEqual(spec.host, "127.0.0.1")
        self.assertIsNone(spec.port)
        self.assertIsInstance(spec.check, HttpCheck)
        self.assertEqual(spec.name, "app")
        self.assertEqual(spec.env, {})
        self.assertEqual(spec.stop_signal, signal.SIGTERM)
        self.assertTrue(spec.uses_port)

    def test_the_spec_is_frozen(self) -> None:
        spec = checked()
        with self.assertRaises(dataclasses.FrozenInstanceError):
            spec.port = 4001  # type: ignore[misc]

    def test_the_default_name_comes_from_what_runs(self) -> None:
        self.assertEqual(checked(app_code=None, argv=["/usr/bin/redis-server"]).name,
                         "redis-server")
        self.assertEqual(checked(app_code=None, target=serve).name, "serve")
        self.assertEqual(checked(name="api").name, "api")


class ProgramTest(SpecTestCase):
    def test_nothing_to_run_is_refused(self) -> None:
        self.refused(ValueError, "give exactly one of app_code", "got neither", app_code=None)

    def test_two_programs_are_refused_by_name(self) -> None:
        self.refused(ValueError, "got both app_code and argv", argv=["true"])
        self.refused(ValueError, "got both argv and target", app_code=None, argv=["true"],
                     target=serve)

    def test_three_programs_are_refused(self) -> None:
        self.refused(ValueError, "got all three", argv=["true"], target=serve)

    def test_args_without_a_target_are_refused(self) -> None:
        self.refused(ValueError, "args and kwargs go with target=", args=(1,))
        self.refused(ValueError, "args and kwargs go with target=", app_code=None,
                     argv=["true"], kwargs={"a": 1})

    def test_preload_with_argv_is_refused(self) -> None:
        self.refused(ValueError, "preload applies to Python servers", app_code=None,
                     argv=["true"], preload=["json"])

    def test_preload_items_must_be_module_names(self) -> None:
        self.refused(TypeError, "preload must be a list", preload="flask")
        self.refused(ValueError, "preload items must be module names", preload=["my-app"])

    def test_app_code_must_be_source(self) -> None:
        self.refused(TypeError, "app_code must be a str", app_code=b"print(1)")
        self.refused(ValueError, "app_code is empty", app_code="  \n")

    def test_argv_must_be_a_list_of_str(self) -> None:
        self.refused(TypeError, "argv must be a list", app_code=None, argv="redis-server")
        self.refused(TypeError, "argv items must be str", app_code=None, argv=["prog", 1])
        self.refused(ValueError, "argv is empty", app_code=None, argv=[])
        self.refused(ValueError, "argv[0] is empty", app_code=None, argv=["", "x"])


class TargetTest(SpecTestCase):
    def test_a_top_level_function_is_pickled_by_name(self) -> None:
        spec = checked(app_code=None, target=serve, args=(4001,))
        self.assertEqual(spec.kind, "target")
        self.assertEqual(spec.target_module, serve.__module__)
        self.assertIsNotNone(spec.payload)

    def test_a_lambda_is_not_importable_by_name(self) -> None:
        self.refused(ValueError, "target must be importable by its qualified name",
                     app_code=None, target=lambda: None)

    def test_a_nested_function_is_not_importable_by_name(self) -> None:
        def nested() -> None:
            pass
        self.refused(ValueError, "target must be importable by its qualified name",
                     "nested function", app_code=None, target=nested)

    def test_a_target_that_is_not_callable_is_refused(self) -> None:
        self.refused(TypeError, "target must be a function", app_code=None, target="serve")

    def test_args_must_be_a_sequence_and_kwargs_a_mapping(self) -> None:
        self.refused(TypeError, "args must be a tuple", app_code=None, target=serve, args="ab")
        self.refused(TypeError, "kwargs must be a dict", app_code=None, target=serve,
                     kwargs=[("a", 1)])

    def test_unpicklable_arguments_are_refused(self) -> None:
        self.refused(ValueError, "target's arguments must be picklable", app_code=None,
                     target=serve, args=(threading.Lock(),))


class AddressTest(SpecTestCase):
    def test_a_numeric_loopback_host_is_taken(self) -> None:
        self.assertEqual(checked(host="::1").host, "::1")
        self.assertEqual(checked(host="127.0.0.2").host, "127.0.0.2")

    def test_a_host_name_is_refused(self) -> None:
        self.refused(ValueError, "host must be a numeric loopback address", "'localhost'",
                     host="localhost")

    def test_a_host_off_loopback_is_refused(self) -> None:
        self.refused(ValueError, "host must be a loopback address", "'10.1.2.3'",
                     host="10.1.2.3")
        self.refused(ValueError, "host must be a loopback address", host="0.0.0.0")

    def test_a_host_that_is_not_a_str_is_refused(self) -> None:
        self.refused(TypeError, "host must be a str", host=2130706433)

    def test_port_and_port_range_together_are_refused(self) -> None:
        self.refused(ValueError, "give port or port_range, not both", port=4001,
                     port_range=(4000, 4010))

    def test_port_and_port_range_are_checked(self) -> None:
        self.refused(ValueError, "port must be in", port=70000)
        self.refused(TypeError, "port must be an int", port="4001")
        self.refused(ValueError, "port_range is empty or reversed", port_range=(5000, 4000))
        self.assertEqual(checked(port_range=[4000, 4010]).port_range, (4000, 4010))


class UnixSocketTest(SpecTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="h-spec-")
        self.addCleanup(os.rmdir, self.directory)

    def test_true_asks_for_a_path_harness_makes(self) -> None:
        spec = checked(unix_socket=True)
        self.assertTrue(spec.unix_socket)
        self.assertIsNone(spec.socket_path)
        self.assertFalse(spec.uses_port)

    def test_a_path_is_taken_absolute(self) -> None:
        path = os.path.join(self.directory, "s.sock")
        relative = os.path.relpath(path)
        spec = checked(unix_socket=relative)
        self.assertTrue(spec.unix_socket)
        self.assertEqual(spec.socket_path, path)

    def test_a_path_too_long_for_sun_path_is_refused(self) -> None:
        path = os.path.join(self.directory, "s" * SUN_PATH_LIMIT)
        self.refused(ValueError, "unix_socket path is", "choose a shorter one",
                     unix_socket=path)

    def test_a_path_in_a_missing_directory_is_refused(self) -> None:
        self.refused(ValueError, "unix_socket's directory does not exist",
                     unix_socket=os.path.join(self.directory, "gone", "s.sock"))

    def test_a_directory_is_refused(self) -> None:
        self.refused(ValueError, "unix_socket names a directory", unix_socket=self.directory)

    def test_an_empty_path_or_another_type_is_refused(self) -> None:
        self.refused(ValueError, "unix_socket must be a non-empty str path", unix_socket="")
        self.refused(TypeError, "unix_socket must be True, False or a path", unix_socket=1.5)

    def test_a_unix_socket_with_a_port_is_refused(self) -> None:
        self.refused(ValueError, "a unix_socket server has no TCP port", unix_socket=True,
                     port=4001)


class WithoutPortTest(SpecTestCase):
    def test_a_process_without_a_port_with_a_check_of_its_own(self) -> None:
        spec = checked(listens=False, health=LogCheck("ready"))
        self.assertIs(spec.listens, False)
        self.assertFalse(spec.uses_port)

    def test_a_check_that_talks_to_the_port_is_refused(self) -> None:
        self.refused(ValueError, "health=HttpCheck('/health'", "talks to the server's port",
                     "listens=False", listens=False)
        self.refused(ValueError, "talks to the server's port", listens=False, health=None)

    def test_anything_that_gives_it_a_port_is_refused_by_name(self) -> None:
        log = LogCheck("ready")
        self.refused(ValueError, "but port gives it one", listens=False, health=log, port=4001)
        self.refused(ValueError, "but port_range gives it one", listens=False, health=log,
                     port_range=(4000, 4010))
        self.refused(ValueError, "but handoff=True gives it one", listens=False, health=log,
                     handoff=True)
        self.refused(ValueError, "but unix_socket gives it one", listens=False, health=log,
                     unix_socket=True)

    def test_a_port_placeholder_in_argv_is_refused(self) -> None:
        log = LogCheck("ready")
        for item in ("--port={port}", "{host}"):
            self.refused(ValueError, "argv asks for {port} or {host}", listens=False,
                         health=log, app_code=None, argv=["worker", item])

    def test_listens_must_be_a_bool(self) -> None:
        self.refused(TypeError, "listens", listens="no")


class ReadySuccessesTest(SpecTestCase):
    def test_one_pass_is_enough_for_a_tcp_check_under_handoff(self) -> None:
        self.assertEqual(checked(handoff=True, health=None).ready_successes, 1)
        self.assertEqual(checked(handoff=True, health=TcpCheck()).ready_successes, 1)

    def test_two_passes_are_needed_otherwise(self) -> None:
        self.assertEqual(checked(health=None).ready_successes, 2)
        self.assertEqual(checked(handoff=True).ready_successes, 2)  # HttpCheck
        self.assertEqual(checked().ready_successes, 2)

    def test_a_count_given_is_kept(self) -> None:
        self.assertEqual(checked(handoff=True, health=None, ready_successes=3).ready_successes,
                         3)

    def test_a_count_below_one_is_refused(self) -> None:
        self.refused(ValueError, "ready_successes", ready_successes=0)
        self.refused(TypeError, "ready_successes", ready_successes=1.0)


class OtherArgumentsTest(SpecTestCase):
    def test_timeouts_must_be_positive_seconds(self) -> None:
        self.refused(ValueError, "start_timeout", start_timeout=0)
        self.refused(TypeError, "stop_timeout", stop_timeout="5")

    def test_env_must_map_names_to_str_or_none(self) -> None:
        self.assertEqual(checked(env={"A": "1", "B": None}).env, {"A": "1", "B": None})
        self.refused(ValueError, "env keys", env={"A=B": "1"})
        self.refused(TypeError, "env['A'] must be a str or None", env={"A": 1})
        self.refused(TypeError, "env must be a dict", env=["A=1"])

    def test_cwd_must_be_an_existing_directory(self) -> None:
        self.refused(ValueError, "cwd is not an existing directory",
                     cwd=os.path.join(tempfile.gettempdir(), "harness-no-such-dir-x"))
        self.refused(TypeError, "cwd must be a path", cwd=3)

    def test_flags_must_be_bools(self) -> None:
        self.refused(TypeError, "handoff", handoff=1)
        self.refused(TypeError, "https", https="yes")

    def test_name_must_be_a_str(self) -> None:
        self.refused(TypeError, "name must be a str", name=7)


class StopSignalTest(SpecTestCase):
    def test_a_signal_that_ends_a_process_is_taken(self) -> None:
        self.assertEqual(checked(stop_signal=signal.SIGINT).stop_signal, signal.SIGINT)

    def test_a_signal_that_does_not_end_a_process_is_refused(self) -> None:
        for sig in (signal.SIGSTOP, signal.SIGCONT, signal.SIGCHLD):
            self.refused(ValueError, "stop_signal must be a signal that ends a process",
                         stop_signal=sig)

    def test_a_number_that_is_no_signal_is_refused(self) -> None:
        self.refused(ValueError, "stop_signal", stop_signal=max(signal.valid_signals()) + 7)

    def test_a_name_is_not_a_signal_number(self) -> None:
        self.refused(TypeError, "stop_signal must be a signal number", stop_signal="SIGTERM")
        self.refused(TypeError, "stop_signal must be a signal number", stop_signal=True)


@unittest.skipIf(pwd is None, "user= needs the user database (pwd)")
class UserTest(SpecTestCase):
    def test_no_user_or_oneself_changes_nothing(self) -> None:
        me = checked(user=os.geteuid())
        self.assertEqual((me.uid, me.gid), (None, None))
        name = pwd.getpwuid(os.geteuid()).pw_name
        self.assertEqual((checked(user=name).uid, checked(user=name).gid), (None, None))

    def test_an_unknown_user_name_is_refused(self) -> None:
        unknown = _unknown_user_name()
        self.refused(ValueError, f"user {unknown!r} does not exist", user=unknown)

    def test_a_user_that_is_neither_name_nor_uid_is_refused(self) -> None:
        self.refused(TypeError, "user must be a user name or a uid", user=True)
        self.refused(TypeError, "user must be a user name or a uid", user=1.0)
        self.refused(ValueError, "user must be a uid >= 0", user=-1)

    @unittest.skipIf(os.geteuid() == 0, "root may run a server as anyone")
    def test_another_user_needs_root(self) -> None:
        self.refused(ValueError, "user=0: running a server as another user needs root",
                     "leave user= unset", user=0)

    def test_another_user_needs_root_whoever_runs_the_test(self) -> None:
        with mock.patch.object(os, "geteuid", return_value=4242):
            self.refused(ValueError, "user=0", "needs root (this process runs as uid 4242)",
                         user=0)

    @unittest.skipUnless(os.geteuid() == 0, "only root may run a server as another user")
    def test_root_gets_the_uid_and_gid_of_the_user(self) -> None:
        uid = 2 ** 31 - 11
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            expected = (uid, uid)  # a throwaway uid runs with the same number as its gid
        else:
            expected = (uid, entry.pw_gid)
        spec = checked(user=uid)
        self.assertEqual((spec.uid, spec.gid), expected)


if __name__ == "__main__":
    unittest.main()
