"""Talking to a server under test: one request with retries and validation.

Built on :mod:`http.client` only, so harness stays vendorable.  Two things
made the incident's tests flaky and hard to read: a single attempt per
request, and a bare ``KeyError`` when an answer was not what the test
expected.  :func:`request` retries what is safe to retry (never silently
replaying a POST), keeps every attempt inside one overall deadline, and turns
a wrong answer into :class:`~harness.errors.ResponseInvalid` with the
status, a body excerpt and the exact key or type that did not match.

Load generation (:func:`load`) lives in ``_load.py`` and is re-exported here.
"""
from __future__ import annotations

import dataclasses
import email.utils
import http.client
import json as _json
import random
import re
import ssl
import time
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Protocol, Tuple, Union

from . import _jsonspec, _validate
from ._config import scaled
from ._http_wire import (
    DEFAULT_MAX_BODY,
    IDEMPOTENT_METHODS,
    BodyTooLarge,
    DeadlineExceeded,
    ExpectStatus,
    Target,
    Verify,
    check_expect_status,
    check_max_body,
    check_method,
    check_unix_socket,
    describe_status,
    encode_body,
    error_kind,
    is_collection,
    is_final,
    read_body,
    size_text,
    ssl_context,
    status_matches,
    status_set,
)
from ._load import LoadResult, load
from ._wait import Deadline, pause
from .errors import RequestFailed, ResponseInvalid

__all__ = ["request", "RetryPolicy", "Response", "IDEMPOTENT_METHODS", "error_kind",
           "load", "LoadResult", "DeadlineExceeded", "BodyTooLarge", "DEFAULT_MAX_BODY",
           "Verify"]

_EXCERPT_CHARS = 300

ExpectJson = Union[Mapping[str, Any], Callable[[Any], Any], None]


# --------------------------------------------------------------------------
# Retry policy


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When and how often :func:`request` tries again.  Immutable; compare with ``==``.

    * ``attempts``: the most attempts in all (1 means no retry).
    * ``backoff``: the wait before the 2nd attempt; it doubles each time,
      up to ``max_backoff``.  With ``jitter`` each wait is drawn from
      [half, all] of that, so parallel clients do not retry in lockstep.
    * ``retry_on_status``: answers that are retried like errors (a server
      still starting, a proxy in front of it).  ``Retry-After`` is honoured,
      up to ``max_backoff``.
    * ``methods``: the methods retried after the request may have reached
      the server (a reset, a timeout, a retried status).  A request that
      never got connected (refused, connect timeout) is retried whatever its
      method: nothing was sent, so nothing can be replayed.

    ``policy.replace(attempts=3)`` returns a changed copy.
    """

    attempts: int = 5
    backoff: float = 0.05
    max_backoff: float = 1.0
    jitter: bool = True
    retry_on_status: FrozenSet[int] = frozenset({502, 503, 504})
    methods: FrozenSet[str] = IDEMPOTENT_METHODS

    def __post_init__(self) -> None:
        _validate.whole(self.attempts, "attempts", why="(1 means no retry)")
        backoff = _validate.seconds(self.backoff, "backoff", allow_zero=True)
        max_backoff = _validate.seconds(self.max_backoff, "max_backoff", allow_zero=True)
        if max_backoff < backoff:
            raise ValueError(
                f"max_backoff ({max_backoff}) must be >= backoff ({backoff})")
        _validate.flag(self.jitter, "jitter")
        statuses = status_set(self.retry_on_status, "retry_on_status")
        if isinstance(self.methods, str) or not is_collection(self.methods):
            raise TypeError(
                f"methods must be a collection of method names such as {{'GET', 'PUT'}}, "
                f"got {self.methods!r}")
        methods = frozenset(check_method(m, "methods") for m in self.methods)
        for name, value in (("backoff", backoff), ("max_backoff", max_backoff),
                            ("retry_on_status", statuses), ("methods", methods)):
            object.__setattr__(self, name, value)

    def allows(self, method: str) -> bool:
        """True if ``method`` may be retried once the request may have been sent."""
        return method.upper() in self.methods

    def delay(self, retry: int, retry_after: Optional[float] = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 = before the 2nd attempt).

        A server's ``Retry-After`` replaces the computed backoff (no jitter:
        the server said when), capped at ``max_backoff``.
        """
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_backoff)
        wait = min(self.max_backoff, self.backoff * 2.0 ** min(retry - 1, 60))
        if self.jitter:
            wait *= random.uniform(0.5, 1.0)
        return wait

    def replace(self, **changes: Any) -> "RetryPolicy":
        """A copy with some fields changed (validated like the original)."""
        return dataclasses.replace(self, **changes)


