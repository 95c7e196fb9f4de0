"""``_server/launch.py``, its pure parts: warm or fresh, the environment, the command.

``warm_key`` decides whether a server is forked from a warm launcher, from
what it runs and ``HARNESS_WARM``; ``environment`` is what the server
finds in ``os.environ`` (``PORT``/``HOST`` only with a port, ``SOCKET_PATH``,
its own ``TMPDIR``, never an outer socket activation's ``LISTEN_*``);
``argv_command`` fills in the placeholders and ``fresh_command`` is the
interpreter line of a fresh Python server.  Nothing is launched here.
"""
from __future__ import annotations

import os
import sys
import unittest
from typing import Any, Dict, Optional
from unittest import mock

from _support import server_spec

from harness._server import boot, launch
from harness._server.spec import ServerSpec

MARKERS = {"HARNESS_OWNER": "1:2", "HARNESS_SERVER_ID": "s-1"}


def serve() -> None:
    """A target importable by name."""


def environment(spec: ServerSpec, *, outer: Optional[Dict[str, str]] = None,
                port: Optional[int] = 4001, socket_path: Optional[str] = None,
                python: bool = False) -> Dict[str, str]:
    """``launch.environment`` with ``outer`` added to this process's environment."""
    with mock.patch.dict(os.environ, outer or {}):
        return launch.environment(spec, port=port, socket_path=socket_path, markers=MARKERS,
                                  temp_dir="/tmp/h-server-1", python=python)


