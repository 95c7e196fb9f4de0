"""The exception hierarchy.

Every error harness raises on purpose derives from :class:`HarnessError`, so a
test suite can catch "the environment failed" separately from its own
assertion failures.  Messages are written for the person reading a CI log:
they say what happened and carry what is needed to fix it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

__all__ = ["HarnessError", "PortUnavailable", "ServerStartError", "ServerNotReady",
           "RequestFailed", "ResponseInvalid", "MemoryUnavailable", "WaitTimeout"]


class HarnessError(Exception):
    """Base class of every error harness raises deliberately."""

    #: Set on a failed request to a ``ServerProcess``: the launch (``server_id``)
    #: whose log tail the message shows, and where its log ended then (a
    #: ``log_mark()``), so that a failure report shows only what it wrote after.
    shown_server_id: Optional[str] = None
    shown_log_mark: Optional[int] = None


class PortUnavailable(HarnessError):
    """A port could not be had: a fixed port is taken, or a range is exhausted.

    ``port`` is the port asked for (``None`` for an exhausted range) and
    ``holders`` describes the processes found holding it, when known.
    """

    def __init__(self, message: str, *, port: Optional[int] = None,
                 holders: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.port = port
        self.holders = list(holders)


class ServerStartError(HarnessError):
    """The server process exited, or could not be launched, before it was ready.

    Carries the facts a person needs: ``returncode`` (negative for a signal),
    ``log_path`` (kept on failure) and ``log_tail``.
    """

    def __init__(self, message: str, *, returncode: Optional[int] = None,
                 log_path: Optional[str] = None, log_tail: str = "",
                 outcomes: Optional[Dict[str, int]] = None) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.log_path = log_path
        self.log_tail = log_tail
        self.outcomes = dict(outcomes or {})


class ServerNotReady(ServerStartError):
    """The server kept running but never passed its readiness checks in time.

    The process has been stopped by the time this is raised.
    """


class MemoryUnavailable(HarnessError):
    """Memory cannot be read here: no psutil and no /proc, or not allowed."""


class WaitTimeout(HarnessError):
    """A condition waited for (``wait_until``, ``server.wait_for_log``) did not come true in time.

    ``what`` names the condition, ``waited`` the seconds waited and
    ``attempts`` how often it was looked at; ``last`` is what the last look
    saw (a value, or the exception it raised), for the message.
    """

    def __init__(self, message: str, *, what: str = "", waited: float = 0.0,
                 attempts: int = 0, last: Any = None) -> None:
        super().__init__(message)
        self.what = what
        self.waited = waited
        self.attempts = attempts
        self.last = last


class RequestFailed(HarnessError):
    """Every attempt of an HTTP request failed; ``errors`` lists them in order."""

    def __init__(self, message: str, *, errors: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.errors: List[Any] = list(errors)


class ResponseInvalid(HarnessError):
    """A response arrived but its status or JSON body is not what was expected.

    ``response`` is the :class:`harness.Response` that failed validation.
    """

    def __init__(self, message: str, *, response: Any = None) -> None:
        super().__init__(message)
        self.response = response
