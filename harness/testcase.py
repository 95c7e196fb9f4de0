"""The unittest mixin: servers that belong to a test (or to a class), gone whatever happens.

``class ApiTests(ServerTestMixin, unittest.TestCase)`` gives every test
``self.start_server(APP)``: the server is stopped by ``addCleanup`` even when
the test fails, errors in ``setUp`` or is interrupted; ``start_class_server``
does the same for ``setUpClass`` through ``addClassCleanup``.  When a test
fails or errors, its report ends with the tail of each of its servers' logs,
on every supported Python and under pytest: the failing exception gets the
tail as a PEP 678 note (rendered by unittest on 3.11+ and by pytest on every
version), and where a ``unittest.TestResult`` formatted the failure without
notes (3.8-3.10) the tail is appended to the text it stored.  After the
last cleanup the test is checked for servers it started and left running.

Nothing here reaches into unittest internals: the mixin wraps the result
object handed to ``run()`` and only uses documented ``TestResult`` parts.
"""
from __future__ import annotations

import functools
import inspect
import os
import shutil
import tempfile
import unittest
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Union

from ._server import logstore, marker
from ._validate import check_port_range
from .errors import ServerStartError

__all__ = ["ServerTestMixin", "ServerTestCase"]

# Like unittest's own modules: tracebacks of failed assertions stop at the
# test's line instead of showing assertResponse's insides.
__unittest = True

#: Lines of each server's log shown under a failing test (``log_tail_lines``).
LOG_TAIL_LINES = 30
_REPORT_TITLE = "harness: log tail of the servers of"
_REPORTED = ("addError", "addFailure", "addSubTest")


# --------------------------------------------------------------------------
# The failure report


def _server_block(server: Any, scope: str, lines: int) -> str:
    try:
        tail = server.log_tail(lines)
    except Exception as exc:  # the report must never hide the failure it decorates
        tail = f"(log unreadable: {type(exc).__name__}: {exc})"
    state = server.state
    log_path = server.log_path
    if state != "running" and log_path and os.path.exists(log_path):
        state += f"; log kept at {log_path}"
    head = f"--- {scope} server {server.name!r} (pid {server.pid}, {server.url}, {state})"
    body = "\n".join("    " + line for line in tail.splitlines()) if tail.strip() \
        else "    (the log is empty)"
    return head + "\n" + body


def _add_note(exc: BaseException, text: str) -> None:
    """``exc.add_note(text)`` on every Python (``__notes__`` is the 3.11 protocol)."""
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list) and text in notes:
        return
    if hasattr(exc, "add_note"):
        exc.add_note(text)
    elif isinstance(notes, list):
        notes.append(text)
    elif notes is None:
        exc.__notes__ = [text]  # type: ignore[attr-defined]


class _ReportingResult:
    """Stands in for the result given to ``TestCase.run``: forwards everything,
    and adds the test's server log tails to each error and failure it reports.

    Only ``addError``, ``addFailure`` and ``addSubTest`` are intercepted, and only
    when the real result has them (``hasattr`` on this object stays truthful).
    """

    def __init__(self, result: Any, test: "ServerTestMixin") -> None:
        object.__setattr__(self, "_harness_result", result)
        object.__setattr__(self, "_harness_test", test)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._harness_result, name)
        if name in _REPORTED:
            return functools.partial(self._harness_report, attr)
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._harness_result, name, value)

    def _harness_report(self, method: Callable[..., Any], *args: Any) -> Any:
        err = args[-1]  # addError(test, err), addSubTest(test, subtest, err or None)
        text = ""
        state = self._harness_test.__dict__.get("_harness")
        if err is not None and state is not None:
            state.reported = True
        if isinstance(err, tuple) and len(err) == 3 and isinstance(err[1], BaseException):
            try:
                text = self._harness_test._harness_failure_report(err[1])
                if text:
                    _add_note(err[1], text)
            except Exception:  # never let the report hide the failure
                text = ""
        real = self._harness_result
        stored = [lst for lst in (getattr(real, "errors", None), getattr(real, "failures", None))
                  if isinstance(lst, list)]
        sizes = [len(lst) for lst in stored]
        outcome = method(*args)
        if text:
            # A TestResult keeps (test, formatted traceback) pairs; before 3.11
            # the traceback module does not render notes, so append the tail.
            first_line = text.splitlines()[0]
            for lst, size in zip(stored, sizes):
                for index in range(size, len(lst)):
                    entry = lst[index]
                    if (isinstance(entry, tuple) and len(entry) == 2
                            and isinstance(entry[1], str) and first_line not in entry[1]):
                        lst[index] = (entry[0], entry[1].rstrip("\n") + "\n\n" + text + "\n")
        return outcome


