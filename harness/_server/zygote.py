"""The zygote and its keepers: the processes that launch servers and outlive none.

Every server harness starts is launched through a *zygote*, a small
process per test runner (one for servers that are programs, one per
``preload`` set for warm Python servers), and lives under a *keeper*::

    runner ─┬─ zygote ──┬── keeper ─┬─ server ── workers
            │ (plain)   │            └─ daemon (its parent exited: re-parented to the keeper)
            └─ zygote ──┴── keeper ── server
              (warm: flask, myapp.models imported once)

* The zygote is started once (``python -I -S`` for the plain one: about
  15 ms) and forks a keeper per server; a warm zygote has imported the
  ``preload`` modules and its keepers fork the server from that state, so a
  Flask server starts in milliseconds instead of 200.
* The keeper is a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): a
  descendant of the server whose parent exits (a daemon's double fork, a
  ``setsid`` escapee that also scrubbed its environment) is re-parented to
  the keeper instead of init.  So the keeper's subtree is exactly what the
  server started, found by reading ``/proc/<pid>/task/*/children`` (no scan
  of every process), and ``stop`` ends all of it with the one algorithm,
  :func:`harness._os.kill.stop_tree`.
* The keeper is the server's parent: it sees the exit at once (SIGCHLD),
  tells the runner the status, and does not reap the server until the stop
  is done, so the server's pid, which is also its process group id, cannot
  be reused while a signal may still be sent to it.
* Zygotes and keepers hold the read end of the runner's *lifeline* pipe,
  whose write end only the runner has.  The kernel closes it however the
  runner dies (SIGKILL included), so they read EOF, end their subtrees and
  remove the runner's registered temp dirs.

Invariants: the zygote is single-threaded when it forks (a ``preload``
that starts threads makes it refuse, and harness falls back to a fresh
interpreter); the server is never reaped before its group was killed; this
module imports only the standard library and harness's stdlib-only
low-level modules (``_os.kill``, ``_os.proc``, ``_server.boot``,
``_server.channel``), because the zygote loads it without the package
(see :mod:`.supervisor`).
"""
from __future__ import annotations

import fcntl
import gc
import importlib
import io
import math
import os
import pickle
import select
import signal
import socket
import sys
import threading
from typing import Any, Dict, List, Optional, Set, Tuple, cast

from .._os import kill, proc
from .._os.identity import ProcessId
from . import boot, channel, protocol

PR_SET_CHILD_SUBREAPER = 36
# How long a runner's death gives servers to exit on SIGTERM before SIGKILL.
ORPHAN_GRACE = 1.0
KILL_WAIT = kill.KILL_WAIT


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (ImportError, OSError, AttributeError):
        return False


def _traceback() -> str:
    import traceback  # on error paths only: it costs the zygote's start 5 ms
    return traceback.format_exc()


def _print_traceback() -> None:
    sys.stderr.write(_traceback())


def exit_status(info: Any) -> int:
    """A ``waitid`` result as a returncode: the exit code, or minus the signal."""
    status = int(info.si_status)
    return status if info.si_code == os.CLD_EXITED else -status


class _Loop:
    """What the zygote and a keeper share: a SIGCHLD/SIGTERM wake-up pipe and the lifeline."""

    def __init__(self, lifeline: int) -> None:
        self.lifeline = lifeline
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.terminating = False
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, self._noop)  # a handler, so the wake-up fd fires
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._terminate)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # not ours: the runner's terminal

    @staticmethod
    def _noop(signum: int, frame: Any) -> None:
        pass

    def _terminate(self, signum: int, frame: Any) -> None:
        self.terminating = True

    def wait(self, fds: List[int], timeout: Optional[float] = None,
             lifeline: bool = True) -> List[int]:
        """The readable ones of ``fds`` (the wake-up pipe is drained, not returned)."""
        poller = select.poll()  # not select(): the runner's fd numbers (inherited) may be > 1023
        for fd in fds + [self.wake_r] + ([self.lifeline] if lifeline else []):
            poller.register(fd, select.POLLIN)
        try:
            ready = [fd for fd, _ in poller.poll(None if timeout is None
                                                 else math.ceil(timeout * 1000))]
        except InterruptedError:  # pragma: no cover - PEP 475 retries poll
            ready = []
        if self.wake_r in ready:
            try:
                while os.read(self.wake_r, 512):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
        return [fd for fd in ready if fd != self.wake_r]

    def lifeline_broken(self, ready: List[int]) -> bool:
        if self.lifeline not in ready:
            return False
        try:
            return os.read(self.lifeline, 1) == b""
        except OSError:
            return True

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self.wake_r)
        os.close(self.wake_w)