class WarmKeyTest(unittest.TestCase):
    def setUp(self) -> None:
        # Keys a warm launch found unsafe earlier in this process are this test's own.
        patcher = mock.patch.dict(launch._unsafe, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def key(self, warm: Optional[str], **overrides: Any) -> Any:
        spec = server_spec(**overrides)
        with mock.patch.dict(os.environ):
            os.environ.pop(launch.WARM_VAR, None)
            if warm is not None:
                os.environ[launch.WARM_VAR] = warm
            return launch.warm_key(spec)

    def test_unset_a_target_server_is_warm_with_its_preload(self) -> None:
        self.assertEqual(self.key(None, app_code=None, target=serve), ())
        self.assertEqual(self.key(None, app_code=None, target=serve, preload=["json"]),
                         ("json",))

    def test_unset_an_app_server_is_warm_only_with_a_preload(self) -> None:
        self.assertIsNone(self.key(None))
        self.assertEqual(self.key(None, preload=[]), ())
        self.assertEqual(self.key(None, preload=["json", "email"]), ("json", "email"))

    def test_an_argv_server_is_never_warm(self) -> None:
        for warm in (None, "0", "1"):
            self.assertIsNone(self.key(warm, app_code=None, argv=["redis-server"]))

    def test_0_makes_every_server_fresh(self) -> None:
        self.assertIsNone(self.key("0", app_code=None, target=serve))
        self.assertIsNone(self.key("0", preload=["json"]))

    def test_1_makes_every_python_server_warm(self) -> None:
        self.assertEqual(self.key("1"), ())
        self.assertEqual(self.key(" 1 ", app_code=None, target=serve), ())

    def test_a_bad_value_is_refused_naming_the_variable(self) -> None:
        with self.assertRaises(ValueError) as caught:
            self.key("yes")
        self.assertIn("HARNESS_WARM must be 0 (never warm), 1 (every Python server warm) or "
                      "unset, got 'yes'", str(caught.exception))

    def test_a_preload_found_unsafe_is_launched_fresh(self) -> None:
        launch.mark_unsafe(("json",), "it starts threads")
        self.assertIsNone(self.key(None, preload=["json"]))
        self.assertEqual(self.key(None, preload=["email"]), ("email",))

    def test_a_target_module_found_unsafe_is_launched_fresh(self) -> None:
        launch.mark_unsafe((serve.__module__, ()), "it starts threads")
        self.assertIsNone(self.key(None, app_code=None, target=serve))
        self.assertEqual(self.key(None, preload=[]), ())  # other servers stay warm


class EnvironmentTest(unittest.TestCase):
    def test_a_server_with_a_port_gets_port_and_host(self) -> None:
        env = environment(server_spec(host="::1"), port=4001)
        self.assertEqual((env["PORT"], env["HOST"]), ("4001", "::1"))
        self.assertNotIn("SOCKET_PATH", env)

    def test_a_server_without_a_port_gets_neither(self) -> None:
        env = environment(server_spec(listens=False, health=lambda server: True), port=None)
        self.assertNotIn("PORT", env)
        self.assertNotIn("HOST", env)

    def test_an_outer_port_is_not_passed_on_to_a_server_without_one(self) -> None:
        # The runner may itself run where PORT is set (a PaaS, a CI job): a
        # server without a port must not take that one for its own.
        outer = {"PORT": "8000", "HOST": "127.0.0.9", "SOCKET_PATH": "/run/outer.sock"}
        env = environment(server_spec(listens=False, health=lambda server: True),
                          outer=outer, port=None)
        for var in outer:
            self.assertNotIn(var, env)
        env = environment(server_spec(unix_socket=True), outer=outer, port=None,
                          socket_path="/tmp/h-1/server.sock")
        self.assertEqual(env["SOCKET_PATH"], "/tmp/h-1/server.sock")
        self.assertNotIn("PORT", env)
        self.assertNotIn("HOST", env)

    def test_env_given_for_the_server_wins_over_the_outer_one(self) -> None:
        env = environment(server_spec(listens=False, health=lambda server: True,
                                      env={"PORT": "9"}), outer={"PORT": "8000"}, port=None)
        self.assertEqual(env["PORT"], "9")

    def test_a_unix_socket_server_gets_socket_path(self) -> None:
        env = environment(server_spec(unix_socket=True), port=None,
                          socket_path="/tmp/h-1/server.sock")
        self.assertEqual(env["SOCKET_PATH"], "/tmp/h-1/server.sock")

    def test_tmpdir_and_the_markers_are_the_servers_own(self) -> None:
        env = environment(server_spec(), outer={"TMPDIR": "/elsewhere"})
        self.assertEqual(env["TMPDIR"], "/tmp/h-server-1")
        for key, value in MARKERS.items():
            self.assertEqual(env[key], value)

    def test_an_outer_socket_activation_is_never_passed_on(self) -> None:
        outer = {"LISTEN_FDS": "2", "LISTEN_PID": "1", "LISTEN_FDNAMES": "a:b"}
        env = environment(server_spec(), outer=outer)
        for var in outer:
            self.assertNotIn(var, env)

    def test_handoff_sets_listen_fds_and_a_name(self) -> None:
        env = environment(server_spec(handoff=True, name="my api!"),
                          outer={"LISTEN_FDS": "2", "LISTEN_PID": "1"})
        self.assertEqual(env["LISTEN_FDS"], "1")
        self.assertEqual(env["LISTEN_FDNAMES"], "my_api_")
        self.assertNotIn("LISTEN_PID", env)  # set by the server's own process, before exec

    def test_env_adds_and_none_removes(self) -> None:
        env = environment(server_spec(env={"ADDED": "1", "REMOVED": None}),
                          outer={"REMOVED": "x", "KEPT": "y"})
        self.assertEqual(env["ADDED"], "1")
        self.assertNotIn("REMOVED", env)
        self.assertEqual(env["KEPT"], "y")

    def test_output_is_unbuffered_unless_asked_otherwise(self) -> None:
        with mock.patch.dict(os.environ):
            os.environ.pop("PYTHONUNBUFFERED", None)
            self.assertEqual(environment(server_spec())["PYTHONUNBUFFERED"], "1")
        self.assertEqual(environment(server_spec(), outer={"PYTHONUNBUFFERED": ""})[
            "PYTHONUNBUFFERED"], "")
        self.assertNotIn("PYTHONUNBUFFERED",
                         environment(server_spec(env={"PYTHONUNBUFFERED": None})))

    def test_a_python_server_gets_the_runners_sys_path_made_absolute(self) -> None:
        runner_path = ["/opt/lib", "relative/lib", "/opt/lib"]
        with mock.patch.object(sys, "path", runner_path), mock.patch.dict(os.environ):
            os.environ.pop(boot.SYS_PATH_ENV, None)
            env = environment(server_spec(), python=True)
            argv_env = environment(server_spec(app_code=None, argv=["true"]), python=False)
        self.assertEqual(env[boot.SYS_PATH_ENV].split(os.pathsep),
                         ["/opt/lib", os.path.join(os.getcwd(), "relative/lib")])
        self.assertNotIn(boot.SYS_PATH_ENV, argv_env)


class CommandTest(unittest.TestCase):
    def test_placeholders_are_filled_in(self) -> None:
        spec = server_spec(app_code=None, host="::1",
                           argv=["srv", "--bind={host}:{port}", "{port}", "plain"])
        self.assertEqual(launch.argv_command(spec, 4001, None),
                         ["srv", "--bind=::1:4001", "4001", "plain"])

    def test_the_socket_placeholder_is_the_socket_path(self) -> None:
        spec = server_spec(app_code=None, unix_socket=True, argv=["srv", "--unix={socket}"])
        self.assertEqual(launch.argv_command(spec, None, "/tmp/h-1/server.sock"),
                         ["srv", "--unix=/tmp/h-1/server.sock"])

    def test_a_placeholder_without_a_value_stays(self) -> None:
        spec = server_spec(app_code=None, argv=["srv", "{port}", "{socket}"])
        self.assertEqual(launch.argv_command(spec, None, None), ["srv", "{port}", "{socket}"])

    def test_a_fresh_python_server_runs_boot_in_this_interpreter(self) -> None:
        self.assertEqual(launch.fresh_command("app", "/tmp/h-1/app.py"),
                         [sys.executable, os.path.abspath(boot.__file__), "app",
                          "/tmp/h-1/app.py"])


if __name__ == "__main__":
    unittest.main()
