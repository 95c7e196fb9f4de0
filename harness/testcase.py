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

A server's options come from ``server_options()`` (per test) and the
classmethod ``class_server_options()`` (per class), which by default return
``server_defaults``; a call's keywords go over them, ``env`` merged.  What
the mixin shares with the pytest plugin (merging, argument checks, the
report's server blocks, kept logs) is in ``_runner.py``.

Nothing here reaches into unittest internals: the mixin wraps the result
object handed to ``run()`` and only uses documented ``TestResult`` parts.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
import unittest
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)

from . import _runner, _validate
from ._http_wire import check_expect_status
from ._jsonspec import check_spec
from ._manual import see
from ._server import marker, safety_net
from .errors import ResponseInvalid, ServerStartError
from .http import Response, check_response
from .memory import LeakReport, measure_leak
from .ports import PortAllocator, PortLease
from .process import ServerProcess

__all__ = ["ServerTestMixin", "ServerTestCase"]

# Like unittest's own modules: tracebacks of failed assertions stop at the
# test's line instead of showing assertResponse's insides.
__unittest = True

#: Lines of each server's log shown under a failing test (``log_tail_lines``).
LOG_TAIL_LINES = _runner.LOG_TAIL_LINES
_REPORTED = ("addError", "addFailure", "addSubTest")

if TYPE_CHECKING:
    # The checker sees the mixin as the TestCase it is mixed into; at run
    # time it stays a plain cooperative class.
    _TestCaseBase = unittest.TestCase
else:
    _TestCaseBase = object


# --------------------------------------------------------------------------
# The failure report


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
            # A failed start or a bad argument: the traceback ends at the test's line.
            err[1].with_traceback(_runner.cut_hidden_frames(err[2]))
            args = args[:-1] + ((err[0], err[1], err[1].__traceback__),)
            try:
                text = self._harness_test._harness_failure_report(err[1])
                if text:
                    _runner.add_note(err[1], text)
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

    def __init__(self, baseline: Sequence[ServerProcess]) -> None:
        self.servers: List[ServerProcess] = []
        self.leases: Dict[int, PortLease] = {}
        self.temp_root: Optional[str] = None
        self.baseline = list(baseline)  # servers alive before the test (held: ids stay theirs)
        self.kept_logs = _runner.KeptLogs()  # logs harness kept after a failed start
        self.reported = False  # an error or failure of this test was reported


def _live_servers() -> List[ServerProcess]:
    return safety_net.live()


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        raise OSError(f"could not remove the test's temp directory {path}")


# --------------------------------------------------------------------------
# The mixin