def _own_tree() -> List[ProcessId]:
    """The live processes below this one (children files; a scan where there are none)."""
    pids = proc.subtree(os.getpid())
    if pids is None:
        tree = proc.scan_children()
        pids, todo = [], [os.getpid()]
        while todo:
            for kid in tree.get(todo.pop(), []):
                pids.append(kid)
                todo.append(kid)
    return [i for i in map(proc.identity, pids) if i is not None]


def _children() -> List[ProcessId]:
    """The live children of this process (a zygote's keepers)."""
    kids = proc.children(os.getpid())
    if kids is None:
        return _own_tree()
    return [i for i in map(proc.identity, kids) if i is not None and kill.is_alive(i)]


def _reap_all_but(keep: Optional[int]) -> None:
    """Reap exited children (re-parented orphans included), never ``keep``."""
    kids = proc.children(os.getpid())
    if kids is None:
        # No children file (not Linux): no subreaper either, so a keeper's
        # only child is its server, which it reaps itself; a zygote reaps blindly.
        if keep is not None:
            return
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
    for kid in kids:
        if kid != keep and proc.is_dead(kid):
            try:
                os.waitpid(kid, os.WNOHANG)
            except ChildProcessError:
                pass


# --------------------------------------------------------------------------
# The server process (a child of its keeper)


def _fd_above(fd: int, floor: int = 10) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD, floor)


def _close_all_but(keep: Set[int]) -> None:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 256))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _server(request: protocol.Spawn, log_fd: int, listen_fd: Optional[int], errpipe: int,
            inherited: List[int]) -> None:
    """Become the server: never returns.

    Anything that fails before the program runs is written to ``errpipe``
    as a pickled :class:`~.protocol.SpawnFailed` (the pipe is close-on-exec:
    end of file there means the program started).
    """
    try:
        os.setsid()  # its own session and process group, away from the runner's terminal
        devnull = os.open(os.devnull, os.O_RDWR)
        sources = [_fd_above(devnull), _fd_above(log_fd), _fd_above(log_fd)]
        if listen_fd is not None:
            sources.append(_fd_above(listen_fd))
        for fd in [devnull, log_fd] + ([listen_fd] if listen_fd is not None else []) + inherited:
            os.close(fd)
        for target, source in enumerate(sources):
            os.dup2(source, target)  # inheritable copies at 0 (stdin), 1, 2 and 3 (handoff)
            os.close(source)
        env = dict(request["env"])
        if listen_fd is not None:
            env["LISTEN_PID"] = str(os.getpid())  # systemd: the socket is for this pid
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if not request["warm"]:
            _close_all_but({0, 1, 2, 3, errpipe} if listen_fd is not None else {0, 1, 2, errpipe})
            for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ"):  # as subprocess's restore_signals
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
            if request["cwd"]:
                os.chdir(request["cwd"])
            _become(request)
            argv = request["argv"]
            os.execvpe(argv[0], argv, env)
        _become(request)
        _run_in_process(request, env, errpipe)
    except BaseException as exc:
        try:
            os.write(errpipe, pickle.dumps(protocol.spawn_failed(exc), protocol=4))
        finally:
            os._exit(127)


def _become(request: protocol.Spawn) -> None:
    """Drop to the request's user (``user=``): no supplementary groups, then gid, then uid."""
    uid, gid = request["uid"], request["gid"]
    if uid is None:
        return
    os.setgroups([])
    os.setgid(uid if gid is None else gid)
    os.setuid(uid)


