"""``ServerProcess``: launch a server, prove it ready, stop it, leave nothing behind.

The class is a thin face over the parts in ``harness/_server/``, one per
step of a server's life:

1. the arguments are checked before anything happens (``_server/spec.py``);
2. its private 0700 dir holds the app file, the log and the server's own
   ``TMPDIR`` (``_server/workdir.py``); its address is a leased port, a
   handed-off socket or a Unix socket path (``_server/address.py``);
3. it is launched through a zygote, under a keeper that is its parent and
   a subreaper (``_server/launch.py``, ``_server/zygote.py``);
4. readiness is probed with a proportional backoff while the keeper
   reports an exit at once, and every passed streak is checked against
   where the server's tree listens (``_server/ownership.py``); a failure
   says what happened (``_server/diagnostics.py``);
5. ``stop()`` has the keeper end the whole subtree (stop signal,
   ``stop_timeout``, SIGKILL), confirms nothing accepts at the address,
   gives the address back and removes the dir.

The contract is in the manual (docs/servers.rst); DEVELOPING.rst has the map.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import ssl
import threading
import time
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _http_wire, _validate
from ._config import scaled, scaled_for_cleanup, timeout_factor
from ._os import kill, proc, procinfo
from ._os.identity import ProcessId
from ._server import launch, ownership, safety_net
from ._server.address import ServerAddress
from ._server.diagnostics import (
    ReadyFacts,
    StartFacts,
    describe_exit,
    launch_failure,
    ready_report,
    start_failure,
)
from ._server.log import ServerLog
from ._server.spec import PathLike, ServerSpec, Verify
from ._server.supervisor import LaunchError
from ._server.workdir import WorkDir
from ._wait import Deadline
from .checks import Check, HealthSpec, Ready, WaitEnd, wait_ready
from .errors import HarnessError, ServerStartError
from .http import Response, request

_log = logging.getLogger("harness.process")

LOG_TAIL_LINES = 40
MAX_RELAUNCHES = 3
# A check that does not talk to the port passed, and the server's tree listens
# nowhere: how long to wait for its listener before taking it for a process
# without a port (the wait is logged; listens=False skips it).  Also how long
# a server may listen on other ports only before a warning says so.
LISTENER_GRACE = 1.0
_ADDR_IN_USE = re.compile(r"address already in use|EADDRINUSE|errno (98|48)\b", re.I)


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
    socket; neither with ``listens=False``) in its environment and must
    serve there.  The other arguments:

    * ``preload``: module names imported once by a warm launcher that each
      server forks from (``[]``: warm with no imports); ``target`` servers
      are warm by default.  ``HARNESS_WARM=0|1`` overrides.
    * ``host``: a numeric loopback address; ``port``: a fixed port (else a
      leased one, from ``port_range`` ``(low, high)`` if given).
    * ``handoff``: harness binds the socket and passes it as fd 3
      (``LISTEN_FDS=1``, ``LISTEN_PID``); ``unix_socket``: serve on a Unix
      socket at ``$SOCKET_PATH`` instead of a TCP port (``True``: a path
      harness makes; a path: the test's own).
    * ``env``: added to the inherited environment (``None`` removes a
      variable); ``cwd``: the working directory.
    * ``health``: when the server is ready -- a path (GET gives 200), a
      :class:`~harness.checks.Check`, a callable ``check(server)``, a list
      of these (all must pass, in order), or ``None`` (a TCP connection).
      ``ready_successes`` passes in a row are needed (default 2; 1 for a
      ``TcpCheck`` under ``handoff``, where the accepted probe proves it).
    * ``start_timeout``: seconds to become ready; ``stop_timeout``: seconds
      between the stop signal (``stop_signal``, default SIGTERM) and SIGKILL.
    * ``name``: for messages and reports; ``https``: talk TLS to it,
      verified as ``verify`` says (``True``, ``False``, a CA file, an
      :class:`ssl.SSLContext`).
    * ``listens``: ``None`` (default): where the server listens is found
      out when its check passes; ``True``: it listens on ``$PORT`` (ready
      waits for that); ``False``: a process without a port (a worker): no
      port leased, ready when its check, which must not talk to the port,
      passes.
    * ``user``: run the server as this user (name or uid; root only).

    Once started: ``pid``, ``port``, ``url``, ``socket_path``, ``log_path``,
    ``returncode`` (after it exited), ``running``, ``state``, ``warm`` (it
    was forked from a warm launcher) and ``command``.
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
        # Every argument by name, with the defaults above (written here only).
        arguments = dict(locals())
        del arguments["self"]
        self.spec = ServerSpec.checked(arguments)
        self.pid: Optional[int] = None
        self.returncode: Optional[int] = None
        self.command: List[str] = []
        self.server_id = ""  # the current launch's HARNESS_SERVER_ID
        self.warm = False
        # The TLS context for an https server's probes and requests (None: the
        # system's CAs).
        self.ssl_context: Optional[ssl.SSLContext] = (
            _http_wire.ssl_context(self.spec.verify) if self.spec.https else None)
        self._address = ServerAddress(self.spec)
        self._log = ServerLog()
        self._dir = WorkDir()
        self._launched: Optional[launch.Launched] = None
        self._owner: Optional[int] = None  # the process that started it (stop is its alone)
        self._binds_port = False  # seen listening on $PORT, or relaunched for losing it
        self._proof: Optional[ownership.ListenerProof] = None  # the current launch's
        self._read_offset: Optional[int] = None  # wait_for_log goes on from here
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------
    # What it is (read from the spec and the parts, nothing copied)

    @property
    def name(self) -> str:
        """For messages and reports."""
        return self.spec.name

    @property
    def host(self) -> str:
        """The numeric loopback address it listens on."""
        return self.spec.host

    @property
    def handoff(self) -> bool:
        """Whether the listening socket is handed to it (fd 3)."""
        return self.spec.handoff

    @property
    def check(self) -> Check:
        """Its readiness check."""
        return self.spec.check

    @property
    def ready_successes(self) -> int:
        """How many checks in a row must pass."""
        return self.spec.ready_successes

    @property
    def start_timeout(self) -> float:
        """Seconds it has to become ready (times ``HARNESS_TIMEOUT_FACTOR``)."""
        return self.spec.start_timeout

    @property
    def stop_timeout(self) -> float:
        """Seconds between its stop signal and SIGKILL."""
        return self.spec.stop_timeout

    @property
    def app_code(self) -> Optional[str]:
        """Its Python source (``app_code=``), if any."""
        return self.spec.app_code

    @property
    def cwd(self) -> Optional[str]:
        """Its working directory (``None``: the runner's)."""
        return self.spec.cwd

    @property
    def argv(self) -> Optional[List[str]]:
        """The program it runs, as given (placeholders not filled in)."""
        return list(self.spec.argv) if self.spec.argv is not None else None

    @property
    def port(self) -> Optional[int]:
        """Its TCP port (leased for it); ``None`` on a Unix socket or with ``listens=False``."""
        return self._address.port

    @property
    def socket_path(self) -> Optional[str]:
        """Its Unix socket's path (``unix_socket=``), once launched."""
        return self._address.socket_path

    @property
    def listen_inode(self) -> Optional[int]:
        """The inode of the listening socket handed over (``handoff=True``)."""
        return self._address.listen_inode

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (``https://`` with ``https=True``; ``http://localhost``
        for a Unix socket: requests go to ``socket_path``).  A ``listens=False`` server
        has none: :class:`~harness.HarnessError`."""
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
        return "no port" if self.spec.listens is False else self.url

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
        if self._keeper_lost():
            return "lost its keeper"
        return "not started"

    def _keeper_lost(self) -> bool:
        """The current launch's keeper died (was killed) with no exit to report: the
        server counts as ended, and ``stop()`` ends what is left of its tree."""
        launched = self._launched
        return launched is not None and launched.link.lost and launched.status is None

    def __repr__(self) -> str:
        return f"<ServerProcess {self.name!r} pid={self.pid} {self.where} {self.state}>"

    # -------------------------------------------------------------------------
    # Its output

    def output(self, since: int = 0) -> str:
        """What the server wrote to stdout and stderr, from byte ``since`` of its log on.

        ``since`` is a :meth:`log_mark` taken earlier (``0``: everything).
        After :meth:`stop` the log file is gone; the last MiB of it is kept
        in memory.
        """
        return self._log.text(_validate.whole(since, "since", at_least=0))

    def log_mark(self) -> int:
        """Where the output ends now: pass it to ``output(since=...)`` later to read only
        what the server wrote after this moment."""
        return self._log.end()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of :meth:`output`."""
        return self._log.tail(lines)

    def wait_for_log(self, pattern: Union[str, "re.Pattern[str]"],
                     timeout: float = 10.0, *, literal: bool = False) -> "re.Match[str]":
        """Wait for a line of new output that matches ``pattern``; the match.

        ``pattern`` is a regex, or with ``literal=True`` plain text found as
        it is (``"GET /a?b=1"``).  Reads only what is new: the first call
        from the start of the current launch's output, each later one from
        the end of the line the previous match was on.  ``timeout`` is
        multiplied by ``HARNESS_TIMEOUT_FACTOR``; :class:`~harness.WaitTimeout`
        at the deadline, :class:`~harness.HarnessError` if the server exits
        first (both with the output that was read).
        """
        regex = _validate.pattern(pattern, literal=literal)
        deadline = Deadline(scaled(_validate.seconds(timeout, "timeout")))
        offset = self._read_offset if self._read_offset is not None else self._log.offset
        match, self._read_offset = self._log.wait_for(
            regex, offset, deadline, ended=lambda seconds: self._launched is None
            or self._exited(seconds), name=self.name, state=lambda: self.state)
        return match

    # -------------------------------------------------------------------------
    # Start

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
            self._dir.make(self.spec, self._log)
            _log.info("starting server %r", self.name)
            relaunches = 0
            while True:
                result, launched = self._launch_and_wait(deadline)
                if result.ok:
                    self._report_ready(result, launched, preparing, relaunches)
                    return self
                lost = self._lost_port(result)
                if lost and relaunches < MAX_RELAUNCHES and not deadline.expired \
                        and self.spec.port is None and self.spec.uses_port and not self.handoff:
                    relaunches += 1
                    self._relaunch(lost, relaunches)
                    continue
                raise self._fail_start(result, deadline, lost)

    def _launch_and_wait(self, deadline: Deadline) -> Tuple[Ready, float]:
        """One launch and its readiness; whatever interrupts them leaves nothing behind
        (a failed launch keeps the log if the server wrote something)."""
        try:
            self._launch(deadline)
            launched = deadline.elapsed()
            return self._wait(deadline), launched
        except BaseException as exc:
            keep = isinstance(exc, Exception) and self._log.launch_id > 0 \
                and self._log.size() > 0
            survivors = self._end_tree(grace=0.0)
            self._address.release()
            if keep:
                self._keep_log()
            self._dir.remove(self._log)
            if survivors:
                _log.warning("%s", _survivors_message(self.name, survivors))
            raise

    def _launch(self, deadline: Deadline) -> None:
        assert self._dir.path is not None
        self._address.take(self._dir.path)
        log_fd = self._log.open_for_launch()
        try:
            launched = launch.launch(
                self.spec, port=self.port, socket_path=self.socket_path,
                directory=self._dir.path, files=self._dir.files, log_fd=log_fd,
                listen_fd=self._address.listener.fileno() if self._address.listener else None,
                deadline=deadline)
        except LaunchError as exc:
            self._address.release()
            self.command = exc.command
            # Its keeper may die after the program ran: what it wrote is kept and shown.
            log_lines = self._log.excerpt(LOG_TAIL_LINES // 2) if self._log.size() > 0 else []
            kept = self._keep_log() if log_lines else None
            raise ServerStartError(launch_failure(
                self.name, str(exc), errno=exc.errno, detail=exc.detail,
                keeper_died=exc.orphan is not None, command=exc.command,
                cwd=self.cwd or os.getcwd(), preload=self.spec.preload,
                log_lines=log_lines, log_path=kept), log_path=kept,
                log_tail="\n".join(log_lines)) from None
        finally:
            os.close(log_fd)
            self._address.close_listener()  # the server has its copy
        self._launched = launched
        self._owner = os.getpid()
        self.pid, self.command, self.warm = launched.pid, launched.command, launched.warm
        self.server_id = launched.server_id
        self.returncode = None
        self._read_offset = None
        safety_net.add(self)

    def _exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the server to exit; True if it has (or never ran)."""
        launched = self._launched
        if launched is None:
            return True
        if launched.exited(timeout):
            if launched.status is not None:
                self.returncode = launched.status
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

    def _report_ready(self, result: Ready, launched: float, preparing: float,
                      relaunches: int) -> None:
        proof = self._proof
        info, warning = ready_report(ReadyFacts(
            name=self.name, pid=self.pid, where=self.where, warm=self.warm, preparing=preparing,
            launched=launched, first_pass=result.first_pass, probes=result.probes,
            done=result.done, verifying=result.verifying, successes=self.ready_successes,
            port=self.port, elsewhere=proof.where if proof else "",
            without_port=bool(proof and proof.without_port),
            waited=proof.waited if proof else 0.0, relaunches=relaunches))
        _log.info("%s", info)
        if warning:
            _log.warning("%s", warning)

    def _lost_port(self, result: Ready) -> str:
        if result.reason is WaitEnd.PORT_LOST:
            return result.tally.last_label
        if result.reason is WaitEnd.EXITED:
            text, _ = self._log.read(self._log.offset, 256 * 1024)
            if _ADDR_IN_USE.search(text):
                return "the server reported 'address already in use'"
        return ""

    def _relaunch(self, lost: str, relaunches: int) -> None:
        """End the launch that lost its port (to an intruder) for one on a new port."""
        self._binds_port = True  # it wanted the port it lost: it binds $PORT
        message = (f"port {self.port} was lost ({lost}); relaunching on a new port "
                   f"(relaunch {relaunches} of {MAX_RELAUNCHES})")
        self._log.note(message)
        _log.warning("server %r: %s", self.name, message)
        self._end_tree(grace=0.0)
        self._address.release()

    def _fail_start(self, result: Ready, deadline: Deadline, lost: str) -> ServerStartError:
        """Gather the facts while the process exists, stop it, keep its log, describe it."""
        try:
            elapsed = deadline.elapsed()
            other = set()
            if result.reason is not WaitEnd.EXITED and self.pid is not None \
                    and self.spec.uses_port and self.port is not None:
                other = ownership.listen_ports(self._tree()) - {self.port}
            keeper_lost = result.reason is WaitEnd.EXITED and self._launched is not None \
                and self._launched.link.lost and self.returncode is None
            survivors = self._end_tree(grace=scaled_for_cleanup(min(self.stop_timeout, 1.0)))
            if survivors:  # said, not hidden
                self._log.note(_survivors_message(self.name, survivors))
            self._address.release()
            reason = WaitEnd.PORT_LOST if result.reason is not WaitEnd.EXITED and lost \
                else result.reason
            log_lines = self._log.excerpt(LOG_TAIL_LINES // 2)
            kept = self._keep_log()
        finally:
            self._dir.remove(self._log)  # whatever happened while describing the failure
        cls, message = start_failure(StartFacts(
            name=self.name, reason=reason, elapsed=elapsed, returncode=self.returncode,
            command=self.command, pid=self.pid, handoff=self.handoff, check=repr(self.check),
            where=f"unix socket {self.socket_path}" if self.spec.unix_socket else self.where,
            successes=self.ready_successes, summary=result.tally.summary(),
            counts=dict(result.tally.counts), details=dict(result.tally.details),
            other_ports=other, port=self.port, lost=lost, fixed_port=self.spec.port is not None,
            deadline_seconds=deadline.seconds or 0.0, start_timeout=self.start_timeout,
            factor=_factor(), log_lines=log_lines, log_path=kept, warm=self.warm,
            not_kept=self._log.why_not_kept, keeper_lost=keeper_lost))
        _log.info("server %r failed to start: %s", self.name, message.splitlines()[0])
        return cls(message, returncode=self.returncode, log_path=kept,
                   log_tail=self._log.tail(LOG_TAIL_LINES), outcomes=result.tally.as_dict())

    # -------------------------------------------------------------------------
    # Stop

    def stop(self) -> Optional[int]:
        """Stop the server and clean up; idempotent.  Returns the exit code.

        An ``app_code`` or ``target`` server exits with 143 on SIGTERM (it
        shuts down gracefully); a negative code is the signal that killed it.
        From a forked child of the process that started it, stop() leaves
        the server to its owner.
        """
        if self._owned_elsewhere():  # (before the lock: a thread may have held it at the fork)
            _log.debug("server %r belongs to process %s; process %s leaves it running",
                       self.name, self._owner, os.getpid())
            return self.returncode
        with self._lock:
            running = self._launched is not None
            started = time.monotonic()
            died = running and self._died()
            keeper_lost = died and self._keeper_lost()
            grace = scaled_for_cleanup(self.stop_timeout)
            survivors = self._end_tree(grace)
            still_open = running and self._address.accepts()
            self._address.release()
            if running and not still_open:
                self._address.forget_test_socket()
            if running and self.warm and self._dir.path is not None:
                launch.learn(self.spec, self._dir.path)  # what it imported, for the next one
            kept = self._keep_log() if died else None
            self._dir.remove(self._log)
            if running:
                self._report_stop(time.monotonic() - started, died, grace, kept, keeper_lost)
            if survivors:
                raise HarnessError(_survivors_message(self.name, survivors))
            if still_open:
                raise HarnessError(
                    f"{self._address.describe()} still accepts connections after server "
                    f"{self.name!r} was stopped: held by {self._address.holder()}; that process "
                    f"is not the server's (the server's whole process tree is gone): stop it, "
                    f"it took the server's address")
            return self.returncode

    def _owned_elsewhere(self) -> bool:
        """True in a forked child of the process that launched the running server: the
        server, and everything of it, is its owner's to stop."""
        return self._launched is not None and self._owner != os.getpid()

    def _end_tree(self, grace: float) -> List[ProcessId]:
        """End the current launch's process tree; the processes that survived SIGKILL."""
        launched, self._launched = self._launched, None
        if launched is None:
            return []
        survivors = launched.end(grace, scaled_for_cleanup(kill.KILL_WAIT))
        if launched.status is not None:
            self.returncode = launched.status
        safety_net.discard(self)
        self._address.close_listener()
        return survivors

    def _report_stop(self, took: float, died: bool, grace: float, kept: Optional[str],
                     keeper_lost: bool) -> None:
        _log.info("server %r stopped in %.3f s (%s)", self.name, took,
                  "its keeper was lost" if keeper_lost else describe_exit(self.returncode))
        if keeper_lost:
            _log.warning("server %r (pid %s) lost its keeper (harness's process that is the "
                         "server's parent, killed by the server or another process) before "
                         "stop(); what was left of its process tree was ended; its log is kept "
                         "at %s", self.name, self.pid, kept)
        elif died:
            _log.warning("server %r (pid %s) %s before stop(); its log is kept at %s",
                         self.name, self.pid, describe_exit(self.returncode), kept)
        elif self.returncode == -signal.SIGKILL and took >= grace:
            _log.warning("server %r did not exit within stop_timeout=%g s of its stop signal "
                         "and was killed: make it exit on it, or lower stop_timeout",
                         self.name, self.stop_timeout)

    def _keep_log(self) -> Optional[str]:
        """Move the log to the kept-logs folder (once); its path there."""
        path = self._log.path
        if path is None or not self._log.exists:
            return None
        if not self._dir.holds(path):
            return path  # kept already
        return self._log.keep(self.name, self.pid)

    def _emergency_stop(self) -> None:
        """For signal handlers: a normal stop if nothing holds the server, else a fast kill."""
        if self._lock.acquire(blocking=False):
            try:
                launched = self._launched
                if launched is None or launched.link.available():
                    self._end_tree(scaled_for_cleanup(self.stop_timeout))
                    self._address.release()
                    self._dir.remove(self._log)
                    return
            finally:
                self._lock.release()
        launched = self._launched
        if launched is not None and launched.link.keeper_pid:
            keeper = procinfo.identity(launched.link.keeper_pid)
            if keeper is not None:
                # The keeper ends the server's tree on SIGTERM, and exits.
                kill.signal_process(keeper, signal.SIGTERM)

    # -------------------------------------------------------------------------
    # Talking to it

    def request(self, method: str, path: str = "/", **kwargs: Any) -> Response:
        """``harness.http.request`` against this server; errors carry the log tail."""
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
        from .memory import rss  # (memory imports psutil, when there is one)
        if self.pid is None or not self.running:
            raise HarnessError(f"server {self.name!r} is not running; start() it first")
        return rss(self.pid, children=True)

    def _attach_tail(self, exc: HarnessError) -> None:
        """Add the log's tail to a failed request's error, and say whose it is (a failure
        report then shows only what the server wrote after it)."""
        mark = self.log_mark()  # (before the tail: a line written meanwhile is shown twice,
        tail = self.log_tail()  # never lost)
        state = self.state
        # The state as of the failure: a server that crashed on this request
        # may still be exiting (a failure report shows its state again later).
        head = f"server {self.name!r} (pid {self.pid}, {state} when the request failed)"
        note = (f"{head} log tail:\n" + "\n".join("    " + line for line in tail.splitlines())
                if tail else f"{head}: log is empty")
        exc.shown_server_id, exc.shown_log_mark = self.server_id, mark
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (exc.args[0] + "\n" + note,) + tuple(exc.args[1:])

    def __enter__(self) -> "ServerProcess":
        __tracebackhide__ = True
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_server(app_code: Optional[str] = None, **kwargs: Any) -> ServerProcess:
    """``ServerProcess(...).start()``."""
    __tracebackhide__ = True
    return ServerProcess(app_code, **kwargs).start()


def _survivors_message(name: str, survivors: Sequence[ProcessId]) -> str:
    return (f"server {name!r}: {len(survivors)} process(es) survived SIGKILL (stuck in the "
            f"kernel?): {', '.join(str(s) for s in survivors[:5])}")


def _factor() -> float:
    try:
        return timeout_factor()
    except ValueError:
        return 1.0


__all__ = ["ServerProcess", "start_server"]
