"""``ServerProcess``: launch a server, prove it ready, stop it, leave nothing behind.

The life of one server, each step a part of its own (``harness/_server/``):

1. Arguments are checked before anything happens (:mod:`._server.spec`).
2. A port is leased (or a Unix socket path made) and a private 0700 temp
   dir holds the app code, the log and the server's own ``TMPDIR``; the
   server is launched through a zygote, under a keeper that is its parent
   and a subreaper (:mod:`._server.launch`, :mod:`._server.zygote`).
3. Readiness is probed with a proportional backoff while the keeper
   reports the exit at once: a crash is reported immediately with the
   command, exit code or signal, what every probe saw and the head and
   tail of the log (:mod:`._server.diagnostics`).  Every listener on the
   port must belong to the server's process tree (:mod:`._server.ownership`).
4. ``stop()`` asks the keeper to end the server's whole subtree (SIGCONT +
   SIGTERM, ``stop_timeout``, SIGKILL), confirms the port no longer
   accepts connections, releases the lease and removes the temp dir.

The contract is in README.rst, "Servers"; DEVELOPING.rst has the map.
"""
from __future__ import annotations

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
from ._server.diagnostics import StartFacts, describe_exit, launch_failure, start_failure
from ._server.log import ServerLog
from ._server.spec import PathLike, ServerSpec, Verify
from ._wait import Deadline, poll_interval
from .checks import Check, HealthSpec, Ready, WaitEnd, wait_ready
from .errors import HarnessError, PortUnavailable, ServerStartError, WaitTimeout
from .http import Response

_log = logging.getLogger("harness.process")

LOG_TAIL_LINES = 40
MAX_RELAUNCHES = 3
KILL_WAIT = 5.0   # after SIGKILL, how long processes may take to disappear
# A check that does not talk to the port passed, and the server's tree listens
# nowhere: how long to wait for its listener before taking it for a process
# without a port (the wait is logged; listens=False skips it).  Also how long
# a server may listen on other ports only before a warning says so.
LISTENER_GRACE = 1.0
# Waits harness adds beyond the user's own check are logged from this long.
NOTABLE_WAIT = 0.05
_ADDR_IN_USE = re.compile(r"address already in use|EADDRINUSE|errno (98|48)\b", re.I)
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path holds 108 bytes (104 on macOS)