def _run_in_process(request: protocol.Spawn, env: Dict[str, str], errpipe: int) -> None:
    """A warm server: this fork of the zygote becomes the app, as a fresh interpreter would."""
    os.environ.clear()
    os.environ.update(env)
    if request["cwd"]:
        os.chdir(request["cwd"])
    tempfile_module: Any = sys.modules.get("tempfile")
    if tempfile_module is not None:
        tempfile_module.tempdir = None  # read TMPDIR again: the server has its own
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace" if fd == 2 else "strict",
                                  line_buffering=not unbuffered, write_through=unbuffered)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdin = stdin
    setattr(sys, "__stdin__", stdin)  # noqa: B010 (a final name to the type checker)
    os.close(errpipe)  # the app runs from here on: its failures are its own, in its log
    # PYTHONPATH comes before the runner's path, as in a fresh interpreter.
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p] + request["sys_path"]
    # A server that runs itself again (a reloader) must start the app, not this
    # launcher: its arguments read as a fresh server's would.
    rerun = boot.rerun_argv("app", request["app_path"]) if request["kind"] == "app" else \
        boot.rerun_argv("target", request["payload_path"], request["main_path"] or None)
    if hasattr(sys, "orig_argv"):
        sys.orig_argv = rerun  # type: ignore[attr-defined,unused-ignore]
    before = set(sys.modules)
    code = 0
    try:
        if request["kind"] == "app":
            boot.prepare(os.path.dirname(request["app_path"]), path)
            boot.run_app(request["app_path"])
        else:
            boot.prepare(None, path)
            boot.run_target(request["payload"], request["main_path"] or None)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        _print_traceback()
        code = 128 + signal.SIGINT
    except BaseException:
        _print_traceback()
        code = 1
    if request["kind"] == "target" and request["learn"]:
        _report_imports(before, os.path.join(os.path.dirname(request["payload_path"]),
                                             boot.LEARNED_FILE))
    _finish(code)


_installed: Optional[Tuple[str, ...]] = None


def installed_roots() -> Tuple[str, ...]:
    """The directories of installed and standard-library modules (as found and as real
    paths).  Computed once in the zygote, before it forks, so a server's exit pays no
    import of ``sysconfig`` and no path resolution."""
    global _installed
    if _installed is None:
        import sysconfig
        paths = sysconfig.get_paths()
        found = [paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")
                 if paths.get(name)]
        _installed = tuple({os.path.join(form, "") for path in found
                            for form in (os.path.abspath(path), os.path.realpath(path))})
    return _installed


def _report_imports(before: Set[str], path: str) -> None:
    """Write down the installed and standard-library modules imported since ``before``
    (never the project's own: they may read the server's environment at import)."""
    try:
        roots = installed_roots()
        names = []
        for name in sorted(set(sys.modules) - before):
            module = sys.modules.get(name)
            where = getattr(module, "__file__", None)
            if name.startswith("__") or not isinstance(where, str):
                continue
            if where.startswith(roots):
                names.append(name)
        if names:  # (once the launcher has learned them, a server imports nothing new)
            with open(path, "w") as f:
                f.write("\n".join(names))
    except Exception:
        pass  # learning is an optimisation: never a server's failure


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _finish(code: int) -> None:
    """Exit as an interpreter does: wait for non-daemon threads, run atexit, flush."""
    try:
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        import atexit
        run = getattr(atexit, "_run_exitfuncs", None)
        if run is not None:
            run()
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:
        _print_traceback()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


# --------------------------------------------------------------------------
# The keeper (a child of the zygote)