def _check_retry(value: object) -> RetryPolicy:
    if value is None:
        return RetryPolicy()
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return RetryPolicy(attempts=value)
    raise TypeError(
        f"retry must be a RetryPolicy, an int number of attempts or None, got {value!r}")


# --------------------------------------------------------------------------
# Response and validation


class Response:
    """An HTTP answer, read completely.

    ``headers`` is an :class:`http.client.HTTPMessage` (case-insensitive
    ``headers["Content-Type"]``, ``headers.get_all("Set-Cookie")``).
    ``elapsed`` is the seconds the whole call took, retries included;
    ``attempts`` how many attempts it took.
    """

    def __init__(self, *, method: str, url: str, status: int, reason: str,
                 headers: http.client.HTTPMessage, body: bytes, elapsed: float = 0.0,
                 attempts: int = 1) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.elapsed = elapsed
        self.attempts = attempts

    @property
    def ok(self) -> bool:
        """True for 1xx-3xx answers."""
        return self.status < 400

    @property
    def text(self) -> str:
        """The body decoded with the charset the server declared (UTF-8 otherwise)."""
        charset = self.headers.get_content_charset() or "utf-8"
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:  # an unknown charset name
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; :class:`ResponseInvalid` if it is not JSON."""
        try:
            return _json.loads(self.text)
        except ValueError as exc:
            raise ResponseInvalid(
                f"{self._describe()}, but its body is not valid JSON ({exc}); "
                f"{self.excerpt()}", response=self) from None

    def excerpt(self, limit: int = _EXCERPT_CHARS) -> str:
        """``body: '...'`` shortened to about ``limit`` characters, for messages."""
        text = self.text
        if not text:
            return "body: empty"
        if len(text) > limit:
            return f"body ({len(self.body)} bytes): {text[:limit]!r}..."
        return f"body: {text!r}"

    def _describe(self) -> str:
        return f"{self.method} {self.url} answered {self.status} {self.reason}".rstrip()

    def __repr__(self) -> str:
        tries = "attempt" if self.attempts == 1 else "attempts"
        return (f"<Response {self.status} {self.reason} {self.method} {self.url}: "
                f"{len(self.body)} bytes, {self.attempts} {tries}, {self.elapsed:.3f}s>")


def check_response(response: Response, expect_status: ExpectStatus, expect_json: ExpectJson,
                   note: str) -> None:
    """``ResponseInvalid`` unless ``response`` has ``expect_status`` and ``expect_json``
    (shared with ``assertResponse``; ``note`` is added to a wrong-status message)."""
    if expect_status is not None and not status_matches(response.status, expect_status):
        wanted = describe_status(expect_status)
        raise ResponseInvalid(
            f"{response._describe()}, expected status {wanted}{note}; {response.excerpt()}",
            response=response)
    if expect_json is not None:
        problem = _jsonspec.mismatch(response.json(), expect_json)
        if problem:
            raise ResponseInvalid(f"{response._describe()}, but {problem.detail}; "
                                  f"{response.excerpt()}",
                                  response=response)


# --------------------------------------------------------------------------
# Sending


class _AttemptError(Exception):
    def __init__(self, error: BaseException, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent  # False: failed before a byte of the request left
        self.final = is_final(error)  # another attempt cannot change it


def _attempt(target: Target, method: str, payload: Optional[bytes], headers: Dict[str, str],
             seconds: float, tls: Optional[ssl.SSLContext], unix_socket: Optional[str],
             max_body: int) -> Tuple[int, str, http.client.HTTPMessage, bytes]:
    """One exchange, all of it (connect, send, answer, body) within ``seconds``."""
    conn = target.connection(tls, unix_socket)
    conn.arm(seconds)
    try:
        try:
            conn.connect()
        except OSError as exc:
            raise _AttemptError(exc, sent=False) from None
        try:
            conn.request(method, target.path, body=payload, headers=headers)
            answer = conn.getresponse()
            try:
                body = read_body(answer, max_body)
            finally:
                answer.close()
        except (OSError, http.client.HTTPException) as exc:
            raise _AttemptError(exc, sent=True) from None
        return answer.status, answer.reason, answer.headers, body
    finally:
        conn.close()


class _Headers(Protocol):
    def get(self, name: str) -> Optional[str]: ...


_DIGITS = re.compile(r"[0-9]+")  # ASCII only: "\xb2".isdigit() is True, float() refuses it


def _retry_after(headers: _Headers) -> Optional[float]:
    """The seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date).

    Whatever the server sent: ``None`` for what is not one of the two forms
    (``"²"``, ``"soon"``, a date the calendar cannot hold), a huge number of
    seconds for a far-future date -- never an exception.  The retry policy
    caps it at ``max_backoff``.
    """
    value = headers.get("Retry-After")
    if not isinstance(value, str):
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):
        return float(value)  # "9" * 400 is inf: capped by the policy
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return max(0.0, seconds)


def request(method: str, url: str, *, body: Union[bytes, str, None] = None, json: Any = None,
            headers: Optional[Mapping[str, str]] = None,
            params: Optional[Mapping[str, Any]] = None, timeout: float = 5.0,
            deadline: Optional[float] = None, retry: Union[RetryPolicy, int, None] = None,
            expect_status: ExpectStatus = None, expect_json: ExpectJson = None,
            diagnostics: Optional[Callable[[], str]] = None, verify: Verify = True,
            unix_socket: Optional[str] = None, max_body: int = DEFAULT_MAX_BODY) -> Response:
    """Send one HTTP request, retrying what is safe to retry, and check the answer.

    * ``timeout``: seconds for each attempt, all of it: connecting, sending,
      the answer and its whole body.  A server that trickles its answer is
      cut off at the timeout ("too slow"), not kept waiting for.
    * ``deadline``: seconds for the whole call, retries and waits included
      (default ``2 * timeout``: room for one timed-out attempt and a retry).
      Each attempt gets ``min(timeout, time left)``.  Both are multiplied by
      ``HARNESS_TIMEOUT_FACTOR``.  The call ends within a few milliseconds
      of its deadline whatever the server does.
    * ``retry``: a :class:`RetryPolicy`, an int number of attempts, or None
      for ``RetryPolicy()``.  ``retry=1`` sends exactly once.
    * ``expect_status``: an int, a collection or a ``range`` of statuses.
    * ``expect_json``: a dict of key -> expected value, type (``str``,
      ``(int, float)``), nested dict or predicate; or a predicate over the
      whole document.
    * ``diagnostics``: a callable whose text is appended to error messages
      (``ServerProcess`` passes the tail of the server's log).
    * ``verify`` (``https://`` URLs): ``True`` verifies the server's
      certificate with the system's CAs, ``False`` not at all (self-signed
      test certificates), a str path names a CA bundle file, and an
      :class:`ssl.SSLContext` is used as is.
    * ``unix_socket``: the path of a Unix socket to send the request to; the
      URL still gives the path, the query and the ``Host`` header
      (``request("GET", "http://localhost/health", unix_socket=path)``).
    * ``max_body``: the largest body read (default 64 MiB); a larger one is a
      :class:`RequestFailed` naming the limit (at once when the server
      declares its size), never read into memory.

    Raises :class:`RequestFailed` (every attempt's error listed, in
    ``errors``) when no answer came, and :class:`ResponseInvalid` when the
    answer does not match.  A retried status that is still the answer when
    the retries run out is returned (or fails ``expect_status``).
    """
    spec = _RequestSpec.checked(
        method, url, params=params, body=body, json=json, headers=headers, timeout=timeout,
        deadline=deadline, retry=retry, expect_status=expect_status, expect_json=expect_json,
        diagnostics=diagnostics, verify=verify, unix_socket=unix_socket, max_body=max_body)
    budget = Deadline(spec.total if spec.total is not None else 2 * spec.per_attempt)
    history = _History()
    while True:
        response, wait = _one_attempt(spec, budget, history)
        if response is not None:
            return response
        if wait > 0:
            pause(wait)  # a computed backoff, already checked to end before the deadline


@dataclasses.dataclass(frozen=True)
class _RequestSpec:
    """A :func:`request` call's arguments, checked before anything is sent."""

    method: str
    target: Target
    payload: Optional[bytes]
    headers: Dict[str, str]
    per_attempt: float            # scaled seconds
    total: Optional[float]        # scaled seconds, or None: twice per_attempt
    policy: "RetryPolicy"
    expect_status: ExpectStatus
    expect_json: ExpectJson
    diagnostics: Optional[Callable[[], str]]
    verify: Verify
    tls: Optional[ssl.SSLContext]
    unix_socket: Optional[str]
    max_body: int

    @classmethod
    def checked(cls, method: str, url: str, *, params: Optional[Mapping[str, Any]],
                body: Union[bytes, str, None], json: Any, headers: Optional[Mapping[str, str]],
                timeout: float, deadline: Optional[float], retry: Union["RetryPolicy", int, None],
                expect_status: ExpectStatus, expect_json: ExpectJson,
                diagnostics: Optional[Callable[[], str]], verify: Verify,
                unix_socket: Optional[str], max_body: int) -> "_RequestSpec":
        if diagnostics is not None and not callable(diagnostics):
            raise TypeError(f"diagnostics must be a callable returning str, got {diagnostics!r}")
        payload, header_map = encode_body(body, json, headers)
        total = _validate.optional_seconds(deadline, "deadline")
        per_attempt = _validate.seconds(timeout, "timeout")
        return cls(method=check_method(method), target=Target(url, params), payload=payload,
                   headers=header_map, per_attempt=scaled(per_attempt),
                   total=scaled(total) if total is not None else None,
                   policy=_check_retry(retry), expect_status=check_expect_status(expect_status),
                   expect_json=_jsonspec.check_spec(expect_json, "expect_json"),
                   diagnostics=diagnostics, verify=verify, tls=ssl_context(verify),
                   unix_socket=check_unix_socket(unix_socket),
                   max_body=check_max_body(max_body))


class _History:
    """What the attempts of one request met, for its error."""

    def __init__(self) -> None:
        self.attempts = 0
        self.errors: List[BaseException] = []
        self.lines: List[str] = []

    def add(self, started: float, error: BaseException, what: str) -> None:
        self.errors.append(error)
        self.lines.append(f"attempt {self.attempts} at {started:.3f}s: {what}")


def _one_attempt(spec: _RequestSpec, budget: Deadline,
                 history: _History) -> Tuple[Optional["Response"], float]:
    """One attempt: the validated answer, or ``None`` and the wait before the next one
    (:class:`RequestFailed` / :class:`ResponseInvalid` when it is over)."""
    history.attempts += 1
    attempt, started = history.attempts, budget.elapsed()
    try:
        status, reason, resp_headers, data = _attempt(
            spec.target, spec.method, spec.payload, spec.headers, budget.cap(spec.per_attempt),
            spec.tls, spec.unix_socket, spec.max_body)
    except _AttemptError as failure:
        history.add(started, failure.error, _describe(failure.error))
        wait = spec.policy.delay(attempt)
        stop = _final(failure.error, spec.max_body, spec.verify) if failure.final else \
            _why_stop(spec.policy, spec.method, attempt, budget, sent=failure.sent, wait=wait)
        if stop:
            via = f" (over the Unix socket {spec.unix_socket})" if spec.unix_socket else ""
            raise _with_diagnostics(RequestFailed(
                f"{spec.method} {spec.target.url}{via} failed after {attempt} "
                f"attempt{'s' if attempt > 1 else ''} in {budget.elapsed():.3f}s; {stop}:\n  "
                + "\n  ".join(history.lines), errors=history.errors), spec.diagnostics) from None
        return None, wait
    response = Response(method=spec.method, url=spec.target.url, status=status, reason=reason,
                        headers=resp_headers, body=data, attempts=attempt)
    if status in spec.policy.retry_on_status:
        wait = spec.policy.delay(attempt, _retry_after(resp_headers))
        if _why_stop(spec.policy, spec.method, attempt, budget, sent=True, wait=wait) is None:
            history.add(started, ResponseInvalid(f"{status} {reason} (retried)",
                                                 response=response), f"status {status} {reason}")
            return None, wait
    response.elapsed = budget.elapsed()  # the answer: validate it
    note = f" after {attempt} attempts" if attempt > 1 else ""
    try:
        check_response(response, spec.expect_status, spec.expect_json, note)
    except ResponseInvalid as exc:
        raise _with_diagnostics(exc, spec.diagnostics) from None
    return response, 0.0


def _describe(error: BaseException) -> str:
    """``refused (ConnectionRefusedError: ...)``; a message that starts with its kind as is."""
    kind, text = error_kind(error), str(error)
    if text.startswith(kind):
        return text
    return f"{kind} ({type(error).__name__}: {text})"


def _final(error: BaseException, max_body: int, verify: Verify) -> str:
    """Why a failure that no retry can change is not retried."""
    if isinstance(error, BodyTooLarge):
        return (f"its body is larger than max_body={max_body} ({size_text(max_body)}), so it "
                f"was not read; raise max_body= to accept it (not retried)")
    return (f"the server's TLS certificate was not accepted with verify={verify!r}: pass "
            f"verify='ca.pem' (the CA that signed it) or verify=False for a self-signed test "
            f"certificate (not retried)")


def _why_stop(policy: RetryPolicy, method: str, attempt: int, budget: Deadline, *,
              sent: bool, wait: float = 0.0) -> Optional[str]:
    """Why no further attempt is made, or None to retry."""
    if attempt >= policy.attempts:
        return f"no attempts left (RetryPolicy(attempts={policy.attempts}))"
    if sent and not policy.allows(method):
        return (f"{method} is not retried once it may have reached the server, so it is "
                f"never replayed; allow it with RetryPolicy(methods={{..., {method!r}}})")
    if budget.remaining() <= wait:
        return (f"the deadline of {budget.seconds:.3f}s was reached "
                "(raise deadline=, or HARNESS_TIMEOUT_FACTOR on a slow machine)")
    return None


def _with_diagnostics(exc: Exception, diagnostics: Optional[Callable[[], str]]) -> Exception:
    if diagnostics is None:
        return exc
    try:
        extra = diagnostics()
    except Exception as problem:  # diagnostics must never hide the real error
        extra = f"(diagnostics failed: {type(problem).__name__}: {problem})"
    if extra:
        exc.args = (f"{exc.args[0]}\n{extra}",) + exc.args[1:]
    return exc

