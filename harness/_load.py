"""Load for high-frequency tests: N requests at concurrency C, failures counted, not raised.

Each worker thread keeps one keep-alive connection and reconnects when the
server drops it (the failed request is counted by kind in ``errors``) or asks
to close it (not an error).  The run is bounded in count (``requests``) and
in time (``deadline``): a sick server gives a :class:`LoadResult` that says
what went wrong how often, never an exception per request.

An HTTP/1.1 server may close a kept-alive connection whenever it likes,
without saying so (RFC 9112, 9.3.1); a request sent on it then never reaches
the server.  So, as browsers, urllib3 and Go's client do: before reusing a
connection a worker checks (one poll that does not wait) whether the server
closed it, and opens a new one if so (``stale``); and a request of an
idempotent method that meets a close or reset on a reused connection before
any byte of its answer is sent once more on a new connection (``resent``),
as one request with one latency.  Neither is a failure; both are counted.  A
failure on a new connection, of a resent request, or of a non-idempotent
method (the server may have acted on it) counts as it did.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import ssl
import threading
import time
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional

from . import _validate
from ._config import scaled
from ._http_wire import (
    DEFAULT_MAX_BODY,
    IDEMPOTENT_METHODS,
    Connection,
    ExpectStatus,
    Limit,
    Target,
    Verify,
    check_expect_status,
    check_method,
    check_unix_socket,
    encode_body,
    error_kind,
    read_body,
    ssl_context,
    status_matches,
)
from ._wait import Deadline

__all__ = ["load", "LoadResult"]

DEADLINE_KIND = "not sent (deadline)"
_DEFAULT_DEADLINE = 60.0


@dataclasses.dataclass
class LoadResult:
    """What a :func:`load` run saw.

    ``ok + failed == requests`` always.  ``errors`` counts failures by kind
    (``"reset"``, ``"disconnected"``, ``"timeout"``, ``"status 503"``,
    ``"not sent (deadline)"``, ...).  ``latencies`` are the seconds each
    successful request took, sorted; ``throughput`` is successful requests
    per second of the whole run; ``connections`` how many connections were
    opened (``concurrency`` when none was dropped).

    ``stale`` counts kept-alive connections the server had closed (or sent
    unasked bytes on) when a worker was about to reuse them: replaced by a new
    one, no request lost.  ``resent`` counts requests of an idempotent method
    sent a second time, on a new connection, because the kept-alive one they
    went out on was closed or reset before any byte of the answer came: the
    server closing it as the request arrived looks just like that (a real
    drop of such a request does too, and is a failure only if the second
    attempt fails as well).  Each request counts once in ``ok`` or ``failed``.
    """

    url: str
    method: str
    requests: int
    concurrency: int
    ok: int
    failed: int
    errors: Dict[str, int]
    latencies: List[float]
    duration: float
    connections: int
    stale: int = 0
    resent: int = 0

    @property
    def throughput(self) -> float:
        """Successful requests per second of the whole run."""
        return self.ok / self.duration if self.duration > 0 else 0.0

    def percentile(self, q: float) -> Optional[float]:
        """The ``q``-th percentile latency in seconds (nearest rank), None without data."""
        if not 0 < q <= 100:
            raise ValueError(f"q must be in (0, 100], got {q!r}")
        if not self.latencies:
            return None
        rank = max(1, math.ceil(q / 100 * len(self.latencies)))
        return self.latencies[rank - 1]

    @property
    def p50(self) -> Optional[float]:
        """``percentile(50)``: seconds, or None without a successful request."""
        return self.percentile(50)

    @property
    def p95(self) -> Optional[float]:
        """``percentile(95)``: seconds, or None without a successful request."""
        return self.percentile(95)

    @property
    def p99(self) -> Optional[float]:
        """``percentile(99)``: seconds, or None without a successful request."""
        return self.percentile(99)

    def __str__(self) -> str:
        lines = [f"load {self.method} {self.url}: {self.requests} requests at concurrency "
                 f"{self.concurrency} in {self.duration:.3f}s",
                 f"  ok {self.ok}, failed {self.failed}"]
        if self.errors:
            kinds = ", ".join(f"{kind} {count}" for kind, count in
                              sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0])))
            lines[-1] += f" ({kinds})"
        lines.append(f"  throughput {self.throughput:.1f} ok/s over {self.connections} "
                     f"connection{'s' if self.connections != 1 else ''}")
        if self.stale or self.resent:
            lines.append(f"  kept-alive connections closed by the server: {self.stale} found "
                         f"closed before reuse, {self.resent} resent (closed under the request)")
        if self.latencies:
            ms = [f"{name} {1000 * value:.2f}" for name, value in (
                ("p50", self.p50), ("p95", self.p95), ("p99", self.p99),
                ("max", self.latencies[-1])) if value is not None]
            lines.append("  latency ms: " + "  ".join(ms))
        return "\n".join(lines)


class _LoadRun:
    """State shared by the workers: the requests left to hand out, under a lock."""

    def __init__(self, requests: int, deadline: Deadline) -> None:
        self._lock = threading.Lock()
        self._left = requests
        self.deadline = deadline

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0 or self.deadline.expired:
                return False
            self._left -= 1
            return True


@dataclasses.dataclass
class _Tally:
    ok: int = 0
    connections: int = 0
    stale: int = 0
    resent: int = 0
    latencies: List[float] = dataclasses.field(default_factory=list)
    errors: "Counter[str]" = dataclasses.field(default_factory=Counter)


#: How a server's close of a kept-alive connection meets a request sent on it:
#: the end of the stream at the status line (RemoteDisconnected, itself a
#: ConnectionResetError), a reset, a broken pipe, a TLS close.
_CLOSED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
           ssl.SSLZeroReturnError, ssl.SSLEOFError)


class _Worker:
    """One thread's requests over one keep-alive connection, replaced when it ends."""

    def __init__(self, run: _LoadRun, target: Target, method: str, payload: Optional[bytes],
                 headers: Dict[str, str], timeout: float, expect_status: ExpectStatus,
                 tls: Optional[ssl.SSLContext], unix_socket: Optional[str],
                 tally: _Tally) -> None:
        self.run = run
        self.target = target
        self.method = method
        self.payload = payload
        self.headers = headers
        self.timeout = timeout
        self.expect_status = expect_status
        self.tls = tls
        self.unix_socket = unix_socket
        self.tally = tally
        self.resendable = method in IDEMPOTENT_METHODS
        self.conn: Optional[Connection] = None

    def __call__(self) -> None:
        try:
            while self.run.take():
                if self.conn is not None and self.conn.stale():  # the server closed it
                    self.close()
                    self.tally.stale += 1
                # This request, connecting and a resend included, gets `timeout` or
                # what is left of the run.
                limit = Limit(self.run.deadline.cap(self.timeout))
                started = time.perf_counter()
                status = self.send(limit)
                if status is None:
                    continue
                if _is_ok(status, self.expect_status):
                    self.tally.ok += 1
                    self.tally.latencies.append(time.perf_counter() - started)
                else:
                    self.tally.errors[f"status {status}"] += 1
        finally:
            self.close()

    def send(self, limit: Limit) -> Optional[int]:
        """The answer's status, or None when the request failed (counted by kind)."""
        reused = self.conn is not None
        conn = self.connection()
        try:
            return self.exchange(conn, limit)
        except Exception as exc:  # counted, never raised: that is load()'s contract
            if not (reused and self.resendable and isinstance(exc, _CLOSED)
                    and conn.received == 0 and limit.left() > 0):
                self.tally.errors[error_kind(exc)] += 1
                return None
        # Most likely the server closed the connection before it read the request.
        self.tally.resent += 1
        try:
            return self.exchange(self.connection(), limit)
        except Exception as exc:
            self.tally.errors[error_kind(exc)] += 1
            return None

    def connection(self) -> Connection:
        if self.conn is None:
            self.conn = self.target.connection(self.tls, self.unix_socket)
            self.tally.connections += 1
        return self.conn

    def exchange(self, conn: Connection, limit: Limit) -> int:
        """Send the request on ``conn`` and read the answer; a failure closes ``conn``."""
        conn.arm(limit)
        try:
            conn.request(self.method, self.target.path, body=self.payload,
                         headers=self.headers)
            answer = conn.getresponse()
            try:
                read_body(answer, DEFAULT_MAX_BODY, keep=False)
            finally:
                answer.close()
        except Exception:
            self.close()
            raise
        if answer.will_close:  # the server said so: reconnect, not an error
            self.close()
        return answer.status

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _is_ok(status: int, expect_status: ExpectStatus) -> bool:
    if expect_status is None:
        return status < 400
    return status_matches(status, expect_status)


