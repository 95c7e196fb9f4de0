"""``ServerProcess``: launch a server, prove it ready, stop it, leave nothing behind.

The life of one server, each step a part of its own (``harness/_server/``):

1. Arguments are checked before anything happens (``_server/spec.py``).
2. A port is leased (or a Unix socket path made) and a private 0700 temp
   dir holds the app code, the log and the server's own ``TMPDIR``; the
   server is launched through a zygote, under a keeper that is its parent
   and a subreaper (``_server/launch.py``, ``_server/zygote.py``).
3. Readiness is probed with a proportional backoff while the keeper
   reports the exit at once: a crash is reported immediately with the
   command, exit code or signal, what every probe saw and the head and
   tail of the log (``_server/diagnostics.py``).  Every listener on the
   port must belong to the server's process tree (``_server/ownership.py``).
4. ``stop()`` asks the keeper to end the server's whole subtree (SIGCONT +
   SIGTERM, ``stop_timeout``, SIGKILL), confirms the port no longer
   accepts connections, releases the lease and removes the temp dir.

The user's manual is docs/servers.rst; DEVELOPING.rst has the map.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from . import _http_wire, _validate
from ._config import scaled, scaled_for_cleanup, timeout_factor
from ._os import kill, proc, procinfo
from ._os.identity import ProcessId
from ._server import address, launch, marker, ownership, safety_net, supervisor
from ._server.diagnostics import StartFacts, describe_exit, start_failure
from ._server.log import ServerLog
from ._server.spec import PathLike, ServerSpec, Verify
from ._wait import Deadline, poll_interval
from .checks import Check, HealthSpec, Outcome, Ready, WaitEnd, wait_ready
from .errors import HarnessError, PortUnavailable, ServerStartError, WaitTimeout
from .http import Response

_log = logging.getLogger("harness.process")

LOG_TAIL_LINES = 40
MAX_RELAUNCHES = 3
KILL_WAIT = 5.0   # after SIGKILL, how long processes may take to disappear
# A check passed and nothing listens on $PORT: how long the server's tree must
# then do nothing (no CPU time, nothing runnable) to be taken as a process
# without a port rather than a server still on its way to bind.
UNBOUND_IDLE = 0.1
_ADDR_IN_USE = re.compile(r"address already in use|EADDRINUSE|errno (98|48)\b", re.I)
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path holds 108 bytes (104 on macOS)


class ServerProcess:
    """A server process under test: ``start()`` returns it ready, ``stop()``
    leaves nothing of it behind; also a context manager.

    What to run, exactly one of:

    * ``app_code``: Python source, run as ``__main__`` from a private file;
    * ``argv``: a program and its arguments (no shell); ``{port}``,
      ``{host}`` and ``{socket}`` in its items are filled in;
    * ``target``: a function importable by name, called in the server with
      ``args`` and ``kwargs`` (pickled).

    Every server gets ``PORT`` and ``HOST`` (``SOCKET_PATH`` for a Unix
    socket) in its environment and must serve there.  The other arguments:

    * ``preload``: module names imported once by a warm launcher that each
      server forks from (``[]``: warm with no imports); ``target`` servers
      are warm by default.  ``HARNESS_WARM=0|1`` overrides.
    * ``host``: a numeric loopback address; ``port``: a fixed port (else a
      leased one, from ``port_range`` ``(low, high)`` if given).
    * ``handoff``: harness binds the socket and passes it as fd 3
      (``LISTEN_FDS=1``, ``LISTEN_PID``); ``unix_socket``: serve on a Unix
      socket at ``$SOCKET_PATH`` instead of a TCP port.
    * ``env``: added to the inherited environment (``None`` removes a
      variable); ``cwd``: the working directory.
    * ``health``: when the server is ready -- a path (GET gives 200), a
      :class:`~harness.checks.Check`, a callable ``check(server)``, a list
      of these (all must pass, in order), or ``None`` (a TCP connection).
      ``ready_successes`` passes in a row are needed.
    * ``start_timeout``: seconds to become ready; ``stop_timeout``: seconds
      between SIGTERM and SIGKILL.
    * ``name``: for messages and reports; ``https``: talk TLS to it,
      verified as ``verify`` says (``True``, ``False``, a CA file, an
      :class:`ssl.SSLContext`).
    * ``listens``: ``False`` for a server without a port (a worker): ready
      when its check, which must not talk to the port, passes.

    Once started: ``pid``, ``port``, ``url``, ``socket_path``, ``log_path``,
    ``returncode`` (after it exited), ``running``, ``state``, ``warm`` (it
    was forked from a warm launcher) and ``command``.
    """

    def __init__(self, app_code: Optional[str] = None, *, argv: Optional[Sequence[str]] = None,
                 target: Optional[Callable[..., Any]] = None, args: Sequence[Any] = (),
                 kwargs: Optional[Mapping[str, Any]] = None,
                 preload: Optional[Sequence[str]] = None, host: str = "127.0.0.1",
                 port: Optional[int] = None, port_range: Optional[Sequence[int]] = None,
                 handoff: bool = False, unix_socket: bool = False,
                 env: Optional[Mapping[str, Optional[str]]] = None,
                 cwd: Optional[PathLike] = None, health: HealthSpec = "/health",
                 ready_successes: int = 2, start_timeout: float = 10.0,
                 stop_timeout: float = 5.0, name: Optional[str] = None, https: bool = False,
                 verify: Verify = True, listens: bool = True) -> None:
        self.spec = ServerSpec.checked(
            app_code, argv=argv, target=target, args=args, kwargs=kwargs, preload=preload,
            host=host, port=port, port_range=port_range, handoff=handoff,
            unix_socket=unix_socket, env=env, cwd=cwd, health=health,
            ready_successes=ready_successes, start_timeout=start_timeout,
            stop_timeout=stop_timeout, name=name, https=https, verify=verify, listens=listens)
        spec = self.spec
        self.host = spec.host
        self.handoff = spec.handoff
        self.name = spec.name
        self.check: Check = spec.check
        self.ready_successes = spec.ready_successes
        self.start_timeout = spec.start_timeout
        self.stop_timeout = spec.stop_timeout
        self.app_code = spec.app_code
        self.argv = list(spec.argv) if spec.argv is not None else None
        self.cwd = spec.cwd
        self.port: Optional[int] = spec.port
        self.socket_path: Optional[str] = None
        self.pid: Optional[int] = None
        self.returncode: Optional[int] = None
        self.command: List[str] = []
        self.server_id = ""
        self.warm = False
        self.listen_inode: Optional[int] = None
        # The TLS context for an https server's probes and requests (None: the
        # system's CAs).
        self.ssl_context: Optional[ssl.SSLContext] = (
            _http_wire.ssl_context(spec.verify) if spec.https else None)
        self._log = ServerLog()
        self._launched: Optional[launch.Launched] = None
        self._unbound = ownership.Idleness()  # see _verify_listener
        self._lease: Any = None
        self._listener: Optional[socket.socket] = None
        self._dir: Optional[str] = None
        self._files: Dict[str, str] = {}
        self._read_offset: Optional[int] = None  # wait_for_log goes on from here
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ info

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (``https://`` with ``https=True``; ``http://localhost``
        for a Unix socket: requests go to ``socket_path``)."""
        scheme = "https" if self.spec.https else "http"
        if self.spec.unix_socket:
            return f"{scheme}://localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def log_path(self) -> Optional[str]:
        """The server's log file (stdout and stderr); after a failed start, in the
        kept-logs folder.  None before the first start."""
        return self._log.path

    @property
    def log_offset(self) -> int:
        """Where the current launch's output starts in the log."""
        return self._log.offset

    @property
    def launch_id(self) -> int:
        """How often the server was launched (a relaunch on a new port counts)."""
        return self._log.launch_id

    @property
    def running(self) -> bool:
        """True while the server process runs."""
        return self._launched is not None and not self._exited(0)

    @property
    def state(self) -> str:
        """What the server is doing, in words that stay true when shown in a report:
        "not started", "running", "exited with code 1", "was killed by SIGKILL"."""
        if self.running:
            return "running"
        if self.returncode is not None:
            return describe_exit(self.returncode)
        return "not started"

    def __repr__(self) -> str:
        where = f"unix:{self.socket_path}" if self.spec.unix_socket else self.url
        return f"<ServerProcess {self.name!r} pid={self.pid} {where} {self.state}>"

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far.

        After :meth:`stop` the log file is gone; the last MiB of it is kept
        in memory.
        """
        return self._log.text()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of :meth:`output`."""
        return self._log.tail(lines)

    # --------------------------------------------------------------- launch

    def start(self) -> "ServerProcess":
        """Launch and return once ``ready_successes`` checks in a row passed."""
        __tracebackhide__ = True  # pytest: a failed start points at the test's line
        with self._lock:
            if self._launched is not None:
                return self
            scaled(self.start_timeout)  # a bad factor raises here, before anything starts
            launch.prepare(self.spec)   # the launchers this start needs, started on first use
            deadline = Deadline(scaled(self.start_timeout))
            self._make_dir()
            relaunches = 0
            _log.info("starting server %r", self.name)
            while True:
                try:
                    self._launch(deadline)
                    result = self._wait(deadline)
                except BaseException as exc:
                    # An interrupted start keeps nothing; a failed one keeps its log
                    # if a server ran and wrote something.
                    keep = isinstance(exc, Exception) and self._log.launch_id > 0 \
                        and self._log.size() > 0
                    self._end(grace=0.0, keep_log=keep, check_port=False)
                    raise
                if result.ok:
                    _log.info("server %r ready in %.3f s (pid %s, %s%s)", self.name,
                              deadline.elapsed(), self.pid, self.url,
                              ", warm" if self.warm else "")
                    return self
                lost = self._lost_port(result)
                if lost and self.spec.port is None and not self.handoff \
                        and not self.spec.unix_socket and relaunches < MAX_RELAUNCHES \
                        and not deadline.expired:
                    relaunches += 1
                    message = (f"port {self.port} was lost ({lost}); relaunching on a new "
                               f"port (relaunch {relaunches} of {MAX_RELAUNCHES})")
                    self._log.note(message)
                    _log.info("server %r: %s", self.name, message)
                    self._end_launch(grace=0.0)
                    self._release_port()
                    continue
                try:
                    error = self._fail_start(result, deadline, lost)
                finally:
                    self._remove_dir()  # whatever happened while describing the failure
                raise error

    def _make_dir(self) -> None:
        self._dir = marker.make_private_dir()
        try:
            supervisor.register_dir(self._dir)
            self._log.create(self._dir)
            self._files = {}
            if self.spec.kind == "app":
                assert self.app_code is not None
                self._files["app"] = marker.write_private(os.path.join(self._dir, "app.py"),
                                                          self.app_code.encode("utf-8"))
        except BaseException:
            self._remove_dir()
            raise

    def _take_port(self) -> None:
        from .ports import lease_for_server  # one shuffle per (host, range), not one per server
        self._lease = lease_for_server(self.host, self.spec.port_range, self.spec.port)
        self.port = self._lease.port

    def _take_address(self) -> None:
        """Lease the port (or make the socket path); with handoff also bind and listen."""
        if self.spec.unix_socket:
            assert self._dir is not None
            self.socket_path, extra = address.socket_path(self._dir)
            if extra is not None:
                supervisor.register_dir(extra)  # removed with the rest if the runner dies
            if self.handoff:
                self._listener = address.unix_listener(self.socket_path)
            return
        from .ports import listening_socket
        for attempt in range(MAX_RELAUNCHES + 1):
            self._take_port()
            assert self.port is not None
            if not self.handoff:
                return
            try:
                self._listener = listening_socket(self.host, self.port)
                return
            except PortUnavailable:
                self._release_port()
                if self.spec.port is not None or attempt == MAX_RELAUNCHES:
                    raise
        raise AssertionError("unreachable")

    def _launch(self, deadline: Deadline) -> None:
        self._take_address()
        self.listen_inode = (os.fstat(self._listener.fileno()).st_ino
                             if self._listener is not None else None)
        self.server_id = marker.new_server_id()
        markers = {marker.OWNER_ENV: marker.owner_token(), marker.SERVER_ID_ENV: self.server_id}
        assert self._dir is not None
        log_fd = self._log.open_for_launch()
        try:
            launched = launch.launch(
                self.spec, port=self.port, socket_path=self.socket_path, markers=markers,
                directory=self._dir, files=self._files, log_fd=log_fd,
                listen_fd=self._listener.fileno() if self._listener is not None else None,
                deadline=deadline)
        except supervisor.LaunchError as exc:
            self._release_port()
            self.command = exc.command
            raise self._launch_error(exc, exc.command) from None
        finally:
            os.close(log_fd)
            # The server has its copy.  Ours would keep the socket open after the
            # server died: a probe would wait on it instead of being refused.
            self._close_listener()
        self._launched = launched
        self.pid = launched.pid
        self.command = launched.command
        self.warm = launched.warm
        self.returncode = None
        self._read_offset = None
        safety_net.add(self)

    def _launch_error(self, exc: supervisor.LaunchError, command: List[str]) -> ServerStartError:
        from ._server.diagnostics import shown
        if exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR):
            fix = "fix the command (is the program installed, on PATH and executable?)"
        elif exc.detail:
            fix = "fix the import error above (the preload or target module)"
        else:
            fix = "see the error above; the next start launches a fresh launcher"
        lines = [f"could not launch server {self.name!r}: {exc}", f"  command: {shown(command)}",
                 f"  cwd: {self.cwd or os.getcwd()}"]
        if exc.detail:
            lines.extend("    " + line for line in exc.detail.rstrip().splitlines())
        lines.append(f"  fix: {fix}")
        return ServerStartError("\n".join(lines))

    def _exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the server to exit; True if it has (or never ran)."""
        launched = self._launched
        if launched is None:
            return True
        if launched.link.exited(max(timeout, 0.0)):
            if launched.link.status is not None:
                self.returncode = launched.link.status
            return True
        return False

    def _died(self) -> bool:
        """Whether the server has exited on its own (before a stop).

        Its keeper reports the exit at once, but a report may still be on
        its way when the kernel already shows the process dead: then wait
        for it, briefly, so "died before stop()" is told every time.
        """
        if self._exited(0):
            return True
        if self.pid is not None and proc.HAVE_PROC and proc.is_dead(self.pid):
            return self._exited(scaled_for_cleanup(1.0))
        return False

    def _wait(self, deadline: Deadline) -> Ready:
        expects_listener = self.spec.listens and not self.spec.unix_socket
        verify = self._verify_listener if expects_listener else None
        self._unbound.reset()
        watch = ownership.PortWatch(self._tree, self.port) if expects_listener \
            and not self.handoff and self.port is not None else None
        return wait_ready(self, self.check, successes=self.ready_successes, deadline=deadline,
                          exited=self._exited, verify=verify, watch=watch)

    def _tree(self) -> List[int]:
        assert self.pid is not None
        keeper = self._launched.link.keeper_pid if self._launched else None
        return ownership.tree_pids(self.pid, keeper)

    def _verify_listener(self) -> Optional[Outcome]:
        """A failing outcome if a listener on our port is not the server's, or none is yet.

        A callable or log check can pass before the server listens: while
        the server's tree works, ready waits for its listener on $PORT.  A
        tree that passed its check and sits idle with nothing on the port
        is a process without one (a worker), ready as its check says.
        """
        if self.port is None or self.pid is None:
            return None
        tree = self._tree()
        split = ownership.split_listeners(self.port, tree)
        if split is None:
            return None  # cannot tell (not Linux)
        ours, foreign = split
        if foreign:
            who = "; ".join(ownership.describe_foreign(item) for item in foreign[:3])
            return Outcome(False, f"port answered by another process: {who}", foreign=True)
        if not ours:
            idle = self._unbound.idle_for(tree, time.monotonic())
            if idle < scaled_for_cleanup(UNBOUND_IDLE):
                return Outcome(False, f"check passed, but nothing listens on port {self.port} "
                                      f"yet", "the server still works towards it, or has no "
                                              "port: say listens=False then")
            return None
        self._unbound.reset()
        if self._launched is not None and self._launched.subreaper \
                and not ownership.held_by(ours, ownership.own_tree(self.pid)):
            # Only orphans the keeper adopted listen: the server forked a daemon and
            # is on its way out.  Not ready; its exit will be reported as such.
            return Outcome(False, "port held by a process the server left behind "
                                  "(it daemonized?)")
        return None

    def _lost_port(self, result: Ready) -> str:
        if result.reason is WaitEnd.PORT_LOST:
            return result.tally.last_label
        if result.reason is WaitEnd.EXITED:
            text, _ = self._log.read(self._log.offset, 256 * 1024)
            if _ADDR_IN_USE.search(text):
                return "the server reported 'address already in use'"
        return ""

    def _fail_start(self, result: Ready, deadline: Deadline, lost: str) -> ServerStartError:
        """Gather the facts while the process exists, stop it, keep its log, describe it."""
        elapsed = deadline.elapsed()
        other = set()
        if result.reason is not WaitEnd.EXITED and self.pid is not None \
                and self.spec.uses_port and self.port is not None:
            other = ownership.listen_ports(self._tree()) - {self.port}
        where = f"unix socket {self.socket_path}" if self.spec.unix_socket else self.url
        try:
            self._end(grace=scaled_for_cleanup(min(self.stop_timeout, 1.0)), keep_log=False,
                      check_port=False, forget_log=False)
        except HarnessError as exc:  # (processes that survived SIGKILL): said, not hidden
            self._log.note(str(exc))
        reason = WaitEnd.PORT_LOST if result.reason is not WaitEnd.EXITED and lost \
            else result.reason
        log_lines = self._log.excerpt(LOG_TAIL_LINES // 2)
        kept = self._keep_log()
        self._remove_dir()
        facts = StartFacts(
            name=self.name, reason=reason, elapsed=elapsed, returncode=self.returncode,
            command=self.command, pid=self.pid, where=where, handoff=self.handoff,
            check=repr(self.check), successes=self.ready_successes,
            summary=result.tally.summary(), counts=dict(result.tally.counts),
            details=dict(result.tally.details), other_ports=other, port=self.port, lost=lost,
            fixed_port=self.spec.port is not None, deadline_seconds=deadline.seconds or 0.0,
            start_timeout=self.start_timeout, factor=_factor(), log_lines=log_lines,
            log_path=kept, warm=self.warm, not_kept=self._log.why_not_kept)
        cls, message = start_failure(facts)
        _log.info("server %r failed to start: %s", self.name, message.splitlines()[0])
        return cls(message, returncode=self.returncode, log_path=kept,
                   log_tail=self._log.tail(LOG_TAIL_LINES), outcomes=result.tally.as_dict())

    # ----------------------------------------------------------------- stop

    def stop(self) -> Optional[int]:
        """Stop the server and clean up; idempotent.  Returns the exit code.

        An ``app_code`` or ``target`` server exits with 143 on SIGTERM (it
        shuts down gracefully); a negative code is the signal that killed it.
        """
        with self._lock:
            running = self._launched is not None
            started = time.monotonic()
            died = running and self._died()
            self._end(grace=scaled_for_cleanup(self.stop_timeout), keep_log=died,
                      check_port=True, died_alone=died)
            if running:
                _log.info("server %r stopped in %.3f s (%s)", self.name,
                          time.monotonic() - started, describe_exit(self.returncode))
            return self.returncode

    def _end_launch(self, grace: float) -> List[ProcessId]:
        """End the current launch's process tree (keeper, or by hand if it is gone)."""
        launched, self._launched = self._launched, None
        if launched is None:
            return []
        kill_wait = scaled_for_cleanup(KILL_WAIT)
        try:
            survivors = launched.link.stop(grace, kill_wait)
        except supervisor.KeeperLost:
            survivors = self._stop_by_hand(launched, kill_wait)
        else:
            if not launched.subreaper:
                survivors += self._stop_escapees(kill_wait)  # no subreaper: marked escapees
        if launched.link.status is not None:
            self.returncode = launched.link.status
        launched.link.close()
        safety_net.discard(self)
        self._close_listener()
        return survivors

    def _stop_by_hand(self, launched: launch.Launched, kill_wait: float) -> List[ProcessId]:
        """The keeper is gone (killed): end the server and its marked processes ourselves."""
        server = launched.link.identity
        marked = self._stop_escapees(kill_wait, also=[server] if server else [])
        if self.returncode is None and launched.link.status is not None:
            self.returncode = launched.link.status
        return marked

    def _stop_escapees(self, kill_wait: float, also: Sequence[ProcessId] = ()) -> List[ProcessId]:
        server_id = self.server_id

        def members() -> List[ProcessId]:
            found = [m for m in also if kill.is_alive(m)]
            for root in list(found):  # what the server still parents, marker or not
                found += [m for m in kill.descendants(root.pid) if m not in found]
            found += [m for m in kill.find_marked(marker.SERVER_ID_ENV, server_id)
                      if m not in found]
            return found
        return kill.stop_tree(members, grace=0.0, kill_wait=kill_wait)

    def _end(self, grace: float, keep_log: bool, check_port: bool, died_alone: bool = False,
             forget_log: bool = True) -> None:
        """Stop whatever runs, check the address is free, release it, clean the dir."""
        ran = self._launched is not None
        survivors = self._end_launch(grace) if ran else []
        still_open = check_port and ran and self._address_accepts()
        self._close_listener()
        self._release_port()
        if keep_log:
            kept = self._keep_log()
            if died_alone:
                _log.warning("server %r (pid %s) %s before stop(); its log is kept at %s",
                             self.name, self.pid, describe_exit(self.returncode), kept)
        if forget_log:
            self._remove_dir()
        if survivors:
            raise HarnessError(
                f"server {self.name!r}: {len(survivors)} process(es) survived SIGKILL "
                f"(stuck in the kernel?): {', '.join(str(s) for s in survivors[:5])}")
        if still_open:
            where = f"socket {self.socket_path}" if self.spec.unix_socket else f"port {self.port}"
            raise HarnessError(
                f"{where} still accepts connections after server {self.name!r} was stopped: "
                f"held by {self._holder()}; that process is not the server's (the server's "
                f"whole process tree is gone): stop it, it took the server's address")

    def _holder(self) -> str:
        if self.spec.unix_socket or self.port is None:
            return "an unknown process"
        return procinfo.describe_port_holders(self.port)

    def _keep_log(self) -> Optional[str]:
        """Move the log to the kept-logs folder (once); its path there."""
        path = self._log.path
        if path is None or not self._log.exists:
            return None
        if self._dir is None or not path.startswith(self._dir + os.sep):
            return path  # kept already
        return self._log.keep(self.name, self.pid)

    def _emergency_stop(self) -> None:
        """For signal handlers: a normal stop if nothing holds the server, else a fast kill."""
        if self._lock.acquire(blocking=False):
            try:
                launched = self._launched
                if launched is None or launched.link.available():
                    self._end(grace=scaled_for_cleanup(self.stop_timeout), keep_log=False,
                              check_port=False)
                    return
            finally:
                self._lock.release()
        launched = self._launched
        if launched is not None and launched.link.keeper_pid:
            keeper = procinfo.identity(launched.link.keeper_pid)
            if keeper is not None:
                # The keeper ends the server's tree on SIGTERM, and exits.
                kill.signal_process(keeper, signal.SIGTERM)

    def _address_accepts(self) -> bool:
        """True if something still accepts on the server's address after its tree is gone."""
        if self.spec.unix_socket:
            return address.accepts(None, None, self.socket_path)
        return address.accepts(self.host, self.port, None)

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()  # the server has its copy; ours would keep the port open

    def _release_port(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    def _remove_dir(self) -> None:
        directory, self._dir = self._dir, None
        if directory is None:
            return
        self._log.remember()
        try:
            supervisor.register_dir(directory, add=False)
        except Exception:
            pass
        address.remove_socket_dir(directory)
        shutil.rmtree(directory, ignore_errors=True)
        if self._log.path and self._log.path.startswith(directory + os.sep):
            self._log.path = None

    # ------------------------------------------------------------ waiting

    def wait_for_log(self, pattern: Union[str, "re.Pattern[str]"],
                     timeout: float = 10.0) -> "re.Match[str]":
        """Wait for a line of new output that matches ``pattern``; the match.

        Reads only what is new: the first call from the start of the current
        launch's output, each later one from the end of the line the
        previous call matched.  ``timeout`` is multiplied by
        ``HARNESS_TIMEOUT_FACTOR``; :class:`~harness.errors.WaitTimeout` at
        the deadline, :class:`~harness.errors.HarnessError` if the server
        exits first (both with the output that was read).
        """
        regex = _validate.pattern(pattern)
        limit = _validate.seconds(timeout, "timeout")
        deadline = Deadline(scaled(limit))
        offset = self._read_offset if self._read_offset is not None else self._log.offset
        looks = 0
        while True:
            looks += 1
            match, after = self._log.find(regex, offset)
            if match is not None:
                self._read_offset = after
                return match
            if self._launched is None or self._exited(0):
                raise HarnessError(
                    f"server {self.name!r} {self.state} while waiting for {regex.pattern!r} "
                    f"in its output; last lines:\n" + _indent(self.log_tail(10)))
            if deadline.expired:
                raise WaitTimeout(
                    f"{regex.pattern!r} did not appear in the output of server {self.name!r} "
                    f"within {deadline.seconds:.1f} s ({looks} looks); last lines:\n"
                    + _indent(self.log_tail(10)), what=f"log line {regex.pattern!r}",
                    waited=deadline.elapsed(), attempts=looks, last=self.log_tail(10))
            # Waiting on the exit is the pause: an exit ends it at once.
            self._exited(deadline.cap(poll_interval(deadline.elapsed())))

    # ------------------------------------------------------------ talking

    def request(self, method: str, path: str = "/", **kwargs: Any) -> Response:
        """``harness.http.request`` against this server; errors carry the log tail."""
        from .http import request
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        if self.spec.unix_socket and self.socket_path:
            kwargs.setdefault("unix_socket", self.socket_path)
        if self.spec.https:
            kwargs.setdefault("verify", self.ssl_context or True)
        try:
            return request(method, self.url + path, **kwargs)
        except HarnessError as exc:
            self._attach_tail(exc)
            raise

    def get(self, path: str = "/", **kwargs: Any) -> Response:
        """``request("GET", path, **kwargs)``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str = "/", **kwargs: Any) -> Response:
        """``request("POST", path, **kwargs)``."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str = "/", **kwargs: Any) -> Response:
        """``request("PUT", path, **kwargs)``."""
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str = "/", **kwargs: Any) -> Response:
        """``request("PATCH", path, **kwargs)``."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str = "/", **kwargs: Any) -> Response:
        """``request("DELETE", path, **kwargs)``."""
        return self.request("DELETE", path, **kwargs)

    def memory(self) -> int:
        """Resident memory of the server and its children, in bytes."""
        from .memory import rss
        if self.pid is None or not self.running:
            raise HarnessError(f"server {self.name!r} is not running; start() it first")
        return rss(self.pid, children=True)

    def _attach_tail(self, exc: BaseException) -> None:
        tail = self.log_tail()
        state = self.state
        # The state as of the failure: a server that crashed on this request
        # may still be exiting (a failure report shows its state again later).
        head = f"server {self.name!r} (pid {self.pid}, {state} when the request failed)"
        note = (f"{head} log tail:\n" + "\n".join("    " + line for line in tail.splitlines())
                if tail else f"{head}: log is empty")
        exc.server_log_tail = tail  # type: ignore[attr-defined]
        # What the message shows, so a failure report need not show it again
        # (unless the server's state has changed since: then it is news).
        exc.server_log_shown = (self.log_path, state)  # type: ignore[attr-defined]
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (exc.args[0] + "\n" + note,) + tuple(exc.args[1:])

    # --------------------------------------------------------- contextmgr

    def __enter__(self) -> "ServerProcess":
        __tracebackhide__ = True
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_server(app_code: Optional[str] = None, **kwargs: Any) -> ServerProcess:
    """``ServerProcess(...).start()``."""
    __tracebackhide__ = True
    return ServerProcess(app_code, **kwargs).start()


# ------------------------------------------------------------------ helpers

def _factor() -> float:
    try:
        return timeout_factor()
    except ValueError:
        return 1.0


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines()) or "    (no output)"


__all__ = ["ServerProcess", "start_server", "describe_exit"]
