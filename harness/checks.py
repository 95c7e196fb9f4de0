"""Readiness checks, and the loop that waits until a server passes them.

A check answers one question about a running server: "ready yet?".  The
built-in checks also say *why not* in a short, countable label ("connection
refused", "HTTP 404", "JSON missing 'message'"), so an error can summarise
hundreds of attempts in one line.  Any callable ``check(server)`` works too:
truthy means ready; falsy or an exception means not yet.
"""
from __future__ import annotations

import enum
import errno
import http.client
import json as _json
import socket
import ssl
from collections import OrderedDict
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    NamedTuple,
    Optional,
    Pattern,
    Protocol,
    Sequence,
    Tuple,
    Union,
)

from . import _jsonspec, _validate
from ._config import scaled
from ._http_wire import (
    PROBE_MAX_BODY,
    BodyTooLarge,
    DeadlineExceeded,
    check_expect_status,
    describe_status,
    read_body,
    server_connection,
    size_text,
    status_matches,
)
from ._jsonspec import JsonSpec
from ._os import sockets
from ._wait import Deadline, pause, poll_interval
from .errors import WaitTimeout

# One probe never waits longer than this (or the time left, if less).
DEFAULT_PROBE_TIMEOUT = 2.0


class Outcome(NamedTuple):
    """What one readiness attempt saw: ``label`` is short and countable.

    ``foreign`` marks the outcome "the port is held by a process that is not
    the server's": readiness gives up on this port at once.
    """
    #: True: this attempt passed.
    ok: bool
    #: Short and the same each time the same thing is wrong: it is counted.
    label: str
    #: What varies (the body seen, the error's text), kept for the message.
    detail: str = ""
    #: A process that is not the server's holds the port: give up on it.
    foreign: bool = False


class ServerLike(Protocol):
    """What a check may use of the server it probes (a ``ServerProcess`` has all of it).

    ``log_path``, ``launch_id`` and ``log_offset`` locate the current
    launch's output in the log; ``socket_path`` is set for a Unix-socket
    server, ``ssl_context`` for an HTTPS one; ``listen_inode`` is the inode
    of the listening socket harness handed over (``handoff=True``).
    """

    host: str
    port: Optional[int]
    url: str
    handoff: bool
    log_path: Optional[str]
    launch_id: int
    log_offset: int
    socket_path: Optional[str]
    ssl_context: Optional["ssl.SSLContext"]
    listen_inode: Optional[int]


class Check:
    """Base class of readiness checks; subclasses implement :meth:`probe`.

    To write your own, subclass it and return an :class:`Outcome` from
    ``probe``: ``ok`` and a short label that is the same each time the
    same thing is wrong (it is counted: "HTTP 404 x12").  Set ``uses_port``
    if the check talks to the server's port.  A plain callable
    ``check(server) -> bool`` works too (see ``as_check``).
    """

    #: True if the check talks to the server's port (then harness also proves
    #: that the listener belongs to the server it launched).
    uses_port = False

    def probe(self, server: Any, timeout: float) -> Outcome:
        """Probe ``server`` once, within ``timeout`` seconds; never raise for "not yet"."""
        raise NotImplementedError

    def __call__(self, server: Any) -> bool:
        return self.probe(server, DEFAULT_PROBE_TIMEOUT).ok


def _socket_error_label(exc: BaseException) -> str:
    if isinstance(exc, DeadlineExceeded) and exc.too_slow:
        return "too slow"  # answering, but not done in time: a trickle
    if isinstance(exc, BodyTooLarge):
        return f"body too large (over {size_text(exc.limit)})"
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed without a response"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP response ({type(exc).__name__})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate rejected"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or type(exc).__name__})"
    if isinstance(exc, FileNotFoundError):
        return "no such socket file"
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, f"errno {exc.errno}")
    return f"{type(exc).__name__}: {exc}"