class ServerTestMixin(_TestCaseBase):
    """Servers for unittest tests.  Mix it in before ``unittest.TestCase``
    (or ``IsolatedAsyncioTestCase``), and call ``super()`` in ``setUp`` and
    ``tearDown`` as usual.

    Class attributes:

    * ``server_defaults``: ``ServerProcess`` arguments for every server of the
      class (``start_server`` keywords override them, ``env`` merged); for
      options computed per class or per test, override the classmethod
      ``class_server_options()`` or the method ``server_options()``;
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

    _harness: _TestState
    _harness_class_servers: ClassVar[List[ServerProcess]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Before 3.10 all TestCase classes share one class-cleanup list, so one
        # class's pending cleanups could run at another's teardown: give each
        # class its own, as 3.10+ does.
        if "__init_subclass__" not in vars(unittest.TestCase):
            setattr(cls, "_class_cleanups", [])  # noqa: B010 (unittest's private list)

    # ----------------------------------------------------------------------
    # Running

    def run(self, result: Optional[unittest.TestResult] = None) -> Optional[unittest.TestResult]:
        """unittest's ``run``, with the servers' log tails added to a failure's report."""
        if result is None:  # direct test.run(): nobody to report to but the default
            return super().run(result)
        self._harness = _TestState(baseline=_live_servers())
        # The first cleanup registered runs last, after every server's stop.
        self.addCleanup(self._harness_check_leftovers)
        # What was made for this test (a fresh database) ends with it, after its clean-ups.
        scope = _runner.open_scope(self.id())
        self.addCleanup(scope.close)
        try:
            super().run(cast(unittest.TestResult, _ReportingResult(result, self)))
        except BaseException:
            # KeyboardInterrupt and friends skip the cleanups: stop our servers here.
            self._harness_stop_all()
            scope.close()
            raise
        state = self._harness
        # A test that passed expected its failed starts: their logs go.
        state.kept_logs.settle(test_failed=state.reported)
        return result

    def setUp(self) -> None:
        """Prepares the test's servers; an override must call ``super().setUp()``."""
        self._harness_state()
        super().setUp()

    def tearDown(self) -> None:
        """Servers stop later, in the cleanups, so ``tearDown`` can still use them."""
        # Servers stop in the cleanups, after tearDown: a tearDown may still use them.
        super().tearDown()

    def _harness_state(self) -> _TestState:
        state = self.__dict__.get("_harness")
        if state is None:  # run() was bypassed (e.g. debug())
            state = self._harness = _TestState(baseline=_live_servers())
        return state

    # ----------------------------------------------------------------------
    # Servers

    @classmethod
    def class_server_options(cls) -> Mapping[str, Any]:
        """``ServerProcess`` arguments for the servers of this class: by default
        ``server_defaults``.

        ``start_class_server`` takes them, and so does ``server_options`` unless
        it is overridden.  Override this classmethod to compute them.
        """
        return cls.server_defaults

    def server_options(self) -> Mapping[str, Any]:
        """``ServerProcess`` arguments for the servers ``start_server`` starts in
        this test: by default ``class_server_options()``.

        Override it for options that depend on the test (a per-test socket
        path or data directory, a check that uses ``self``); keywords given to
        ``start_server`` still go over them, ``env`` merged.
        """
        return self.class_server_options()

    @classmethod
    def _harness_arguments(cls, options: object, source: str, app_code: Optional[str],
                           kwargs: Mapping[str, Any], caller: str,
                           default_name: str) -> Dict[str, Any]:
        """Options (from ``source``, named in errors) and a call, merged."""
        if options is cls.server_defaults:
            source = "server_defaults"  # not overridden: name what the user wrote
        defaults = _runner.check_options(f"{cls.__name__}.{source}", options)
        _runner.check_arguments(f"{cls.__name__}.{caller}()", kwargs)
        arguments = _runner.merge_arguments(defaults, app_code, kwargs, default_name)
        if cls.port_range is not None and arguments.get("port") is None \
                and arguments.get("port_range") is None:
            arguments["port_range"] = _validate.port_range(cls.port_range,
                                                       f"{cls.__name__}.port_range")
        return arguments

    def start_server(self, app_code: Optional[str] = None, **kwargs: Any) -> ServerProcess:
        """Start a server for this test and return it once ready.

        Takes the ``ServerProcess`` arguments, over ``server_options()``
        (``env`` merged).  The server is stopped by ``addCleanup`` whatever
        happens to the test.
        """
        if type(self).server_options is ServerTestMixin.server_options:  # not overridden
            options, source = self.class_server_options(), "class_server_options()"
        else:
            options, source = self.server_options(), "server_options()"
        arguments = self._harness_arguments(options, source, app_code, kwargs, "start_server",
                                            self._testMethodName)
        state = self._harness_state()
        port = arguments.get("port")
        if port is not None:  # a port from get_next_port(): the server takes the lease over
            state.leases.pop(port, None)
        server = _runner.create_server(arguments)
        state.servers.append(server)
        self.addCleanup(self._harness_stop, server)
        try:
            return _runner.start_server(server)
        except ServerStartError as exc:
            state.kept_logs.note(exc)
            raise

    @classmethod
    def start_class_server(cls, app_code: Optional[str] = None, **kwargs: Any) -> ServerProcess:
        """Start a server shared by the tests of this class (call it in ``setUpClass``).

        Takes the ``ServerProcess`` arguments, over ``class_server_options()``
        (``env`` merged).  Stopped by ``addClassCleanup`` after the class's
        last test, or at once if ``setUpClass`` fails later on.
        """
        arguments = cls._harness_arguments(cls.class_server_options(), "class_server_options()",
                                           app_code, kwargs, "start_class_server", cls.__name__)
        server = _runner.create_server(arguments)
        if "_harness_class_servers" not in vars(cls):
            cls._harness_class_servers = []
        cls._harness_class_servers.append(server)
        cls.addClassCleanup(cls._harness_stop_class_server, server)
        return _runner.start_server(server)

    @classmethod
    def _harness_stop_class_server(cls, server: ServerProcess) -> None:
        try:
            server.stop()
        finally:
            servers = vars(cls).get("_harness_class_servers", [])
            if server in servers:
                servers.remove(server)

    def _harness_stop(self, server: ServerProcess) -> None:
        server.stop()

    def _harness_stop_all(self) -> None:
        state = self.__dict__.get("_harness")
        for server in reversed(state.servers if state else []):
            try:
                server.stop()
            except Exception:  # already on the way out with another exception
                pass

    def _harness_class_servers_of(self) -> List[ServerProcess]:
        servers: List[ServerProcess] = []
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
        raise self.failureException(
            f"{self.id()} left {len(left)} server(s) running: {'; '.join(names)}.  "
            f"harness has stopped them now.  Stop a server you start yourself "
            f"(`with ServerProcess(...) as server:` or `self.addCleanup(server.stop)`), "
            f"or start it with self.start_server(), which stops it for you; "
            f"{see('left-running')}")

    def _harness_failure_report(self, exc: BaseException) -> str:
        """The log tails of this test's servers (and its class's), for a failure."""
        lines = self.log_tail_lines
        if not lines:
            return ""
        state = self.__dict__.get("_harness")
        servers: List[Tuple[str, ServerProcess]] = [
            ("test", server) for server in (state.servers if state else [])]
        servers += [("class", server) for server in self._harness_class_servers_of()]
        blocks = _runner.report_blocks(servers, lines, exc)
        if not blocks:
            return ""
        return (f"{_runner.REPORT_TITLE} of {self.id()} (last {lines} lines each):\n"
                + "\n".join(blocks))

    # ----------------------------------------------------------------------
    # Ports, files

    def get_next_port(self) -> int:
        """A free port from ``port_range``, leased to this test until it ends.

        For a server you launch yourself; ``start_server(port=port)`` also
        works (the server takes the lease over).
        """
        cls = type(self)
        port_range = None if cls.port_range is None else _validate.port_range(
            cls.port_range, f"{cls.__name__}.port_range")
        lease = PortAllocator(port_range).acquire()
        self._harness_state().leases[lease.port] = lease
        self.addCleanup(self._harness_release, lease)
        return lease.port

    def _harness_release(self, lease: PortLease) -> None:
        lease.release()
        self._harness_state().leases.pop(lease.port, None)

    def _harness_temp_root(self) -> str:
        state = self._harness_state()
        if state.temp_root is None:
            state.temp_root = marker.make_private_dir()  # 0700, reaped if the runner dies
            self.addCleanup(_remove_tree, state.temp_root)
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

    # ----------------------------------------------------------------------
    # Assertions

    def assertResponse(self, response: Response, status: object = 200, json: object = None,
                       msg: Optional[str] = None) -> Response:
        """Fail unless ``response`` has ``status`` (an int, a collection or a range,
        None for any) and its JSON matches ``json`` (keys mapped to a value, a
        type or a predicate; or a predicate over the document).  Returns it.
        """
        expect_status = check_expect_status(status)
        expect_json = check_spec(json, "json")
        if not (hasattr(response, "status") and hasattr(response, "body")):
            raise TypeError(f"response must be a harness Response, got {response!r}")
        try:
            check_response(response, expect_status, expect_json, "")
        except ResponseInvalid as exc:
            problem = str(exc)
        else:
            return response
        self.fail(self._formatMessage(msg, problem))

    def assertNoLeak(self, server: Union[ServerProcess, int], workload: Callable[[], object],
                     **kwargs: Any) -> LeakReport:
        """Fail if ``server`` leaks memory while ``workload()`` runs round after round.

        Keywords go to :func:`harness.memory.measure_leak` (``rounds``,
        ``warmup``, ``threshold``, ``metric``).  Returns the ``LeakReport``.
        """
        report = measure_leak(server, workload, **kwargs)
        if report.leaking:
            name = getattr(server, "name", None)
            self.fail(f"server {name or server!r} leaks memory:\n{report}")
        return report


class ServerTestCase(ServerTestMixin, unittest.TestCase):
    """``unittest.TestCase`` with :class:`ServerTestMixin`."""