class Keeper:
    """Forks the server, reports its start and exit, stops its whole subtree."""

    def __init__(self, request: protocol.Spawn, link: socket.socket, lifeline: int) -> None:
        self.request = request
        self.link = link
        self.loop = _Loop(lifeline)
        self.server: Optional[ProcessId] = None
        self.status: Optional[int] = None
        self.reported_exit = False

    def run(self, log_fd: int, listen_fd: Optional[int], inherited: List[int]) -> None:
        become_subreaper()
        errpipe_r, errpipe_w = os.pipe()
        go_r, go_w = os.pipe()
        spid = os.fork()
        if spid == 0:
            link_fd = self.link.detach()
            os.close(go_w)
            # Nothing of the server runs before the runner knows who it is: a
            # server that kills its keeper at once must not be one nobody can name.
            if os.read(go_r, 1) != b"g":
                os._exit(70)  # the keeper died first: nothing would supervise it
            _server(self.request, log_fd, listen_fd, errpipe_w,
                    inherited + [go_r, errpipe_r, self.loop.wake_r, self.loop.wake_w,
                                 self.loop.lifeline, link_fd])
        for fd in [log_fd, errpipe_w, go_r] + ([listen_fd] if listen_fd is not None else []):
            os.close(fd)
        self.server = proc.identity(spid) or ProcessId(spid, None)
        # Say who the server is before it runs: if this keeper is killed
        # before the start is confirmed (the server may kill it), the runner
        # still knows which process to end.
        self._send(protocol.forked(spid, os.getpid(), str(self.server)))
        os.write(go_w, b"g")
        os.close(go_w)
        failure = self._read_errpipe(errpipe_r)
        os.close(errpipe_r)
        if failure is not None:
            self._send(failure)
            self._stop(grace=0.0)
            os._exit(0)
        self._send(protocol.started(spid))
        self._serve()

    def _read_errpipe(self, fd: int) -> Optional[protocol.SpawnFailed]:
        """What the server reported before its program started; ``None`` if it started."""
        data = b""
        while True:
            ready = self.loop.wait([fd])
            if self.loop.lifeline_broken(ready) or self.loop.terminating:
                self._stop(grace=0.0)
                os._exit(0)
            if fd in ready:
                chunk = os.read(fd, 4096)
                if chunk:
                    data += chunk
                    continue
                if not data:
                    return None
                try:
                    failed: protocol.SpawnFailed = pickle.loads(data)
                except Exception:  # a child killed mid-write: say so, not a traceback
                    failed = protocol.spawn_failed(RuntimeError("the server died starting"))
                return failed

    def _send(self, message: protocol.KeeperEvent) -> None:
        try:
            channel.send(self.link, message)
        except OSError:
            pass  # the runner is gone: the lifeline says so too

    def _check_server(self) -> None:
        """Tell the runner once the server has exited (it stays unreaped: a zombie)."""
        assert self.server is not None
        if self.reported_exit:
            return
        try:
            info = os.waitid(os.P_PID, self.server.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
        if info is not None and info.si_pid:
            self.status = exit_status(info)
            self.reported_exit = True
            self._send(protocol.exited(self.status))

    def _reap(self) -> None:
        _reap_all_but(self.server.pid if self.server else None)

    def _wait_for_child(self, seconds: float) -> None:
        """A pause that ends at the next SIGCHLD (a process of the tree exited)."""
        self.loop.wait([], seconds, lifeline=False)

    def _serve(self) -> None:
        link = self.link.fileno()
        while True:
            # Look before waiting: a SIGCHLD may have come (and its wake-up byte
            # been read) while the start was awaited.
            self._reap()
            self._check_server()
            ready = self.loop.wait([link])
            if self.loop.lifeline_broken(ready) or self.loop.terminating:
                self._stop(grace=ORPHAN_GRACE)
                os._exit(0)
            if link in ready:
                try:
                    message, fds = channel.recv(self.link, timeout=KILL_WAIT)
                except (channel.ChannelClosed, channel.ChannelTimeout, OSError):
                    self._stop(grace=ORPHAN_GRACE)  # the runner dropped us: end the server
                    os._exit(0)
                for fd in fds:
                    os.close(fd)
                if message.get("op") == "stop":
                    order = cast(protocol.Stop, message)
                    self._reap()
                    survivors = self._stop(grace=order["grace"], kill_wait=order["kill_wait"])
                    self._send(protocol.stopped(self.status, [str(s) for s in survivors]))
                    os._exit(0)

    def _stop(self, grace: float, kill_wait: float = KILL_WAIT) -> List[ProcessId]:
        """End the server's whole subtree, then reap the server; the survivors.

        The server is still unreaped here, so its pid is still its process
        group's id and signalling the group cannot reach a stranger.
        """
        assert self.server is not None
        survivors = kill.stop_tree(_own_tree, grace=grace, kill_wait=kill_wait,
                                   group=self.server.pid, on_wait=self._reap,
                                   wait=self._wait_for_child,
                                   sig=self.request["stop_signal"])
        self._check_server()
        dead = self.reported_exit or proc.is_dead(self.server.pid)
        try:
            pid, status = os.waitpid(self.server.pid, 0 if dead else os.WNOHANG)
        except ChildProcessError:
            pid = 0
        if pid:
            self.status = _returncode(status)
        self._reap()
        return survivors


def _returncode(status: int) -> int:
    """A ``waitpid`` status as a returncode (``os.waitstatus_to_exitcode`` is 3.9+)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# --------------------------------------------------------------------------
# The zygote


def _fingerprint() -> Dict[str, Any]:
    """What a module's import must not change in a zygote (see ``_import_learned``)."""
    handlers = []
    for number in range(1, getattr(signal, "NSIG", 65)):
        try:
            handlers.append(signal.getsignal(number))
        except (ValueError, OSError):
            handlers.append(None)
    try:
        fds = sorted(os.listdir("/proc/self/fd"))
    except OSError:
        fds = []
    # (atexit and logging handlers a module adds are not here: a server that
    # imported it would add them too, and they harm neither it nor the zygote.)
    return {
        "signal handlers": handlers,
        "the environment": dict(os.environ),
        "sys.path": list(sys.path),
        "import hooks": [id(hook) for hook in sys.meta_path + sys.path_hooks],
        "the working directory": os.getcwd(),
        "open descriptors": fds,
    }


class Zygote:
    """Serves the runner: forks keepers, imports preloads, removes dirs when the runner dies."""

    def __init__(self, control: int, lifeline: int) -> None:
        self.control = socket.socket(fileno=control)
        self.loop = _Loop(lifeline)
        self.dirs: Set[str] = set()
        self.subreaper = become_subreaper()

    def serve(self) -> None:
        try:
            message, _ = channel.recv(self.control)
        except (channel.ChannelClosed, OSError):
            return
        channel.send(self.control, self._init(cast(protocol.Init, message)))
        # Objects that exist now live as long as the zygote: move them out of
        # the collector's sight, so a fork's child does not touch (copy) their
        # pages when it collects (as pre-fork servers do, gc.freeze's purpose).
        gc.freeze()
        control = self.control.fileno()
        while True:
            _reap_all_but(None)
            ready = self.loop.wait([control])
            if self.loop.lifeline_broken(ready) or self.loop.terminating:
                break
            if control in ready:
                try:
                    message, fds = channel.recv(self.control, timeout=KILL_WAIT)
                except (channel.ChannelClosed, channel.ChannelTimeout, OSError):
                    break
                self._handle(cast(protocol.ZygoteRequest, message), fds)
        self._shutdown()

    def _threads(self) -> int:
        return max(threading.active_count(), proc.thread_count(os.getpid()) or 1)

    def _refusal(self, name: str) -> Optional[protocol.Refusal]:
        """Import ``name`` here; why it cannot stay (a traceback, threads), or ``None``."""
        try:
            importlib.import_module(name)
        except BaseException:
            return protocol.refusal(name, error=_traceback())
        threads = self._threads()
        return protocol.refusal(name, threads=threads) if threads > 1 else None

    def _init(self, message: protocol.Init) -> protocol.InitReply:
        if message["sys_path"]:
            sys.path[:] = list(message["sys_path"])
        for name in message["preload"]:
            refused = self._refusal(name)
            if refused is not None:
                return protocol.init_reply(ready=False, pid=os.getpid(),
                                           subreaper=self.subreaper, refused=refused)
        return protocol.init_reply(ready=True, pid=os.getpid(), subreaper=self.subreaper)

    def _handle(self, message: protocol.ZygoteRequest, fds: List[int]) -> None:
        if message["op"] == "spawn":
            self._spawn(message, fds)
            return
        for fd in fds:
            os.close(fd)
        if message["op"] == "dir+":
            self.dirs.add(message["path"])
        elif message["op"] == "dir-":
            self.dirs.discard(message["path"])
        elif message["op"] == "import":
            channel.send(self.control, self._import(message["module"]))
        elif message["op"] == "learn":
            reply = self._import_learned(list(message["modules"]))
            channel.send(self.control, reply)

    def _import_learned(self, modules: List[str]) -> protocol.LearnReply:
        """Import modules servers imported when they ran, unless one changes this process.

        A module whose import starts a thread, installs a signal handler,
        changes the environment, ``sys.path``, the working directory or the
        open descriptors would hand that change to every server forked after:
        the answer names it, and the runner replaces this zygote.
        """
        imported: List[str] = []
        before = _fingerprint()  # unchanged from one module to the next, or we stop
        for name in modules:
            try:
                importlib.import_module(name)
            except BaseException:
                failed = True  # here; a server that needs it will say why
            else:
                failed = False
            after = _fingerprint()  # a failed import may have changed something too
            changed = [what for what in before if before[what] != after[what]]
            if changed or self._threads() > 1:
                return protocol.learn_reply(imported, module=name,
                                            changed=", ".join(changed) or "threads")
            if not failed:
                imported.append(name)
        gc.freeze()
        return protocol.learn_reply(imported)

    def _import(self, module: str) -> protocol.ImportReply:
        """Import a target's module here once, so every server forked after has it."""
        refused = self._refusal(module)
        if refused is None:
            gc.freeze()  # the module's objects too (see serve)
        return protocol.import_reply(refused)

    def _spawn(self, request: protocol.Spawn, fds: List[int]) -> None:
        if request["learn"]:
            installed_roots()  # once, here: every fork has it
        link_fd, log_fd = fds[0], fds[1]
        listen_fd = fds[2] if len(fds) > 2 else None
        link = socket.socket(fileno=link_fd)
        try:
            pid = os.fork()
        except OSError as exc:
            try:
                channel.send(link, protocol.spawn_failed(exc))
            except OSError:
                pass
            pid = -1
        if pid == 0:
            try:
                control = self.control.detach()
                os.close(control)
                self.loop.close()
                Keeper(request, link, self.loop.lifeline).run(log_fd, listen_fd, [])
            finally:
                os._exit(70)
        link.close()
        for fd in fds[1:]:
            os.close(fd)

    def _shutdown(self) -> None:
        """The runner is gone (or done): end whatever is left below us, remove its dirs.

        The keepers go first (each ends its server with the server's own stop
        signal, as the runner's death tells it too); then whatever is left.
        Signalling the servers directly would race their keepers' signal.
        """
        kill.stop_tree(_children, grace=ORPHAN_GRACE + 1.0, kill_wait=KILL_WAIT,
                       on_wait=lambda: _reap_all_but(None))
        kill.stop_tree(_own_tree, grace=ORPHAN_GRACE, kill_wait=KILL_WAIT,
                       on_wait=lambda: _reap_all_but(None))
        if self.dirs:
            import shutil  # only now: it costs the zygote's start 10 ms
            for path in self.dirs:
                shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    """``python [-I -S] -c BOOT HARNESS_DIR CONTROL_FD LIFELINE_FD`` (see :mod:`.supervisor`)."""
    control, lifeline = int(sys.argv[2]), int(sys.argv[3])
    for fd in (control, lifeline):
        try:
            os.fstat(fd)
        except OSError:
            # Not started by a test runner: run again by hand or by a server that
            # re-executed "itself" from sys.orig_argv, which is this launcher's.
            sys.stderr.write(
                "this is harness's launcher (zygote), started without the descriptors "
                "a test runner gives it: nothing to do.  A server that runs itself again "
                "(a reloader using sys.orig_argv or sys.argv) reached it instead of the "
                "server's own command; see harness's manual, 'Warm servers'.\n")
            sys.exit(2)
    os.chdir("/")
    Zygote(control, lifeline).serve()
    os._exit(0)


__all__ = ["main", "Zygote", "Keeper", "become_subreaper", "exit_status"]