class TcpCheck(Check):
    """Ready when the server takes a TCP connection on its port (or Unix socket).

    Without handoff, a successful connect is the proof: only a listening
    server completes it.  With ``handoff=True`` harness listens itself, so
    the kernel completes a connect before the server has run a line;
    there the proof is that the probe's connection *left the listen queue*
    (the server called ``accept``), read from the kernel's listener table.
    Where that table cannot be read (not Linux), a handed-off socket counts
    as ready once connected, and the docs say so.
    """

    uses_port = True

    def probe(self, server: Any, timeout: float) -> Outcome:
        deadline = Deadline(max(timeout, 0.001))
        path = getattr(server, "socket_path", None)
        if path:
            family, address = socket.AF_UNIX, path
        else:
            family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
            address = (server.host, server.port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.remaining() or 0.001)
            sock.connect(address)
            inode = getattr(server, "listen_inode", None)
            if getattr(server, "handoff", False) and inode is not None:
                return _accepted(server, inode, deadline)
        except OSError as exc:
            return Outcome(False, _socket_error_label(exc), str(exc))
        finally:
            sock.close()
        return Outcome(True, "connected")

    def __repr__(self) -> str:
        return "TcpCheck()"




def _accepted(server: Any, inode: int, deadline: Deadline) -> Outcome:
    """Wait (within the probe's time) for the handed-off socket's accept queue to empty."""
    family = socket.AF_UNIX if getattr(server, "socket_path", None) else (
        socket.AF_INET6 if ":" in server.host else socket.AF_INET)
    while True:
        queued = sockets.accept_queue(family, inode)
        if queued is None:
            return Outcome(True, "connected (handed-off socket; acceptance not visible here)")
        if queued == sockets.GONE:
            return Outcome(False, "handed-off socket closed",
                           "the listening socket is gone: the server closed it or exited")
        if queued == 0:
            return Outcome(True, "connection accepted")
        if deadline.expired:
            return Outcome(False, "connection queued, not accepted",
                           f"{queued} connection(s) wait in the handed-off socket's queue: "
                           f"the server has not called accept()")
        pause(deadline.cap(poll_interval(deadline.elapsed(), cap=0.01)))


StatusSpec = Union[int, Collection[int], None]


class HttpCheck(Check):
    """Ready when ``GET path`` answers ``status`` and, optionally, the right JSON.

    ``status`` is an int, a collection or ``range`` of statuses
    (``range(200, 400)``), or ``None``: any HTTP answer at all means ready
    (a server whose health page needs a login still proves it is up).
    ``json`` maps required keys to an expected value, a type (``str``), a
    nested dict or a predicate (``lambda v: v > 0``), or is a predicate over
    the whole document: the same spec as ``request(expect_json=...)``.  A 200
    whose JSON does not match is "not ready yet" -- the incident's
    ``KeyError: 'message'`` -- and the error names the missing or wrong key
    if it never matches.

    A probe is one exchange that ends by ``min(timeout, the time it is
    given)`` whatever the server does: a health endpoint that trickles its
    answer is a failed probe labelled ``"too slow"`` (the detail says how
    many bytes came in how long).  At most 1 MiB of body is read.  Probes
    use GET (not HEAD), ``Connection: close`` and the numeric address; the
    server's Unix socket when it has a ``socket_path``; TLS when its ``url``
    starts with ``https://``, verified with its ``ssl_context`` (``None``:
    the system's CAs).
    """

    uses_port = True

    def __init__(self, path: str = "/health", status: StatusSpec = 200,
                 json: Optional[JsonSpec] = None, timeout: float = DEFAULT_PROBE_TIMEOUT) -> None:
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, got {path!r}")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        if any(not "!" <= char <= "~" for char in path):
            raise ValueError(f"path must not contain spaces, control or non-ASCII characters "
                             f"(percent-encode them), got {path!r}")
        self.status: StatusSpec = check_expect_status(status, "status")
        _jsonspec.check_spec(json, "json")
        self.timeout = _validate.seconds(timeout, "timeout")
        self.path = path
        self.json = json

    def __repr__(self) -> str:
        status = self.status
        if isinstance(status, frozenset):
            shown = "{" + ", ".join(map(str, sorted(status))) + "}"
        else:
            shown = repr(status)
        extra = f", json={self.json!r}" if self.json is not None else ""
        return f"HttpCheck({self.path!r}, status={shown}{extra})"

    def probe(self, server: Any, timeout: float) -> Outcome:
        conn = server_connection(server)
        conn.arm(min(timeout, scaled(self.timeout)))
        too_large: Optional[BodyTooLarge] = None
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            response = conn.getresponse()
            try:
                body = read_body(response, PROBE_MAX_BODY)
            except BodyTooLarge as exc:  # only a JSON spec needs the body
                body, too_large = b"", exc
            finally:
                response.close()
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(False, _socket_error_label(exc), str(exc))
        finally:
            conn.close()
        excerpt = body[:200].decode("utf-8", "replace")
        if not status_matches(response.status, self.status):
            return Outcome(False, f"HTTP {response.status}",
                           excerpt or f"expected {describe_status(self.status)}")
        if self.json is not None:
            if too_large is not None:
                return Outcome(False, _socket_error_label(too_large), str(too_large))
            problem = json_mismatch(body, self.json)
            if problem:
                return Outcome(False, problem, excerpt)
        return Outcome(True, f"HTTP {response.status}")


