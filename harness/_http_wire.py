"""The HTTP plumbing shared by :func:`harness.http.request` and :func:`harness.http.load`:
argument checks, URL parsing, body encoding and naming what went wrong."""
from __future__ import annotations

import errno
import http.client
import json as _json
import socket
from typing import Any, Collection, Dict, FrozenSet, Mapping, Optional, Tuple, Union
from urllib.parse import urlencode, urlsplit

from .errors import ResponseInvalid

#: Methods that may be sent twice without changing the outcome (RFC 9110, 9.2.2).
IDEMPOTENT_METHODS: FrozenSet[str] = frozenset(
    {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

ExpectStatus = Union[int, Collection[int], None]


def is_collection(value: object) -> bool:
    return hasattr(value, "__iter__") and hasattr(value, "__contains__")


def status_set(value: object, name: str) -> FrozenSet[int]:
    if isinstance(value, (str, bytes)) or not is_collection(value):
        raise TypeError(f"{name} must be a collection of HTTP status codes, got {value!r}")
    codes = frozenset(value)  # type: ignore[arg-type]
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"{name} must hold int status codes, got {code!r}")
        if not 100 <= code <= 599:
            raise ValueError(f"{name} holds {code}, which is not an HTTP status (100..599)")
    return codes


def check_method(value: object, name: str = "method") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str such as 'GET', got {value!r}")
    if not value or not set(value) <= _TOKEN_CHARS:
        raise ValueError(f"{name} must be an HTTP method name such as 'GET', got {value!r}")
    return value.upper()


def status_matches(status: int, expected: ExpectStatus) -> bool:
    if isinstance(expected, int):
        return status == expected
    return status in expected  # type: ignore[operator]


def check_expect_status(value: object) -> ExpectStatus:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        status_set((value,), "expect_status")
        return value
    if isinstance(value, range):
        return value
    return status_set(value, "expect_status")


def error_kind(exc: BaseException) -> str:
    """A short, stable name for what went wrong, for counting and messages."""
    if isinstance(exc, http.client.RemoteDisconnected):
        return "disconnected"  # closed without an answer
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ResponseInvalid) and exc.response is not None:
        return f"status {exc.response.status}"
    if isinstance(exc, http.client.HTTPException):
        return "protocol error"
    if isinstance(exc, OSError) and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    return type(exc).__name__


class Target:
    """A parsed URL: where to connect and what to ask for."""

    def __init__(self, url: object, params: Optional[Mapping[str, Any]] = None) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str such as 'http://127.0.0.1:8000/', got {url!r}")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"url {url!r} is not valid: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"url has no host: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname  # without the brackets of an IPv6 literal
        self.port = port or (443 if self.https else 80)
        path = parts.path or "/"
        query = parts.query
        if params:
            if not isinstance(params, Mapping):
                raise TypeError(f"params must be a dict of query parameters, got {params!r}")
            extra = urlencode(params, doseq=True)
            query = f"{query}&{extra}" if query else extra
        self.path = f"{path}?{query}" if query else path
        self.url = url if not params else f"{url.split('?', 1)[0].split('#', 1)[0]}?{query}"

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)


def encode_body(body: object, json: object,
                 headers: Optional[Mapping[str, str]]) -> Tuple[Optional[bytes], Dict[str, str]]:
    if headers is not None and not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a dict of str -> str, got {headers!r}")
    out = {str(k): str(v) for k, v in (headers or {}).items()}
    if body is not None and json is not None:
        raise ValueError("pass body or json, not both")
    if json is not None:
        payload: Optional[bytes] = _json.dumps(json).encode()
        if not any(k.lower() == "content-type" for k in out):
            out["Content-Type"] = "application/json"
    elif isinstance(body, str):
        payload = body.encode()
    elif body is None or isinstance(body, bytes):
        payload = body
    elif isinstance(body, (bytearray, memoryview)):
        payload = bytes(body)
    else:
        raise TypeError(f"body must be bytes or str (or use json=...), got {type(body).__name__}")
    return payload, out
