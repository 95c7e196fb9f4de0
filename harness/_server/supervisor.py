"""The runner's side of the zygotes (:mod:`.zygote`): start them, talk to them, the lifeline.

One *plain* zygote per test runner launches every server that is a
program (``argv``, and fresh ``app_code`` servers); one *warm* zygote per
``preload`` set launches warm Python servers.  Each is started on first
use and lives as long as the runner:

* the **lifeline**: a pipe whose write end only this process holds (not
  inherited by anything: PEP 446, and closed in a forked child).  Zygotes
  and keepers hold its read end; when the runner dies, however it dies,
  they read EOF and end every server and remove the registered temp dirs.
  That replaces the separate watchdog process of harness 0.1;
* the **control socket** of each zygote: spawn requests (with the log's
  and the listening socket's descriptors), temp dir registrations, module
  imports for targets;
* a :class:`KeeperLink` per server: the keeper tells when the server
  started and when it exited, and stops it when asked.

The zygote runs harness's stdlib-only low-level modules without the rest
of the package: its bootstrap makes a stand-in parent package named
``_harness_zygote`` whose ``__path__`` is this package's directory, so
``harness/__init__.py`` (and whatever a vendoring project wraps around it)
never runs there.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import weakref
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, cast

from .._os import proc
from .._os.identity import ProcessId
from .._wait import Deadline, backoff, pause
from . import channel, marker, protocol

_log = logging.getLogger("harness.supervisor")

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOT = ("import sys, types\n"
        "package = types.ModuleType('_harness_zygote')\n"
        "package.__path__ = [sys.argv[1]]\n"
        "sys.modules['_harness_zygote'] = package\n"
        "from _harness_zygote._server import zygote\n"
        "zygote.main()\n")
START_TIMEOUT = 30.0  # a zygote's start: an interpreter plus the preload imports

PreloadKey = Optional[Tuple[str, ...]]


class LaunchError(Exception):
    """The zygote or the keeper could not launch the server; ``str()`` says why."""

    def __init__(self, message: str, *, detail: str = "", errno: Optional[int] = None,
                 orphan: Optional[ProcessId] = None) -> None:
        super().__init__(message)
        self.detail = detail
        self.errno = errno
        self.command: List[str] = []  # what was to be run, for the message
        self.orphan = orphan  # a server whose keeper died before confirming it: end it


class WarmUnavailable(Exception):
    """A warm zygote cannot be used (threads after a preload, no fork): fall back to fresh."""


class KeeperLost(Exception):
    """The keeper stopped answering (it was killed): the caller ends the server itself."""


# --------------------------------------------------------------------------
# The keeper of one server


class KeeperLink:
    """The runner's end of one keeper's socket: started, exited, stop."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: Optional[socket.socket] = sock
        self._lock = threading.Lock()
        self.pid: Optional[int] = None
        self.keeper_pid: Optional[int] = None
        self.identity: Optional[ProcessId] = None
        self.status: Optional[int] = None
        self.exited_seen = False
        self.lost = False
        _links.add(self)

    def wait_started(self, timeout: float) -> int:
        """The server's pid once it runs; :class:`LaunchError` if it could not be started.

        The keeper names the forked server first, then confirms its start
        (or says why it failed).  A keeper that dies in between leaves a
        server behind: the error carries it (``orphan``) for the caller to end.
        """
        deadline = Deadline(timeout)
        while True:
            try:
                message = self._recv(deadline.remaining())
            except channel.ChannelTimeout:
                raise LaunchError(f"the zygote did not start the server within {timeout:.1f} s",
                                  orphan=self.identity) from None
            except (channel.ChannelClosed, OSError):
                raise LaunchError("the zygote or the server's keeper died while starting the "
                                  "server", orphan=self.identity) from None
            if message["event"] == "forked":
                self.pid, self.keeper_pid = message["pid"], message["keeper"]
                self.identity = ProcessId.parse(message["identity"])
            elif message["event"] == "spawn failed":
                raise LaunchError(f"{message['error']}: {message['text']}",
                                  errno=message["errno"] or None)
            elif message["event"] == "started":
                self.pid = message["pid"]
                return self.pid
            elif message["event"] == "exited":  # (before "started": cannot happen)
                self._saw_exit(message)

    def _recv(self, timeout: Optional[float]) -> protocol.KeeperEvent:
        if self._sock is None:
            raise channel.ChannelClosed()
        message, fds = channel.recv(self._sock, timeout)
        for fd in fds:
            os.close(fd)
        return cast(protocol.KeeperEvent, message)

    def _saw_exit(self, message: protocol.Exited) -> None:
        self.status = message["status"]
        self.exited_seen = True

    def exited(self, timeout: float = 0.0) -> bool:
        """Wait up to ``timeout`` for the server's exit; True once it has exited.

        The keeper reports it at once (it is the server's parent); a keeper
        that vanished counts as an exit of unknown status.
        """
        with self._lock:
            if self.exited_seen or self.lost:
                return True
            try:
                message = self._recv(timeout)
            except channel.ChannelTimeout:
                return False
            except (channel.ChannelClosed, OSError):
                self.lost = True
                return True
            if message["event"] == "exited":
                self._saw_exit(message)
            return self.exited_seen

    def stop(self, grace: float, kill_wait: float) -> List[ProcessId]:
        """Have the keeper end the server's subtree; returns the survivors.

        :class:`KeeperLost` if the keeper does not answer in time: then the
        caller must end the server itself.
        """
        with self._lock:
            if self._sock is None or self.lost:
                raise KeeperLost()
            try:
                channel.send(self._sock, protocol.stop(grace, kill_wait))
                while True:
                    message = self._recv(grace + kill_wait + 5.0)
                    if message["event"] == "exited":
                        self._saw_exit(message)
                    elif message["event"] == "stopped":
                        if message["status"] is not None:
                            self.status = message["status"]
                        self.wait_closed()
                        return [i for i in map(ProcessId.parse, message["survivors"]) if i]
            except (channel.ChannelClosed, channel.ChannelTimeout, OSError):
                self.lost = True
                raise KeeperLost() from None

    def wait_closed(self, timeout: float = 2.0) -> None:
        """Wait until the keeper is gone: it exits right after its last word.

        End of file comes when the kernel closes the keeper's descriptors,
        a moment before the process is dead; then its state is watched.
        """
        deadline = Deadline(timeout)
        try:
            while True:
                self._recv(deadline.remaining())
        except (channel.ChannelClosed, channel.ChannelTimeout, OSError):
            pass
        if self.keeper_pid is None or not proc.HAVE_PROC:
            return
        for interval in backoff(first=0.0002, cap=0.005):
            if proc.is_dead(self.keeper_pid) or deadline.expired:
                return
            pause(deadline.cap(interval))

    def available(self) -> bool:
        """True if no thread is talking to the keeper right now (for signal handlers)."""
        if self._lock.acquire(blocking=False):
            self._lock.release()
            return True
        return False

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        _links.discard(self)