def json_mismatch(body: bytes, spec: JsonSpec) -> str:
    """Why ``body`` does not satisfy ``spec``, as a countable label (``""`` if it does)."""
    try:
        data = _json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "body is not JSON"
    problem = _jsonspec.mismatch(data, spec)
    return problem.label if problem else ""


class LogCheck(Check):
    """Ready when ``pattern`` appears in a complete line of the server's output.

    ``pattern`` is a regex (compiled with ``flags``), or with ``literal=True``
    plain text found as it is.  The log is read incrementally, so a chatty
    server costs no more per probe than what it wrote since the last one.
    Once seen, it stays seen (until the server is launched again).
    """

    def __init__(self, pattern: Union[str, Pattern[str]], flags: int = 0, *,
                 literal: bool = False) -> None:
        self.pattern = _validate.pattern(pattern, flags=flags, literal=literal)
        # log path -> (launch id, offset read so far, unmatched tail, matched)
        self._state: Dict[str, Tuple[object, int, str, bool]] = {}

    def __repr__(self) -> str:
        return f"LogCheck({self.pattern.pattern!r})"

    def probe(self, server: Any, timeout: float) -> Outcome:
        path = server.log_path
        launch = getattr(server, "launch_id", None)
        saved_launch, offset, carry, matched = self._state.get(path, (launch, 0, "", False))
        if saved_launch != launch:
            offset, carry, matched = 0, "", False
        if not matched:
            start = getattr(server, "log_offset", 0) if offset == 0 else offset
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    chunk = f.read()
            except OSError as exc:
                return Outcome(False, f"log unreadable ({type(exc).__name__})", str(exc))
            offset = start + len(chunk)
            # Search complete lines only: a line still being written ("port 80"
            # of "port 8080") must not match early.  The partial line, and the
            # last few KiB of whole lines for patterns that span lines, are
            # carried over to the next read.
            text = carry + chunk.decode("utf-8", "replace")
            cut = text.rfind("\n") + 1
            complete, partial = text[:cut], text[cut:]
            matched = self.pattern.search(complete) is not None
            kept = complete[-4096:]
            if len(complete) > 4096:
                kept = kept[kept.find("\n") + 1:]  # start at a line boundary
            carry = kept + partial
        self._state[path] = (launch, offset, carry, matched)
        if matched:
            return Outcome(True, "pattern seen in log")
        return Outcome(False, f"pattern {self.pattern.pattern!r} not in log yet")