# --------------------------------------------------------------------------
# Per-test state


class _TestState:
    """What one run of one test started: servers, port leases, a temp root."""

    def __init__(self, baseline: Sequence[Any]) -> None:
        self.servers: List[Any] = []
        self.leases: Dict[int, Any] = {}
        self.temp_root: Optional[str] = None
        self.baseline = list(baseline)  # servers alive before the test (held: ids stay theirs)
        self.kept_logs: List[str] = []  # logs harness kept after a failed start
        self.reported = False  # an error or failure of this test was reported


def _live_servers() -> List[Any]:
    from ._server import safety_net
    return safety_net.live()


def _check_arguments(owner: str, kwargs: Mapping[str, Any]) -> None:
    """Unknown ``ServerProcess`` arguments, named with where they came from."""
    from .process import ServerProcess
    known = [name for name in inspect.signature(ServerProcess).parameters if name != "self"]
    for key in kwargs:
        if key not in known:
            raise TypeError(f"{owner}: {key!r} is not a ServerProcess argument; "
                            f"known: {', '.join(known)}")


def merge_arguments(defaults: Mapping[str, Any], app_code: Optional[str],
                    kwargs: Mapping[str, Any], name: str) -> Dict[str, Any]:
    """``ServerProcess`` arguments: the defaults, overridden by the call.

    The program the call names (``app_code`` or ``argv``) replaces the
    default one, and a fixed ``port`` replaces a default ``port_range``.
    """
    arguments = dict(defaults)
    if app_code is not None or "app_code" in kwargs or "argv" in kwargs:
        arguments.pop("app_code", None)
        arguments.pop("argv", None)
    if kwargs.get("port") is not None:
        arguments.pop("port_range", None)
    arguments.update(kwargs)
    if app_code is not None:
        arguments["app_code"] = app_code
    arguments.setdefault("name", name)
    return arguments


def remove_kept_log(log_path: str) -> None:
    """Remove a failed start's kept log (the test that saw the failure passed anyway:
    it expected it; the log only matters to a test that failed, whose report shows it)."""
    logstore.discard(log_path)


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        raise OSError(f"could not remove the test's temp directory {path}")


# --------------------------------------------------------------------------
# The mixin