_links: "weakref.WeakSet[KeeperLink]" = weakref.WeakSet()


# --------------------------------------------------------------------------
# Zygotes


class Zygote:
    """A running zygote process and its control socket."""

    def __init__(self, key: PreloadKey, proc: "subprocess.Popen[bytes]", control: socket.socket,
                 info: protocol.InitReply) -> None:
        self.key = key
        self.proc = proc
        self.control = control
        self.pid = proc.pid
        self.subreaper = info["subreaper"]
        self.lock = threading.Lock()
        self.broken = False
        self.imported: Set[str] = set()  # modules this zygote imported for targets

    @property
    def warm(self) -> bool:
        return self.key is not None

    def send(self, message: protocol.ZygoteRequest, fds: Sequence[int] = ()) -> None:
        with self.lock:
            try:
                channel.send(self.control, message, fds)
            except OSError as exc:
                self.broken = True
                raise LaunchError(self._death(f"could not reach it ({exc})")) from None

    def _death(self, what: str) -> str:
        kind = f"warm launcher (preload {list(self.key or ())})" if self.warm else "zygote"
        code = self.proc.poll()
        status = f"; it exited with code {code}" if code is not None else ""
        return f"harness's {kind}, pid {self.pid}, {what}{status}"

    def spawn(self, request: protocol.Spawn, log_fd: int,
              listen_fd: Optional[int]) -> KeeperLink:
        """Ask for a keeper and a server; the link reports the start (``wait_started``)."""
        mine, theirs = socket.socketpair()
        try:
            fds = [theirs.fileno(), log_fd] + ([listen_fd] if listen_fd is not None else [])
            self.send(request, fds)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        return KeeperLink(mine)

    def import_module(self, module: str, timeout: float) -> None:
        """Import a target's module into a warm zygote (once; later forks have it)."""
        if module in self.imported:
            return
        try:
            answer = cast(protocol.ImportReply,
                          self._ask(protocol.import_module(module), timeout))
        except (OSError, channel.ChannelClosed, channel.ChannelTimeout) as exc:
            raise LaunchError(self._death(
                f"failed while importing {module!r} ({exc!r})")) from None
        refused = answer["refusal"]
        if refused is None:
            self.imported.add(module)
            return
        self.broken = True
        if refused["threads"]:
            raise WarmUnavailable(f"importing {module!r} started threads ({refused['threads']} "
                                  f"now run); forking a multi-threaded process is unsafe")
        raise LaunchError(f"importing the target's module {module!r} failed",
                          detail=refused["error"])

    def import_learned(self, modules: Sequence[str], timeout: float) -> protocol.LearnReply:
        """Import modules servers imported when they ran (see ``zygote._import_learned``).
        A zygote a module changed is broken."""
        try:
            answer = cast(protocol.LearnReply, self._ask(protocol.learn(list(modules)), timeout))
        except (OSError, channel.ChannelClosed, channel.ChannelTimeout) as exc:
            return protocol.learn_reply([], module="?", changed=repr(exc))
        self.imported.update(answer["imported"])
        if not answer["ok"]:
            self.broken = True
        return answer

    def _ask(self, question: protocol.ZygoteRequest, timeout: float) -> Dict[str, Any]:
        """Send a request the zygote answers, and its answer (a broken zygote on failure)."""
        with self.lock:
            try:
                channel.send(self.control, question)
                answer, _ = channel.recv(self.control, timeout)
            except (OSError, channel.ChannelClosed, channel.ChannelTimeout):
                self.broken = True
                raise
        return answer

    def register_dir(self, path: str, add: bool = True) -> None:
        try:
            self.send(protocol.directory(path, add))
        except LaunchError:
            pass  # a dead zygote cannot clean up; the next one is asked instead

    def close(self, timeout: float = 5.0) -> None:
        """Close the control socket (the zygote then exits) and reap it."""
        with self.lock:
            self.control.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_lock = threading.Lock()