def _check_loopback(target: Target) -> None:
    host = target.host
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"url must point at a loopback address (127.0.0.1, ::1 or localhost), or "
            f"unix_socket= be given: load() generates traffic only against servers on this "
            f"machine, got host {host!r}")


def load(url: str, *, requests: int = 500, concurrency: int = 16, method: str = "GET",
         timeout: float = 5.0, deadline: Optional[float] = None,
         body: Optional[bytes] = None, json: Any = None,
         headers: Optional[Mapping[str, str]] = None,
         expect_status: ExpectStatus = None, verify: Verify = True,
         unix_socket: Optional[str] = None) -> LoadResult:
    """Send ``requests`` requests from ``concurrency`` threads, one keep-alive connection each.

    A request is ok when its status is in ``expect_status`` (default: any
    status below 400).  ``timeout`` bounds each request, all of it
    (connecting, sending, the answer and its body: a trickling answer is
    cut off and counted as ``"too slow"``); ``deadline`` (default 60 s) the
    whole run, which ends within a few milliseconds of it whatever the
    server does: requests not sent by then are counted as failed, kind
    ``"not sent (deadline)"``.  Both are multiplied by
    ``HARNESS_TIMEOUT_FACTOR``.  Bodies are read and dropped; one above
    64 MiB is counted as ``"too large"``.  ``verify`` is as for
    :func:`~harness.http.request` (``https://`` URLs); ``unix_socket`` sends
    every request to that Unix socket.  Only loopback URLs are accepted, or
    any host with ``unix_socket``.
    """
    target = Target(url)
    unix_socket = check_unix_socket(unix_socket)
    if unix_socket is None:
        _check_loopback(target)
    requests = _validate.whole(requests, "requests")
    concurrency = _validate.whole(concurrency, "concurrency")
    method = check_method(method)
    per_request = scaled(_validate.seconds(timeout, "timeout"))
    total = scaled(_validate.optional_seconds(deadline, "deadline") or _DEFAULT_DEADLINE)
    payload, header_map = encode_body(body, json, headers)
    expect_status = check_expect_status(expect_status)
    tls = ssl_context(verify)

    workers = min(concurrency, requests)
    run = _LoadRun(requests, Deadline(total))
    tallies = [_Tally() for _ in range(workers)]
    threads = [threading.Thread(target=_Worker(run, target, method, payload, header_map,
                                               per_request, expect_status, tls, unix_socket,
                                               tallies[i]),
                                name=f"harness-load-{i}", daemon=True)
               for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _merge(target.url, method, requests, workers, run.deadline.elapsed(), tallies)


def _merge(url: str, method: str, requests: int, concurrency: int, duration: float,
           tallies: List[_Tally]) -> LoadResult:
    errors: "Counter[str]" = Counter()
    latencies: List[float] = []
    ok = connections = stale = resent = 0
    for tally in tallies:
        ok += tally.ok
        connections += tally.connections
        stale += tally.stale
        resent += tally.resent
        latencies.extend(tally.latencies)
        errors.update(tally.errors)
    done = ok + sum(errors.values())
    if done < requests:
        errors[DEADLINE_KIND] += requests - done
    latencies.sort()
    return LoadResult(url=url, method=method, requests=requests, concurrency=concurrency,
                      ok=ok, failed=requests - ok, errors=dict(errors), latencies=latencies,
                      duration=duration, connections=connections, stale=stale, resent=resent)