class CallableCheck(Check):
    """Adapts a user callable ``check(server)`` (truthy = ready)."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func

    def __repr__(self) -> str:
        return f"CallableCheck({getattr(self.func, '__name__', self.func)!r})"

    def probe(self, server: Any, timeout: float) -> Outcome:
        try:
            result = self.func(server)
        except Exception as exc:
            return Outcome(False, f"{type(exc).__name__}: {exc}"[:200])
        if result:
            return Outcome(True, "check passed")
        return Outcome(False, f"check returned {result!r}"[:200])


class AllChecks(Check):
    """Ready when every check passes, in order, within one probe (``health=[a, b]``).

    For servers where one question is not enough: a ``TcpCheck`` and then a
    protocol-level ping, or an ``HttpCheck`` and a ``LogCheck`` for a line
    printed after the routes are up.  A probe stops at the first check that
    fails, and that check's outcome is the one counted, so the error says
    which step never passed.  Items are anything ``health`` accepts.
    """

    def __init__(self, *checks: "HealthSpec") -> None:
        if not checks:
            raise ValueError("AllChecks needs at least one check (health=[] checks nothing)")
        self.checks: Tuple[Check, ...] = tuple(as_check(check) for check in checks)
        self.uses_port = any(check.uses_port for check in self.checks)

    def __repr__(self) -> str:
        return f"AllChecks({', '.join(map(repr, self.checks))})"

    def probe(self, server: Any, timeout: float) -> Outcome:
        deadline = Deadline(timeout)  # one probe's budget, shared by its steps
        passed = []
        for check in self.checks:
            outcome = check.probe(server, max(deadline.remaining(), 0.001))
            if not outcome.ok:
                return outcome
            passed.append(outcome.label)
        return Outcome(True, " + ".join(passed))


HealthSpec = Union[None, str, Check, Callable[[Any], Any], Sequence[Any]]


def as_check(health: HealthSpec) -> Check:
    """Turn the ``health`` argument of ``ServerProcess`` into a :class:`Check`."""
    if health is None:
        return TcpCheck()
    if isinstance(health, (list, tuple)):
        return AllChecks(*health)
    if isinstance(health, str):
        if not health.startswith("/"):
            raise ValueError(f"health must be a path starting with '/', a check or None, "
                             f"got {health!r}")
        return HttpCheck(health)
    if isinstance(health, Check):
        return health
    if callable(health):
        return CallableCheck(health)
    raise TypeError(f"health must be a path string, a check object, a callable, a list of "
                    f"those or None, got {type(health).__name__} {health!r}")


class Tally:
    """Counts outcomes by label, in the order first seen."""

    def __init__(self) -> None:
        self.counts: "OrderedDict[str, int]" = OrderedDict()
        self.details: Dict[str, str] = {}
        self.attempts = 0
        self.last_label = ""

    def add(self, outcome: Outcome) -> None:
        """Count one attempt's outcome."""
        self.attempts += 1
        self.last_label = outcome.label
        self.counts[outcome.label] = self.counts.get(outcome.label, 0) + 1
        if outcome.detail:
            self.details[outcome.label] = outcome.detail

    def summary(self) -> str:
        """E.g. ``connection refused ×12, HTTP 404 ×3, JSON missing 'message' ×2``."""
        if not self.counts:
            return "no attempt made"
        return ", ".join(f"{label} \u00d7{n}" for label, n in self.counts.items())

    def as_dict(self) -> Dict[str, int]:
        """Label -> count, as ``ServerStartError.outcomes`` holds them."""
        return dict(self.counts)


class WaitEnd(str, enum.Enum):
    """Why :func:`wait_ready` returned."""
    READY = "ready"
    EXITED = "exited"          # the process exited first
    TIMEOUT = "timeout"        # the deadline came first
    PORT_LOST = "port lost"    # a foreign listener holds the port (``Outcome.foreign``)
    GAVE_UP = "gave up"        # ``watch`` saw the server cannot become ready (a wrong port)


class Ready(NamedTuple):
    """How :func:`wait_ready` ended, and when (seconds on ``deadline``'s clock)."""
    ok: bool
    reason: WaitEnd
    tally: Tally
    first_pass: Optional[float] = None   # the first probe that passed
    probes: int = 0                      # probes made up to that one, it included
    done: Optional[float] = None         # when it returned
    verifying: float = 0.0               # time spent in ``verify``