_zygotes: Dict[PreloadKey, Zygote] = {}
_lifeline: Optional[Tuple[int, int]] = None  # (read end, write end)
_owner_pid: Optional[int] = None


def _lifeline_read_end() -> int:
    global _lifeline, _owner_pid
    if _lifeline is None or _owner_pid != os.getpid():
        _lifeline = os.pipe()  # both ends non-inheritable: the write end stays ours alone
        _owner_pid = os.getpid()
    return _lifeline[0]


def _start(key: PreloadKey) -> Zygote:
    """Start a zygote and wait for it to report ready (preloads imported)."""
    lifeline = _lifeline_read_end()
    mine, theirs = socket.socketpair()
    env = {k: v for k, v in os.environ.items() if k != marker.SERVER_ID_ENV}
    env[marker.OWNER_ENV] = marker.owner_token()  # reap finds it if the runner dies
    flags = ["-I", "-S"] if key is None else []  # no site: fast; warm needs the venv's site
    argv = [sys.executable] + flags + ["-c", BOOT, PACKAGE_DIR, str(theirs.fileno()),
                                       str(lifeline)]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(), lifeline),
                                env=env, cwd="/", start_new_session=True)
    except OSError:
        mine.close()
        raise
    finally:
        theirs.close()
    try:
        channel.send(mine, protocol.init(list(key or ()),
                                         runner_sys_path() if key is not None else []))
        answer, _ = channel.recv(mine, START_TIMEOUT)
        info = cast(protocol.InitReply, answer)
    except (OSError, channel.ChannelClosed, channel.ChannelTimeout) as exc:
        mine.close()
        _end(proc)
        what = "warm launcher" if key is not None else "zygote"
        raise LaunchError(f"harness's {what} did not start ({exc!r}); exit code "
                          f"{proc.returncode}") from None
    refused = info["refusal"]
    if not info["ready"] and refused is not None:
        mine.close()
        _end(proc)
        if refused["threads"]:
            raise WarmUnavailable(f"preloading {refused['module']!r} started threads "
                                  f"({refused['threads']} run); forking a multi-threaded "
                                  f"process is unsafe")
        raise LaunchError(f"preload {refused['module']!r} failed to import",
                          detail=refused["error"])
    return Zygote(key, proc, mine, info)


