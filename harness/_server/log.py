"""A server's output: one file it appends to, read in pieces without holding it up.

stdout and stderr go to ``server.log`` in the server's private directory,
never to a pipe (an unread pipe fills up and blocks a chatty server).  The
runner reads it only when asked: a tail for a report, new lines for
``LogCheck`` and ``wait_for_log``, the head and tail of a failed start.
When the server is stopped the file goes with its directory and the last
MiB stays in memory for ``output()``; after a failed start it is moved to
the kept-logs folder (:mod:`.logstore`).
"""
from __future__ import annotations

import os
import re
from typing import Callable, List, Match, Optional, Pattern, Tuple

from .._wait import Deadline, poll_interval
from ..errors import HarnessError, WaitTimeout
from . import logstore

KEPT_OUTPUT = 1 << 20  # output() after stop: the last MiB of the deleted log
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_DIGITS = re.compile(r"\d+")


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def clean(text: str) -> str:
    """``text`` without ANSI colour codes (a coloured log is noise in a CI report)."""
    return _ANSI.sub("", text)


def fold(lines: List[str], least: int = 3) -> List[str]:
    """Runs of ``least`` or more lines alike but for their numbers become one line and a count.

    An access log of readiness probes (``GET /health 200`` with a new
    timestamp each time) would otherwise push the start-up error out of a
    tail.
    """
    out: List[str] = []
    index = 0
    while index < len(lines):
        shape = _DIGITS.sub("#", lines[index])
        end = index + 1
        while end < len(lines) and _DIGITS.sub("#", lines[end]) == shape:
            end += 1
        out.append(lines[index])
        if end - index >= least:
            out.append(f"[... {end - index - 1} more line(s) like the one above]")
        else:
            out.extend(lines[index + 1:end])
        index = end
    return out


class ServerLog:
    """The log file of one server and where each of its launches begins in it."""

    def __init__(self) -> None:
        self.path: Optional[str] = None
        self.offset = 0      # where the current launch's output starts
        self.launch_id = 0   # counts launches (a relaunch on a new port is a new one)
        self.kept_output = ""
        self.kept_from = 0   # the byte offset in the log where kept_output begins
        self.why_not_kept = ""

    def create(self, directory: str) -> None:
        self.path = os.path.join(directory, "server.log")
        _write_private(self.path, "")

    def open_for_launch(self) -> int:
        """A new append-only descriptor for the next launch (the caller closes it)."""
        assert self.path is not None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        self.offset = os.fstat(fd).st_size
        self.launch_id += 1
        return fd

    @property
    def exists(self) -> bool:
        return self.path is not None and os.path.exists(self.path)

    def size(self) -> int:
        try:
            return os.path.getsize(self.path) if self.path else 0
        except OSError:
            return 0

    def read(self, start: int = 0, limit: Optional[int] = None) -> Tuple[str, int]:
        """Text from byte ``start`` (at most ``limit`` bytes) and the offset after it."""
        if not self.exists:
            return "", start
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                data = f.read() if limit is None else f.read(limit)
        except OSError:
            return "", start
        return data.decode("utf-8", "replace"), start + len(data)

    def text(self, since: int = 0) -> str:
        """What was written from byte ``since`` on (from the kept last MiB once the
        file is gone)."""
        if self.exists:
            return self.read(since)[0]
        skip = max(0, since - self.kept_from)
        return self.kept_output.encode("utf-8", "replace")[skip:].decode("utf-8", "replace")

    def end(self) -> int:
        """The byte offset where the output ends now (also once the file is gone)."""
        if self.exists:
            return self.size()
        return self.kept_from + len(self.kept_output.encode("utf-8", "replace"))

    def _last(self, size: int) -> str:
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")

    def tail(self, lines: int) -> str:
        try:
            text = self._last(64 * 1024) if self.exists else self.kept_output
        except OSError:
            text = self.kept_output
        return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""

    def excerpt(self, lines: int) -> List[str]:
        """For an error: the head and the tail of this launch's output, colours removed,
        repeated lines folded, a marker where lines were left out."""
        text, _ = self.read(self.offset, 4 << 20)
        if not text and not self.exists:
            text = self.kept_output
        all_lines = fold(clean(text).splitlines())
        if len(all_lines) <= 2 * lines:
            return all_lines
        head, tail = all_lines[:lines], all_lines[-lines:]
        return head + [f"[... {len(all_lines) - 2 * lines} line(s) left out ...]"] + tail

    def find(self, regex: "Pattern[str]", start: int) -> Tuple[Optional["Match[str]"], int]:
        """The first match of ``regex`` in a complete line written from byte ``start``,
        and the offset just after that line (``start`` unchanged when none matched)."""
        data = b""
        if self.exists:
            assert self.path is not None
            try:
                with open(self.path, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except OSError:
                data = b""
        complete = data[:data.rfind(b"\n") + 1]  # a line still being written must not match
        text = complete.decode("utf-8", "replace")
        match = regex.search(text)
        if match is None:
            return None, start
        end = text.find("\n", match.end())
        line_end = len(text) if end < 0 else end + 1
        return match, start + len(text[:line_end].encode("utf-8", "replace"))

    def wait_for(self, regex: "Pattern[str]", start: int, deadline: Deadline, *,
                 ended: Callable[[float], bool], name: str,
                 state: Callable[[], str]) -> Tuple["Match[str]", int]:
        """Wait for a complete line from byte ``start`` on that matches ``regex``: the
        match and the offset after its line.  ``ended(seconds)`` waits up to that long
        for the server's exit and says whether it has exited: that is the pause, so an
        exit ends the wait at once (:class:`HarnessError`); :class:`WaitTimeout` at the
        deadline.  Both errors show the last lines.
        """
        looks = 0
        while True:
            looks += 1
            match, after = self.find(regex, start)
            if match is not None:
                return match, after
            if ended(0):
                raise HarnessError(f"server {name!r} {state()} while waiting for "
                                   f"{regex.pattern!r} in its output; last lines:\n"
                                   + _indent(self.tail(10)))
            if deadline.expired:
                raise WaitTimeout(
                    f"{regex.pattern!r} did not appear in the output of server {name!r} "
                    f"within {deadline.seconds:.1f} s ({looks} looks); last lines:\n"
                    + _indent(self.tail(10)), what=f"log line {regex.pattern!r}",
                    waited=deadline.elapsed(), attempts=looks, last=self.tail(10))
            ended(deadline.cap(poll_interval(deadline.elapsed())))

    def note(self, message: str) -> None:
        """Write a harness line into the log (a relaunch, why a start failed)."""
        if self.exists:
            assert self.path is not None
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(f"[harness] {message}\n")

    def remember(self) -> None:
        """Keep the last MiB in memory: the file is about to go with its directory."""
        try:
            if self.exists:
                self.kept_from = max(0, self.size() - KEPT_OUTPUT)
                self.kept_output = self._last(KEPT_OUTPUT)
        except OSError:
            pass

    def keep(self, name: str, pid: Optional[int]) -> Optional[str]:
        """Move the file to the kept-logs folder; its new path (``None``: none kept,
        and ``why_not_kept`` says why)."""
        self.remember()
        if not self.exists:
            return None
        assert self.path is not None
        try:
            kept = logstore.keep(self.path, name, pid)
        except HarnessError as exc:  # the failure it documents must still be reported
            self.why_not_kept = str(exc)
            return None
        if kept is None:
            self.why_not_kept = f"{logstore.KEEP_VAR}=0"
        else:
            self.path = kept
        return kept


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines()) or "    (no output)"