class ServerProcess:
    """A server process under test; see README.rst, "Servers".

    >>> with ServerProcess(app_code=APP) as server:   # doctest: +SKIP
    ...     server.get("/health").status
    200
    """

    def __init__(self, app_code: Optional[str] = None, *, argv: Optional[Sequence[str]] = None,
                 target: Optional[Callable[..., Any]] = None, args: Sequence[Any] = (),
                 kwargs: Optional[Mapping[str, Any]] = None,
                 preload: Optional[Sequence[str]] = None, host: str = "127.0.0.1",
                 port: Optional[int] = None, port_range: Optional[Sequence[int]] = None,
                 handoff: bool = False, unix_socket: Union[bool, PathLike] = False,
                 env: Optional[Mapping[str, Optional[str]]] = None,
                 cwd: Optional[PathLike] = None, health: HealthSpec = "/health",
                 ready_successes: Optional[int] = None, start_timeout: float = 10.0,
                 stop_timeout: float = 5.0, name: Optional[str] = None, https: bool = False,
                 verify: Verify = True, listens: Optional[bool] = None,
                 user: Optional[Union[str, int]] = None,
                 stop_signal: int = signal.SIGTERM) -> None:
        self.spec = ServerSpec.checked(
            app_code, argv=argv, target=target, args=args, kwargs=kwargs, preload=preload,
            host=host, port=port, port_range=port_range, handoff=handoff,
            unix_socket=unix_socket, env=env, cwd=cwd, health=health,
            ready_successes=ready_successes, start_timeout=start_timeout,
            stop_timeout=stop_timeout, name=name, https=https, verify=verify, listens=listens,
            user=user, stop_signal=stop_signal)
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
        self._owner: Optional[int] = None  # the process that started it (stop is its alone)
        self._binds_port = False  # seen listening on $PORT, or relaunched for losing it
        self._proof: Optional[ownership.ListenerProof] = None  # the current launch's
        self._lease: Any = None
        self._listener: Optional[socket.socket] = None
        self._dir: Optional[str] = None
        self._files: Dict[str, str] = {}
        self._read_offset: Optional[int] = None  # wait_for_log goes on from here
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ info

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (``https``; ``http://localhost`` for a Unix-socket server,
        whose requests go to :attr:`socket_path`); a ``listens=False`` server has none."""
        scheme = "https" if self.spec.https else "http"
        if self.spec.unix_socket:
            return f"{scheme}://localhost"
        if self.spec.listens is False:
            raise HarnessError(f"server {self.name!r} has no address: it was made with "
                               f"listens=False (a process without a port)")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def where(self) -> str:
        """Where the server listens, in words: its URL, ``unix:PATH`` or ``no port``."""
        if self.spec.unix_socket:
            return f"unix:{self.socket_path or self.spec.socket_path or '(not made yet)'}"
        if self.spec.listens is False:
            return "no port"
        return self.url

    @property
    def log_path(self) -> Optional[str]:
        return self._log.path

    @property
    def log_offset(self) -> int:
        """Where the current launch's output starts in the log."""
        return self._log.offset

    @property
    def launch_id(self) -> int:
        return self._log.launch_id

    @property
    def running(self) -> bool:
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
        return f"<ServerProcess {self.name!r} pid={self.pid} {self.where} {self.state}>"

    def output(self, since: int = 0) -> str:
        """What the server wrote to stdout and stderr, from byte ``since`` of its log on.

        ``since`` is a :meth:`log_mark` taken earlier (``0``: everything).
        After :meth:`stop` the log file is gone; the last MiB of it is kept
        in memory.
        """
        return self._log.text(_validate.check_offset(since, "since"))

    def log_mark(self) -> int:
        """Where the output ends now: pass it to ``output(since=...)`` later to read only
        what the server wrote after this moment."""
        return self._log.size() if self._log.exists else self._log.kept_from + len(
            self._log.kept_output.encode("utf-8", "replace"))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return self._log.tail(lines)

    # --------------------------------------------------------------- launch

    def start(self) -> "ServerProcess":
        """Launch and return once ``ready_successes`` checks in a row passed."""
        __tracebackhide__ = True  # pytest: a failed start points at the test's line
        with self._lock:
            if self._launched is not None:
                return self
            scaled(self.start_timeout)  # a bad factor raises here, before anything starts
            prepared = Deadline(None)
            launch.prepare(self.spec)   # the launchers this start needs, started on first use
            preparing = prepared.elapsed()
            deadline = Deadline(scaled(self.start_timeout))
            self._make_dir()
            relaunches = 0
            _log.info("starting server %r", self.name)
            while True:
                try:
                    self._launch(deadline)
                    launched = deadline.elapsed()
                    result = self._wait(deadline)
                except BaseException as exc:
                    # An interrupted start keeps nothing; a failed one keeps its log
                    # if a server ran and wrote something.
                    keep = isinstance(exc, Exception) and self._log.launch_id > 0 \
                        and self._log.size() > 0
                    self._end(grace=0.0, keep_log=keep, check_port=False)
                    raise
                if result.ok:
                    self._report_ready(result, launched, preparing, relaunches)
                    return self
                lost = self._lost_port(result)
                if lost and self.spec.port is None and not self.handoff \
                        and not self.spec.unix_socket and relaunches < MAX_RELAUNCHES \
                        and not deadline.expired:
                    relaunches += 1
                    self._binds_port = True  # it wanted the port it lost: it binds $PORT
                    message = (f"port {self.port} was lost ({lost}); relaunching on a new "
                               f"port (relaunch {relaunches} of {MAX_RELAUNCHES})")
                    self._log.note(message)
                    _log.warning("server %r: %s", self.name, message)
                    self._end_launch(grace=0.0)
                    self._release_port()
                    continue
                try:
                    error = self._fail_start(result, deadline, lost)
                finally:
                    self._remove_dir()  # whatever happened while describing the failure
                raise error

    def _report_ready(self, result: Ready, launched: float, preparing: float,
                      relaunches: int) -> None:
        """The INFO line of a start: how its time was spent; a WARNING for a wait of ours."""
        def ms(seconds: Optional[float]) -> str:
            return f"{1000 * (seconds or 0.0):.1f} ms"
        steps = []
        if preparing >= 0.001:
            steps.append(f"launchers started in {ms(preparing)} (not counted)")
        steps.append(f"launched in {ms(launched)}")
        probes = f"{result.probes} probe{'s' if result.probes != 1 else ''}"
        steps.append(f"check passed at {ms(result.first_pass)} after {probes}")
        steps.append(f"{self.ready_successes} pass{'es' if self.ready_successes != 1 else ''} "
                     f"in a row at {ms(result.done)}")
        if result.verifying >= 0.0001:
            steps.append(f"listener proof {ms(result.verifying)}")
        proof = self._proof
        if proof is not None and proof.where:
            steps.append(f"it listens on {proof.where}, not on its $PORT {self.port}")
        if proof is not None and proof.without_port:
            steps.append("taken for a process without a port")
        if relaunches:
            steps.append(f"{relaunches} relaunch{'es' if relaunches != 1 else ''} on a new port")
        where = self.where if proof is None or not (proof.where or proof.without_port) \
            else f"{self.where} unused"
        _log.info("server %r ready in %.3f s (pid %s, %s%s): %s", self.name, result.done or 0.0,
                  self.pid, where, ", warm" if self.warm else "", "; ".join(steps))
        if proof is not None and proof.without_port:
            _log.warning(
                "server %r passed its check, but its process tree listens nowhere (no TCP "
                "port, no Unix socket): waited %.3f s for a listener, then took it for a "
                "process without a port.  Pass listens=False if it has no port (no wait, no "
                "port leased); if it is a server whose check passes before it listens, make "
                "the check talk to it (HttpCheck, TcpCheck)", self.name, proof.waited)
        elif proof is not None and proof.waited >= NOTABLE_WAIT:
            _log.warning(
                "server %r passed its check %.3f s before it listened on $PORT %s: waited "
                "%.3f s for a listener.  A check that talks to the server (HttpCheck, TcpCheck) "
                "passes only once it listens; pass listens=False for a process without a port",
                self.name, proof.waited, self.port, proof.waited)

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
            marker.give_to(self._dir, self.spec.uid, self.spec.gid)  # user=: the server's own
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
            self._take_socket_path()
            return
        if self.spec.listens is False:
            return  # a process without a port gets none
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

    def _take_socket_path(self) -> None:
        """The test's own path (``unix_socket=PATH``), or one made in the private dir."""
        if self.spec.socket_path is not None:
            self.socket_path = self.spec.socket_path
            try:
                address.check_free(self.socket_path)
            except FileExistsError as exc:
                raise HarnessError(f"server {self.name!r}: {exc}") from None
        else:
            assert self._dir is not None
            self.socket_path, extra = address.socket_path(self._dir)
            if extra is not None:
                supervisor.register_dir(extra)  # removed with the rest if the runner dies
                marker.give_to(extra, self.spec.uid, self.spec.gid)
        if self.handoff:
            self._listener = address.unix_listener(self.socket_path)

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
            if exc.orphan is not None:  # its keeper died before confirming it: ours to end
                self._stop_escapees(scaled_for_cleanup(KILL_WAIT), also=[exc.orphan])
            self._release_port()
            self.command = exc.command
            raise self._launch_error(exc, exc.command) from None
        finally:
            os.close(log_fd)
            # The server has its copy.  Ours would keep the socket open after the
            # server died: a probe would wait on it instead of being refused.
            self._close_listener()
        self._launched = launched
        self._owner = os.getpid()
        self.pid = launched.pid
        self.command = launched.command
        self.warm = launched.warm
        self.returncode = None
        self._read_offset = None
        safety_net.add(self)

    def _launch_error(self, exc: supervisor.LaunchError, command: List[str]) -> ServerStartError:
        return ServerStartError(launch_failure(
            self.name, str(exc), errno=exc.errno, detail=exc.detail,
            keeper_died=exc.orphan is not None, command=command, cwd=self.cwd or os.getcwd(),
            preload=self.spec.preload))

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
        """Probe until ready; on a TCP port, every passed streak is checked against the
        facts of where the server's tree listens (:class:`ownership.ListenerProof`)."""
        self._proof = None
        watch = None
        if self.spec.uses_port and self.port is not None:
            grace = scaled_for_cleanup(LISTENER_GRACE)
            subreaper = self._launched is not None and self._launched.subreaper
            self._proof = ownership.ListenerProof(
                self.port, self._tree, check_uses_port=self.check.uses_port,
                expects_port=self.spec.listens is True or self._binds_port, grace=grace,
                daemon_check=self._only_orphans_listen if subreaper else None)
            if not self.handoff:
                watch = ownership.WrongPortWatch(self.port, self._tree, grace, self._warn)
        result = wait_ready(self, self.check, successes=self.ready_successes, deadline=deadline,
                            exited=self._exited, verify=self._proof, watch=watch)
        if self._proof is not None and self._proof.seen_on_port:
            self._binds_port = True
        return result

    def _warn(self, message: str) -> None:
        _log.warning("server %r %s", self.name, message)

    def _tree(self) -> List[int]:
        assert self.pid is not None
        keeper = self._launched.link.keeper_pid if self._launched else None
        return ownership.tree_pids(self.pid, keeper)

    def _only_orphans_listen(self, ours: List[Any]) -> bool:
        """True if only orphans the keeper adopted hold the listeners: the server forked a
        daemon and is on its way out (its exit will be reported as such)."""
        assert self.pid is not None
        return not ownership.held_by(ours, ownership.own_tree(self.pid))

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
        where = f"unix socket {self.socket_path}" if self.spec.unix_socket else self.where
        keeper_lost = result.reason is WaitEnd.EXITED and self._launched is not None \
            and self._launched.link.lost and self.returncode is None
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
            log_path=kept, warm=self.warm, not_kept=self._log.why_not_kept,
            keeper_lost=keeper_lost)
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
            if running and self._owner != os.getpid():
                # A forked child (multiprocessing's fork) leaving its copy of the
                # parent's `with server:` block: the server is the parent's.
                _log.debug("server %r belongs to process %s; process %s leaves it running",
                           self.name, self._owner, os.getpid())
                return self.returncode
            started = time.monotonic()
            died = running and self._died()
            grace = scaled_for_cleanup(self.stop_timeout)
            self._end(grace=grace, keep_log=died, check_port=True, died_alone=died)
            if running:
                took = time.monotonic() - started
                _log.info("server %r stopped in %.3f s (%s)", self.name, took,
                          describe_exit(self.returncode))
                if not died and self.returncode == -signal.SIGKILL and took >= grace:
                    _log.warning(
                        "server %r did not exit within stop_timeout=%g s of SIGTERM and was "
                        "killed: make it exit on SIGTERM, or lower stop_timeout",
                        self.name, self.stop_timeout)
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
        if ran and self.spec.socket_path is not None and not still_open:
            address.remove_socket(self.spec.socket_path)  # the test's path: no stale file
        if ran and self.warm and self._dir is not None:
            launch.learn(self.spec, self._dir)  # what it imported, for the next one
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
                     timeout: float = 10.0, *, literal: bool = False) -> "re.Match[str]":
        """Wait for a line of new output that matches ``pattern``; the match.

        ``pattern`` is a regex, or with ``literal=True`` plain text to find
        as it is (``"GET /a?b=1"``).  Reads only what is new: the first call
        from the start of the current launch's output, each later one from
        the end of the line the previous call matched.  ``timeout`` is
        multiplied by ``HARNESS_TIMEOUT_FACTOR``;
        :class:`~harness.errors.WaitTimeout` at the deadline,
        :class:`~harness.errors.HarnessError` if the server exits first
        (both with the output that was read).
        """
        if _validate.check_bool(literal, "literal"):
            if not isinstance(pattern, str):
                raise TypeError(f"with literal=True, pattern must be a str, got {pattern!r}")
            pattern = re.escape(pattern)
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
        return self.request("GET", path, **kwargs)

    def post(self, path: str = "/", **kwargs: Any) -> Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str = "/", **kwargs: Any) -> Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str = "/", **kwargs: Any) -> Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str = "/", **kwargs: Any) -> Response:
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
        # Whose log the message shows (this launch's), so that a failure
        # report shows only what came after it.
        exc.server_log_shown = self.server_id  # type: ignore[attr-defined]
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