def _end(proc: "subprocess.Popen[bytes]") -> None:
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def zygote(key: PreloadKey = None) -> Zygote:
    """The running zygote for ``key`` (``None``: plain; a tuple: that preload set)."""
    with _lock:
        current = _zygotes.get(key)
        if current is not None and (current.broken or current.proc.poll() is not None):
            _log.warning("%s; starting a new one", current._death("is gone"))
            _zygotes.pop(key, None)
            current.control.close()
            _end(current.proc)
            current = None
        if current is None:
            current = _zygotes[key] = _start(key)
            if key is not None:
                _log.info("warm launcher for preload %s started (pid %d)", list(key), current.pid)
        return current


def discard(key: PreloadKey) -> None:
    """Forget a zygote that proved unusable (it is ended; the next use starts a new one)."""
    with _lock:
        current = _zygotes.pop(key, None)
    if current is not None:
        current.close()


def register_dir(path: str, add: bool = True) -> None:
    """A temp dir the plain zygote removes if the runner dies before it does."""
    zygote(None).register_dir(path, add)


def runner_sys_path() -> List[str]:
    """This runner's ``sys.path``, absolute (a server's working directory may differ)."""
    here = os.getcwd()
    path: List[str] = []
    for entry in sys.path:
        full = os.path.join(here, entry) if not os.path.isabs(entry or ".") else entry
        full = full or here
        if full not in path:
            path.append(full)
    return path


def own_fds() -> List[int]:
    """The descriptors the supervisor keeps for as long as the runner lives (the
    lifeline's ends, each zygote's control socket): for leak checks."""
    with _lock:
        fds = [z.control.fileno() for z in _zygotes.values() if z.control.fileno() >= 0]
    if _lifeline is not None and _owner_pid == os.getpid():
        fds.extend(_lifeline)
    return fds


def running() -> List[int]:
    """Pids of this runner's zygotes (for tests and diagnostics)."""
    with _lock:
        return [z.pid for z in _zygotes.values() if z.proc.poll() is None]


def shutdown(timeout: float = 5.0) -> None:
    """Close every zygote (the runner is exiting; its servers are stopped already)."""
    global _lifeline
    with _lock:
        zygotes = list(_zygotes.values())
        _zygotes.clear()
        owner = _owner_pid == os.getpid()
    if not owner:
        return
    for current in zygotes:
        current.close(timeout)
    if _lifeline is not None:
        for fd in _lifeline:
            os.close(fd)
        _lifeline = None


def _disown(proc: "subprocess.Popen[bytes]") -> None:
    """In a forked child: the zygote is the parent's child, not this process's.

    Dropping its ``Popen`` here would warn "subprocess N is still running"
    (CPython 3.8-3.13 check ``_child_created`` first in ``__del__``), and
    this process could not wait for it anyway.
    """
    proc._child_created = False  # type: ignore[attr-defined]


def _forget_in_child() -> None:
    """After fork: this child is not the runner; the zygotes are not its to use."""
    global _lock, _lifeline, _owner_pid
    _lock = threading.Lock()
    for current in list(_zygotes.values()):
        try:
            os.close(current.control.detach())
        except OSError:
            pass
        _disown(current.proc)
    _zygotes.clear()
    for link in list(_links):
        sock, link._sock = link._sock, None
        if sock is not None:
            try:
                os.close(sock.detach())
            except OSError:
                pass
    if _lifeline is not None:
        for fd in _lifeline:
            try:
                os.close(fd)
            except OSError:
                pass
    _lifeline, _owner_pid = None, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