def wait_ready(server: Any, check: Check, *, successes: int, deadline: Deadline,
               exited: Callable[[float], bool], probe_time: float = DEFAULT_PROBE_TIMEOUT,
               verify: Optional[Callable[[], Optional[Outcome]]] = None,
               stop_on: Callable[[Outcome], bool] = lambda outcome: outcome.foreign,
               watch: Optional[Callable[[], Optional[Outcome]]] = None) -> Ready:
    """Probe until ``successes`` passes in a row, the process exits, or the deadline.

    Each probe gets ``probe_time`` seconds at most, and never more than is
    left before the deadline: a probe that hangs (a trickling peer) cannot
    hold ``start()`` past its ``start_timeout``.

    ``exited(seconds)`` waits up to ``seconds`` for the process to exit and
    says whether it did (event-driven where the platform allows), so a
    crash is noticed between probes at once, not at the deadline.
    ``verify()`` runs before a streak is accepted (proof that the listener
    is the server's own); it returns a failing :class:`Outcome` or ``None``.
    ``stop_on(outcome)`` gives up early (default: a foreign listener).
    ``watch()`` runs after each failed probe and returns an :class:`Outcome`
    when waiting longer is pointless (the server listens on another port).
    """
    tally = Tally()
    streak = 0
    first_pass: Optional[float] = None
    probes = 0
    verifying = 0.0

    def ended(ok: bool, reason: WaitEnd) -> Ready:
        return Ready(ok, reason, tally, first_pass, probes, deadline.elapsed(), verifying)

    while True:
        if exited(0):
            return ended(False, WaitEnd.EXITED)
        if deadline.expired:
            return ended(False, WaitEnd.TIMEOUT)
        outcome = check.probe(server, max(deadline.cap(probe_time), 0.001))
        if first_pass is None:
            probes += 1
            if outcome.ok:
                first_pass = deadline.elapsed()
        if outcome.ok and streak + 1 >= successes and verify is not None:
            started = deadline.elapsed()
            outcome = verify() or outcome
            verifying += deadline.elapsed() - started
        tally.add(outcome)
        if outcome.ok:
            streak += 1
            if streak >= successes:
                if exited(0):
                    return ended(False, WaitEnd.EXITED)
                return ended(True, WaitEnd.READY)
            continue  # the next pass is asked for at once
        streak = 0
        if stop_on(outcome):
            return ended(False, WaitEnd.PORT_LOST)
        verdict = watch() if watch is not None else None
        if verdict is not None:
            tally.add(verdict)
            return ended(False, WaitEnd.GAVE_UP)
        # From a quarter of a millisecond: most servers listen within a few ms
        # of their start, and a refused connect costs about 0.1 ms.
        if exited(deadline.cap(poll_interval(deadline.elapsed(), first=0.00025))):
            return ended(False, WaitEnd.EXITED)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, *, what: Optional[str] = None,
               interval: Optional[float] = None) -> Any:
    """Wait until ``predicate()`` returns something truthy, and return it.

    For conditions in the middle of a test ("the job finished", "the file
    appeared"): ``predicate`` is called at once, then with the same
    proportional backoff as readiness (1 ms growing to 50 ms; ``interval``
    fixes it instead).  An exception from it counts as "not yet" and is
    remembered.  ``timeout`` is multiplied by ``HARNESS_TIMEOUT_FACTOR``; at
    the deadline :class:`~harness.errors.WaitTimeout` says ``what`` was
    awaited, how long, how many looks, and what the last look saw.
    """
    if not callable(predicate):
        raise TypeError(f"predicate must be a callable taking no arguments, got {predicate!r}")
    seconds = _validate.seconds(timeout, "timeout")
    if interval is not None:
        interval = _validate.seconds(interval, "interval")
    if what is not None and not isinstance(what, str):
        raise TypeError(f"what must be a str describing the condition, got {what!r}")
    name: str = what or str(getattr(predicate, "__name__", "the condition"))
    deadline = Deadline(scaled(seconds))
    looks = 0
    last: Any = None
    while True:
        looks += 1
        try:
            value = predicate()
        except Exception as exc:  # "not yet", with its reason kept for the message
            value, last = None, exc
        else:
            if value:
                return value
            last = value
        if deadline.expired:
            saw = (f"the last look raised {type(last).__name__}: {last}"
                   if isinstance(last, BaseException) else f"the last look returned {last!r}")
            raise WaitTimeout(f"{name} did not come true within {deadline.seconds:.2f} s "
                              f"({looks} looks); {saw}", what=name, waited=deadline.elapsed(),
                              attempts=looks, last=last)
        pause(deadline.cap(interval if interval is not None
                           else poll_interval(deadline.elapsed())))


# What a user writes checks with.  (wait_ready, WaitEnd, Tally, json_mismatch,
# poll_interval and as_check stay importable here, for harness's own parts.)
__all__ = ["wait_until", "Check", "HttpCheck", "TcpCheck", "LogCheck", "CallableCheck", "AllChecks",
           "Outcome", "ServerLike"]