class ServerTestMixin:
    """Servers for unittest tests.  Mix it in before ``unittest.TestCase``
    (or ``IsolatedAsyncioTestCase``), and call ``super()`` in ``setUp`` and
    ``tearDown`` as usual.

    Class attributes:

    * ``server_defaults``: ``ServerProcess`` arguments for every server of the
      class (``start_server`` keywords override them);
    * ``port_range``: ``(low, high)`` the class's servers and
      ``get_next_port`` take ports from.  Optional: leases already keep
      parallel suites apart, a range only makes ports predictable;
    * ``log_tail_lines``: log lines per server in a failure report (0: none);
    * ``check_leftover_servers``: fail a test that leaves a server it started
      itself (without ``start_server``) running (default True).
    """

    server_defaults: ClassVar[Mapping[str, Any]] = {}
    port_range: ClassVar[Optional[Sequence[int]]] = None
    log_tail_lines: ClassVar[int] = LOG_TAIL_LINES
    check_leftover_servers: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Before 3.10 all TestCase classes share one class-cleanup list, so one
        # class's pending cleanups could run at another's teardown: give each
        # class its own, as 3.10+ does.
        if "__init_subclass__" not in vars(unittest.TestCase):
            cls._class_cleanups = []  # type: ignore[attr-defined]

    # ------------------------------------------------------------ running

    def run(self, result: Any = None) -> Any:
        if result is None:  # direct test.run(): nobody to report to but the default
            return super().run(result)  # type: ignore[misc]
        self._harness = _TestState(baseline=_live_servers())
        # The first cleanup registered runs last, after every server's stop.
        self.addCleanup(self._harness_check_leftovers)  # type: ignore[attr-defined]
        try:
            super().run(_ReportingResult(result, self))  # type: ignore[misc]
        except BaseException:
            # KeyboardInterrupt and friends skip the cleanups: stop our servers here.
            self._harness_stop_all()
            raise
        state = self._harness
        if not state.reported:  # the test passed: it expected its failed starts
            for log_path in state.kept_logs:
                remove_kept_log(log_path)
        return result

    def setUp(self) -> None:
        self._harness_state()
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        # Servers stop in the cleanups, after tearDown: a tearDown may still use them.
        super().tearDown()  # type: ignore[misc]

    def _harness_state(self) -> _TestState:
        state = self.__dict__.get("_harness")
        if state is None:  # run() was bypassed (e.g. debug())
            state = self._harness = _TestState(baseline=_live_servers())
        return state

    # ------------------------------------------------------------ servers

    @classmethod
    def _harness_arguments(cls, app_code: Optional[str], kwargs: Mapping[str, Any],
                           default_name: str) -> Dict[str, Any]:
        defaults = cls.server_defaults
        if not isinstance(defaults, Mapping):
            raise TypeError(f"{cls.__name__}.server_defaults must be a dict of ServerProcess "
                            f"arguments, got {defaults!r}")
        _check_arguments(f"{cls.__name__}.server_defaults", defaults)
        _check_arguments(f"{cls.__name__}.start_server()", kwargs)
        arguments = merge_arguments(defaults, app_code, kwargs, default_name)
        if cls.port_range is not None and arguments.get("port") is None \
                and arguments.get("port_range") is None:
            arguments["port_range"] = check_port_range(cls.port_range,
                                                       f"{cls.__name__}.port_range")
        return arguments

    def start_server(self, app_code: Optional[str] = None, **kwargs: Any) -> Any:
        """Start a server for this test and return it once ready.

        Takes the ``ServerProcess`` arguments (over ``server_defaults``).  The
        server is stopped by ``addCleanup`` whatever happens to the test.
        """
        from .process import ServerProcess
        arguments = self._harness_arguments(app_code, kwargs, self._testMethodName)  # type: ignore[attr-defined]
        state = self._harness_state()
        port = arguments.get("port")
        state.leases.pop(port, None)  # a port from get_next_port(): the server takes the lease over
        server = ServerProcess(**arguments)
        state.servers.append(server)
        self.addCleanup(self._harness_stop, server)  # type: ignore[attr-defined]
        try:
            return server.start()
        except ServerStartError as exc:
            if exc.log_path:
                state.kept_logs.append(exc.log_path)
            raise

    @classmethod
    def start_class_server(cls, app_code: Optional[str] = None, **kwargs: Any) -> Any:
        """Start a server shared by the tests of this class (call it in ``setUpClass``).

        Stopped by ``addClassCleanup`` after the class's last test, or at once
        if ``setUpClass`` fails later on.
        """
        from .process import ServerProcess
        server = ServerProcess(**cls._harness_arguments(app_code, kwargs, cls.__name__))
        if "_harness_class_servers" not in vars(cls):
            cls._harness_class_servers = []  # type: ignore[attr-defined]
        cls._harness_class_servers.append(server)  # type: ignore[attr-defined]
        cls.addClassCleanup(cls._harness_stop_class_server, server)  # type: ignore[attr-defined]
        return server.start()

    @classmethod
    def _harness_stop_class_server(cls, server: Any) -> None:
        try:
            server.stop()
        finally:
            servers = vars(cls).get("_harness_class_servers", [])
            if server in servers:
                servers.remove(server)

    def _harness_stop(self, server: Any) -> None:
        server.stop()

    def _harness_stop_all(self) -> None:
        state = self.__dict__.get("_harness")
        for server in reversed(state.servers if state else []):
            try:
                server.stop()
            except Exception:  # already on the way out with another exception
                pass

    def _harness_class_servers_of(self) -> List[Any]:
        servers: List[Any] = []
        for klass in type(self).__mro__:
            servers.extend(vars(klass).get("_harness_class_servers", []))
        return servers

    def _harness_check_leftovers(self) -> None:
        state = self.__dict__.get("_harness")
        if state is None or not self.check_leftover_servers:
            return
        known = {id(s) for s in state.baseline + self._harness_class_servers_of()}
        left = [s for s in _live_servers() if id(s) not in known]
        if not left:
            return
        names = []
        for server in left:
            names.append(repr(server))
            try:
                server.stop()
            except Exception as exc:
                names[-1] += f" (stopping it failed: {exc})"
        raise self.failureException(  # type: ignore[attr-defined]
            f"{self.id()} left {len(left)} server(s) running: {'; '.join(names)}.  "  # type: ignore[attr-defined]
            f"harness has stopped them now.  Stop a server you start yourself "
            f"(`with ServerProcess(...) as server:` or `self.addCleanup(server.stop)`), "
            f"or start it with self.start_server(), which stops it for you.")

    def _harness_failure_report(self, exc: BaseException) -> str:
        """The log tails of this test's servers (and its class's), for a failure."""
        lines = self.log_tail_lines
        if not lines:
            return ""
        state = self.__dict__.get("_harness")
        own = list(state.servers) if state else []
        reported_log = getattr(exc, "log_path", None)  # a ServerStartError shows it already
        blocks = [_server_block(server, scope, lines)
                  for scope, servers in (("test", own), ("class", self._harness_class_servers_of()))
                  for server in servers
                  if server.pid is not None and not (reported_log and server.log_path == reported_log)]
        if not blocks:
            return ""
        return f"{_REPORT_TITLE} {self.id()} (last {lines} lines each):\n" + "\n".join(blocks)  # type: ignore[attr-defined]

    # -------------------------------------------------------- ports, files

    def get_next_port(self) -> int:
        """A free port from ``port_range``, leased to this test until it ends.

        For a server you launch yourself; ``start_server(port=port)`` also
        works (the server takes the lease over).
        """
        from .ports import PortAllocator
        cls = type(self)
        port_range = None if cls.port_range is None else check_port_range(
            cls.port_range, f"{cls.__name__}.port_range")
        lease = PortAllocator(port_range).acquire()
        self._harness_state().leases[lease.port] = lease
        self.addCleanup(self._harness_release, lease)  # type: ignore[attr-defined]
        return lease.port

    def _harness_release(self, lease: Any) -> None:
        lease.release()
        self._harness_state().leases.pop(lease.port, None)

    def _harness_temp_root(self) -> str:
        state = self._harness_state()
        if state.temp_root is None:
            state.temp_root = marker.make_private_dir()  # 0700, reaped if the runner dies
            self.addCleanup(_remove_tree, state.temp_root)  # type: ignore[attr-defined]
        return state.temp_root

    def make_temp_dir(self) -> str:
        """A new empty private directory (0700), removed when the test ends."""
        return tempfile.mkdtemp(prefix="dir-", dir=self._harness_temp_root())

    def make_temp_file(self, content: Union[str, bytes] = b"", suffix: str = "") -> str:
        """A new private file (0600) holding ``content``, removed when the test ends."""
        if not isinstance(content, (str, bytes)):
            raise TypeError(f"content must be str or bytes, got {type(content).__name__}")
        if not isinstance(suffix, str):
            raise TypeError(f"suffix must be a str, got {suffix!r}")
        if os.sep in suffix or (os.altsep and os.altsep in suffix):
            raise ValueError(f"suffix must not contain a path separator, got {suffix!r}")
        fd, path = tempfile.mkstemp(prefix="file-", suffix=suffix, dir=self._harness_temp_root())
        data = content.encode("utf-8") if isinstance(content, str) else content
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    # ---------------------------------------------------------- assertions

    def assertResponse(self, response: Any, status: Any = 200, json: Any = None,
                       msg: Optional[str] = None) -> Any:
        """Fail unless ``response`` has ``status`` (an int, a collection or a range,
        None for any) and its JSON matches ``json`` (keys mapped to a value, a
        type or a predicate; or a predicate over the document).  Returns it.
        """
        from ._http_wire import check_expect_status
        from ._jsonspec import check_spec
        from .errors import ResponseInvalid
        from .http import _validate
        expect_status = check_expect_status(status)
        expect_json = check_spec(json, "json")
        if not (hasattr(response, "status") and hasattr(response, "body")):
            raise TypeError(f"response must be a harness Response, got {response!r}")
        try:
            _validate(response, expect_status, expect_json, "")
        except ResponseInvalid as exc:
            problem = str(exc)
        else:
            return response
        self.fail(self._formatMessage(msg, problem))  # type: ignore[attr-defined]

    def assertNoLeak(self, server: Any, workload: Callable[[], Any], **kwargs: Any) -> Any:
        """Fail if ``server`` leaks memory while ``workload()`` runs round after round.

        Keywords go to :func:`harness.memory.measure_leak` (``rounds``,
        ``warmup``, ``threshold``, ``metric``).  Returns the ``LeakReport``.
        """
        from .memory import measure_leak
        report = measure_leak(server, workload, **kwargs)
        if report.leaking:
            name = getattr(server, "name", None)
            self.fail(f"server {name or server!r} leaks memory:\n{report}")  # type: ignore[attr-defined]
        return report


class ServerTestCase(ServerTestMixin, unittest.TestCase):
    """``unittest.TestCase`` with :class:`ServerTestMixin`."""
