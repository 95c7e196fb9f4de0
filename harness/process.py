"""``ServerProcess``: launch a server, prove it ready, stop it, leave nothing behind.

The life of one server:

1. Arguments are checked before anything happens (``ValueError``/``TypeError``).
2. A port is leased (or the given one is leased and probed), a private 0700
   temp dir holds the app code and the log, and the server is spawned in
   its own session with ``PORT``, ``HOST`` and the harness marker.
3. Readiness is probed with a short, proportional backoff while the
   process's exit is watched (a pidfd on Linux): a crash is reported at
   once, with the command, exit code or signal, what every probe saw and
   the log tail.  The listener that answers must belong to the server.
4. ``stop()`` sends SIGCONT+SIGTERM to the group and to escaped descendants,
   waits ``stop_timeout``, SIGKILLs what is left, reaps, confirms the port
   is closed, releases the lease and removes the temp dir.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ._config import scaled, scaled_for_cleanup, timeout_factor
from ._os import kill, procinfo, sockets
from ._os.identity import ProcessId
from ._server import launch, marker, safety_net, watchdog
from ._validate import check_port, check_port_range, check_positive_int, check_timeout
from ._wait import Deadline, pause, poll_interval
from .checks import Check, HealthSpec, Outcome, Ready, as_check, wait_ready
from .errors import HarnessError, PortUnavailable, ServerNotReady, ServerStartError

_log = logging.getLogger("harness.process")

LOG_TAIL_LINES = 40
MAX_RELAUNCHES = 3
_ADDR_IN_USE = re.compile(r"address already in use|EADDRINUSE|errno (98|48)\b", re.I)
_KEPT_OUTPUT = 1 << 20  # output() after stop: the last MiB of the deleted log

PathLike = Union[str, "os.PathLike[str]"]


def _check_host(host: object) -> str:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str IP address, got {host!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"host must be a numeric loopback address such as '127.0.0.1' or '::1', "
            f"got {host!r} (a name like 'localhost' may resolve to ::1 first)") from None
    if not address.is_loopback:
        raise ValueError(f"host must be a loopback address (servers under test are not "
                         f"exposed to the network), got {host!r}")
    return host


def _check_env(env: object) -> Dict[str, Optional[str]]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a dict of str -> str or None, got {env!r}")
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise ValueError(f"env keys must be non-empty str without '=', got {key!r}")
        if value is not None and not isinstance(value, str):
            raise TypeError(f"env[{key!r}] must be a str or None, got {value!r}")
    return dict(env)


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        return f"was killed by {_signal_name(returncode)}"
    return f"exited with code {returncode}"


class ServerProcess:
    """A server process under test.  See DESIGN.md "Servers" for the contract.

    >>> with ServerProcess(app_code=APP) as server:   # doctest: +SKIP
    ...     server.get("/health").status
    200
    """

    def __init__(self, app_code: Optional[str] = None, *, argv: Optional[Sequence[str]] = None,
                 host: str = "127.0.0.1", port: Optional[int] = None,
                 port_range: Optional[Sequence[int]] = None, handoff: bool = False,
                 env: Optional[Mapping[str, Optional[str]]] = None,
                 cwd: Optional[PathLike] = None, health: HealthSpec = "/health",
                 ready_successes: int = 2, start_timeout: float = 10.0,
                 stop_timeout: float = 5.0, name: Optional[str] = None) -> None:
        if (app_code is None) == (argv is None):
            raise ValueError("give exactly one of app_code (Python source) or argv "
                             "(a command list), got " + ("both" if argv is not None else "neither"))
        if app_code is not None:
            if not isinstance(app_code, str):
                raise TypeError(f"app_code must be a str of Python source, got "
                                f"{type(app_code).__name__}")
            if not app_code.strip():
                raise ValueError("app_code is empty")
        if argv is not None:
            if isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple)):
                raise TypeError(f"argv must be a list of str (no shell is used), got {argv!r}")
            if not argv:
                raise ValueError("argv is empty")
            for item in argv:
                if not isinstance(item, str):
                    raise TypeError(f"argv items must be str, got {item!r}")
        self.host = _check_host(host)
        if port is not None:
            check_port(port)
            if port_range is not None:
                raise ValueError("give port or port_range, not both")
        self._port_range = check_port_range(port_range) if port_range is not None else None
        if not isinstance(handoff, bool):
            raise TypeError(f"handoff must be True or False, got {handoff!r}")
        self._env = _check_env(env)
        if cwd is not None:
            cwd = os.fspath(cwd)
            if not os.path.isdir(cwd):
                raise ValueError(f"cwd is not an existing directory: {cwd!r}")
        self.check: Check = as_check(health)
        self.ready_successes = check_positive_int(ready_successes, "ready_successes")
        self.start_timeout = check_timeout(start_timeout, "start_timeout")
        self.stop_timeout = check_timeout(stop_timeout, "stop_timeout")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        self.app_code = app_code
        self.argv = list(argv) if argv is not None else None
        self.handoff = handoff
        self.cwd = cwd
        self.name = name or ("app" if argv is None else os.path.basename(argv[0]))
        self.port: Optional[int] = port
        self._fixed_port = port
        self.pid: Optional[int] = None
        self.returncode: Optional[int] = None
        self.log_path: Optional[str] = None
        self.log_offset = 0   # where the current launch's output starts in the log
        self.launch_id = 0
        self.command: List[str] = []
        self.server_id = ""
        self._proc: Optional[subprocess.Popen] = None
        self._pidfd: Optional[int] = None
        self._identity: Optional[ProcessId] = None
        self._lease: Any = None
        self._dir: Optional[str] = None
        self._kept_output = ""
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ info

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._exited(0)

    @property
    def state(self) -> str:
        """What the server is doing, in words that stay true when shown in a report:
        "not started", "running", "exited with code 1", "was killed by SIGKILL"."""
        if self._proc is not None and self._exited(0):
            self._reap_if_exited()
        if self.running:
            return "running"
        if self.returncode is not None:
            return describe_exit(self.returncode)
        return "not started"

    def _reap_if_exited(self) -> None:
        """Record the exit code of a server that exited on its own (not reaped yet)."""
        proc = self._proc
        if proc is not None and proc.returncode is None and _has_exited(proc):
            self.returncode = _exit_status(proc)

    def __repr__(self) -> str:
        return f"<ServerProcess {self.name!r} pid={self.pid} {self.url} {self.state}>"

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far.

        After a successful :meth:`stop` the log file is gone; the last MiB of
        it is kept in memory.
        """
        if self.log_path and os.path.exists(self.log_path):
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        return self._kept_output

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self._read_tail(64 * 1024) if self.log_path and os.path.exists(
            self.log_path) else self._kept_output
        return "\n".join(text.splitlines()[-lines:])

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path) if self.log_path else 0
        except OSError:
            return 0

    def _read_tail(self, size: int) -> str:
        assert self.log_path is not None
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")

    # --------------------------------------------------------------- launch

    def start(self) -> "ServerProcess":
        """Launch and return once ``ready_successes`` checks in a row passed."""
        with self._lock:
            if self._proc is not None:
                return self
            deadline = Deadline(scaled(self.start_timeout))
            watchdog.ensure()
            self._dir = marker.make_private_dir()
            watchdog.register_dir(self._dir)
            try:
                self._prepare_files()
            except BaseException:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
                raise
            relaunches = 0
            while True:
                try:
                    self._launch()
                    result = self._wait(deadline)
                except BaseException:
                    # Keep the log only if a server ran and wrote something.
                    launched = self._proc is not None or relaunches > 0
                    self._stop_locked(kill_now=True, keep=launched and self._log_size() > 0)
                    raise
                if result.ok:
                    return self
                lost = self._lost_port(result)
                if lost and self._fixed_port is None and not self.handoff \
                        and relaunches < MAX_RELAUNCHES \
                        and not deadline.expired:
                    relaunches += 1
                    self._note(f"port {self.port} was lost ({lost}); relaunching on a new "
                               f"port (relaunch {relaunches} of {MAX_RELAUNCHES})")
                    self._stop_locked(kill_now=True, keep=True, reuse_dir=True)
                    continue
                raise self._start_error(result, deadline, lost)

    def _prepare_files(self) -> None:
        assert self._dir is not None
        self.log_path = os.path.join(self._dir, "server.log")
        _write_private(self.log_path, "")
        if self.app_code is not None:
            self._app_path = os.path.join(self._dir, "app.py")
            self._boot_path = os.path.join(self._dir, "boot.py")
            _write_private(self._app_path, self.app_code)
            _write_private(self._boot_path, launch.BOOT)

    def _take_port(self) -> None:
        from .ports import _allocator  # shared per (host, range): one shuffle, not one per server
        allocator = _allocator(self.host, self._port_range)
        if self._fixed_port is not None:
            from .ports import own_lease  # a port this process leased: take the lease over
            self._lease = own_lease(self._fixed_port) or allocator.acquire_port(self._fixed_port)
        else:
            self._lease = allocator.acquire()
        self.port = self._lease.port

    def _take_port_and_socket(self) -> Optional[socket.socket]:
        """Lease the port; with handoff also bind it (a new lease if a stranger took it)."""
        from .ports import listening_socket
        for attempt in range(MAX_RELAUNCHES + 1):
            self._take_port()
            assert self.port is not None
            if not self.handoff:
                return None
            try:
                return listening_socket(self.host, self.port)
            except PortUnavailable:
                self._release_port()
                if self._fixed_port is not None or attempt == MAX_RELAUNCHES:
                    raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        assert self.log_path is not None
        listener = self._take_port_and_socket()
        self.server_id = marker.new_server_id()
        markers = {marker.OWNER_ENV: marker.owner_token(), marker.SERVER_ID_ENV: self.server_id}
        env = launch.environment(self._env, host=self.host, port=self.port, marker=markers,
                                  handoff=self.handoff, fd_name=re.sub(r"[^\w.-]", "_", self.name))
        if self.app_code is not None:
            self.command = launch.app_command(self._boot_path, self._app_path, self.handoff)
        else:
            assert self.argv is not None
            argv = [a.replace("{port}", str(self.port)).replace("{host}", self.host)
                    for a in self.argv]
            self.command = launch.command(argv, self.handoff)
        watchdog.ensure()
        safety_net.add(self)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        try:
            self.log_offset = os.fstat(log_fd).st_size
            self.launch_id += 1
            try:
                self._proc = launch.spawn(self.command, env=env, cwd=self.cwd, log_fd=log_fd,
                                           listen_fd=listener.fileno() if listener else None)
            except OSError as exc:
                safety_net.discard(self)
                self._release_port()
                raise ServerStartError(
                    f"could not launch server {self.name!r}: {exc}\n  command: "
                    f"{_shown(self.command)}\n  cwd: {self.cwd or os.getcwd()}\n"
                    f"  fix the command (is the program installed and executable?)") from exc
        finally:
            os.close(log_fd)
            if listener is not None:
                listener.close()  # the server has its copy; ours would keep the port open
        self.pid = self._proc.pid
        self.returncode = None
        self._identity = procinfo.identity(self.pid)
        watchdog.register(self.pid)
        self._pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except OSError:
                self._pidfd = None

    def _exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the server to exit; True if it has.

        The process is not reaped here, so its pid (and group id) cannot be
        reused while harness may still signal it.
        """
        proc = self._proc
        if proc is None:
            return True
        if proc.returncode is not None:
            return True
        if self._pidfd is not None:
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            return bool(poller.poll(max(timeout, 0) * 1000))
        deadline = Deadline(timeout)
        while True:
            if _has_exited(proc):
                return True
            if deadline.expired:
                return False
            pause(deadline.cap(poll_interval(deadline.elapsed(), cap=0.02)))

    def _wait(self, deadline: Deadline) -> Ready:
        verify = self._verify_listener if self.check.uses_port else None
        return wait_ready(self, self.check, successes=self.ready_successes, deadline=deadline,
                          exited=self._exited, verify=verify,
                          stop_on=lambda outcome: outcome.label.startswith("port answered by"))

    def _verify_listener(self) -> Optional[Outcome]:
        """A failing outcome if the listener on our port is not the server's own.

        Not needed with handoff: harness bound that socket itself.
        """
        assert self.port is not None and self.pid is not None
        if self.handoff:
            return None
        table = sockets.listening(_family(self.host))
        inodes = {inode for inode, port in (table or {}).items() if port == self.port}
        if not inodes:
            return None  # cannot tell (not Linux, or another network namespace)
        if inodes.intersection(procinfo._socket_inodes(self.pid)):
            return None
        for member in procinfo.descendants(self.pid):
            if inodes.intersection(procinfo._socket_inodes(member)):
                return None
        owners = [pid for pid in procinfo.all_pids()
                  if inodes.intersection(procinfo._socket_inodes(pid))]
        who = "; ".join(f"pid {pid} ({procinfo.cmdline(pid)[:80]})" for pid in owners)
        return Outcome(False, f"port answered by another process: {who or 'unknown holder'}")

    def _lost_port(self, result: Ready) -> str:
        for label in result.tally.counts:
            if label.startswith("port answered by"):
                return label
        if result.reason == "exited" and self.log_path:
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(self.log_offset)
                    text = f.read(256 * 1024).decode("utf-8", "replace")
            except OSError:
                return ""
            if _ADDR_IN_USE.search(text):
                return "the server reported 'address already in use'"
        return ""

    def _note(self, message: str) -> None:
        """Write a harness line into the server's log."""
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(f"[harness] {message}\n")

    def _start_error(self, result: Ready, deadline: Deadline, lost: str) -> ServerStartError:
        """Stop what is left of the server and describe the failure."""
        elapsed = deadline.elapsed()
        other: set = set()
        if result.reason != "exited" and self.pid is not None and self.check.uses_port:
            other = _tree_listen_ports(self.pid, self.host) - {self.port}
        self._stop_locked(grace=scaled_for_cleanup(min(self.stop_timeout, 1.0)), keep=True)
        if result.reason == "exited":
            rc = self.returncode
            what = f"{describe_exit(rc)} during start-up after {elapsed:.2f} s"
            if rc == 0:
                what += (" (a server must keep running in the foreground; one that "
                         "daemonizes cannot be supervised)")
            cls = ServerStartError
        elif result.reason == "rejected":
            what = f"did not get its port after {elapsed:.2f} s: {lost}"
            cls = ServerNotReady
        else:
            factor = timeout_factor()
            what = (f"was not ready within {deadline.seconds:.1f} s (start_timeout="
                    f"{self.start_timeout:g}" + (f" x HARNESS_TIMEOUT_FACTOR={factor:g}"
                                                  if factor != 1 else "")
                    + "); it has been stopped")
            cls = ServerNotReady
        lines = [f"server {self.name!r} {what}",
                 f"  command: {_shown(self.command)}",
                 f"  pid {self.pid}, {self.url}" + (" (socket handed off as fd 3)"
                                                     if self.handoff else ""),
                 f"  readiness {self.check!r}, {self.ready_successes} passes in a row needed: "
                 f"{result.tally.summary()}"]
        # What each kind of outcome looked like, the most frequent first: the
        # last probe is often just the one the deadline cut short.
        by_count = sorted(result.tally.counts, key=lambda lbl: -result.tally.counts[lbl])
        for label in [lbl for lbl in by_count if result.tally.details.get(lbl)][:4]:
            lines.append(f"  last {label}: {result.tally.details[label][:200]!r}")
        if other:
            lines.append(f"  the server listens on port {', '.join(map(str, sorted(other)))} "
                             f"instead of {self.port}: make it use $PORT (or '{{port}}' in argv)")
        if lost and self.handoff:
            lines.append("  with handoff=True the server must use the listening socket on fd 3 "
                         "(LISTEN_FDS=1) instead of binding the port itself")
        elif lost and self._fixed_port is not None:
            lines.append(f"  port {self.port} was given explicitly; free it or let harness "
                         f"choose one (port=None)")
        tail = self.log_tail()
        if tail:
            lines.append(f"  log (last {LOG_TAIL_LINES} lines; kept at {self.log_path}):")
            lines.extend("    " + line for line in tail.splitlines())
        else:
            lines.append(f"  log: empty (kept at {self.log_path})")
        return cls("\n".join(lines), returncode=self.returncode, log_path=self.log_path,
                   log_tail=tail, outcomes=result.tally.as_dict())

    # ----------------------------------------------------------------- stop

    def stop(self) -> Optional[int]:
        """Stop the server and clean up; idempotent.  Returns the exit code.

        An ``app_code`` server exits with 143 on SIGTERM (it shuts down
        gracefully); a negative code is the signal that killed it.
        """
        with self._lock:
            return self._stop_locked()

    def _stop_locked(self, kill_now: bool = False, keep: bool = False,
                     reuse_dir: bool = False, grace: Optional[float] = None) -> Optional[int]:
        proc = self._proc
        if proc is None:  # never launched, or already stopped
            safety_net.discard(self)
            self._release_port()
            self._cleanup_dir(keep=keep, reuse=reuse_dir)
            return self.returncode
        died_alone = self._exited(0)
        try:
            if grace is None:
                grace = 0.0 if kill_now else scaled_for_cleanup(self.stop_timeout)
            self._terminate(proc, grace=grace)
        finally:
            self._reap()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            watchdog.unregister(proc.pid)
            self._proc = None
            safety_net.discard(self)
        still_open = self._port_accepts()
        self._release_port()
        if died_alone and not keep and not reuse_dir:
            _log.warning("server %r (pid %s) %s before stop(); its log is kept at %s",
                         self.name, self.pid, describe_exit(self.returncode), self.log_path)
            keep = True
        self._cleanup_dir(keep=keep, reuse=reuse_dir)
        if still_open:
            raise HarnessError(
                f"port {self.port} still accepts connections after server {self.name!r} was "
                f"stopped: held by {procinfo.describe_port_holders(self.port or 0)}")
        return self.returncode

    def _terminate(self, proc: subprocess.Popen, grace: float) -> None:
        pgid = proc.pid  # session leader, not yet reaped: the group id cannot be reused
        deadline = Deadline(grace)
        start = self._identity.start_ticks if self._identity else None
        if grace > 0:
            _killpg(pgid, signal.SIGCONT)
            _killpg(pgid, signal.SIGTERM)
        else:
            _killpg(pgid, signal.SIGKILL)
        members = kill.find_marked(marker.SERVER_ID_ENV, self.server_id, started_after=start)
        others = [t for t in members if _pgid(t.pid) != pgid]
        for sig in ((signal.SIGCONT, signal.SIGTERM) if grace > 0 else (signal.SIGKILL,)):
            for token in others:
                kill.signal_process(token, sig)
        if grace > 0:
            self._exited(deadline.remaining())
            survivors = kill.wait_gone(members, deadline)
            if not survivors and self._exited(0):
                _killpg(pgid, signal.SIGKILL)  # stragglers forked during shutdown
                return
            _killpg(pgid, signal.SIGKILL)
        survivors = set(kill.alive(members))
        survivors.update(kill.find_marked(marker.SERVER_ID_ENV, self.server_id,
                                           started_after=start))
        for token in survivors:
            kill.signal_process(token, signal.SIGKILL)
        self._exited(scaled_for_cleanup(5.0))
        kill.wait_gone(survivors, Deadline(scaled_for_cleanup(5.0)))

    def _emergency_stop(self) -> None:
        """For signal handlers: a normal stop, or SIGKILL if a stop/start is mid-way."""
        if self._lock.acquire(blocking=False):
            try:
                self._stop_locked()
            finally:
                self._lock.release()
            return
        proc = self._proc
        if proc is not None and proc.returncode is None:
            _killpg(proc.pid, signal.SIGKILL)
            for token in kill.find_marked(marker.SERVER_ID_ENV, self.server_id):
                kill.signal_process(token, signal.SIGKILL)

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            self.returncode = proc.wait()

    def _port_accepts(self) -> bool:
        """True if a process of this server still accepts on its port after the kill.

        Checked before the lease goes.  A listener that is not ours (a stale
        server that answered instead) is not this server's leftover.
        """
        if self.port is None or not self._accepts():
            return False
        deadline = Deadline(scaled_for_cleanup(1.0))
        while True:
            if not kill.find_marked(marker.SERVER_ID_ENV, self.server_id):
                return False
            if not self._accepts():
                return False
            if deadline.expired:
                return True
            pause(deadline.cap(poll_interval(deadline.elapsed())))

    def _accepts(self) -> bool:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect((self.host, self.port))
            except OSError:
                return False
        return True

    def _release_port(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    def _cleanup_dir(self, keep: bool, reuse: bool = False) -> None:
        if reuse or self._dir is None:
            return
        watchdog.unregister_dir(self._dir)  # kept or removed: no longer the watchdog's
        if not keep:
            try:
                self._kept_output = self._read_tail(_KEPT_OUTPUT) if self.log_path else ""
            except OSError:
                self._kept_output = ""
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    # ------------------------------------------------------------ talking

    def request(self, method: str, path: str = "/", **kwargs: Any) -> Any:
        """``harness.http.request`` against this server; errors carry the log tail."""
        from .http import request
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        try:
            return request(method, self.url + path, **kwargs)
        except HarnessError as exc:
            self._attach_tail(exc)
            raise

    def get(self, path: str = "/", **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str = "/", **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def memory(self) -> int:
        """Resident memory of the server and its children, in bytes."""
        from .memory import rss
        if self.pid is None or not self.running:
            raise HarnessError(f"server {self.name!r} is not running; start() it first")
        return rss(self.pid, children=True)

    def _attach_tail(self, exc: BaseException) -> None:
        tail = self.log_tail()
        state = self.state
        note = (f"server {self.name!r} (pid {self.pid}, {state}) log tail:\n" +
                "\n".join("    " + line for line in tail.splitlines()) if tail
                else f"server {self.name!r} (pid {self.pid}, {state}): log is empty")
        exc.server_log_tail = tail  # type: ignore[attr-defined]
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (exc.args[0] + "\n" + note,) + tuple(exc.args[1:])

    # --------------------------------------------------------- contextmgr

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_server(app_code: Optional[str] = None, **kwargs: Any) -> ServerProcess:
    """``ServerProcess(...).start()``."""
    return ServerProcess(app_code, **kwargs).start()


# ------------------------------------------------------------------ helpers

def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _shown(cmd: Sequence[str]) -> str:
    import shlex
    shown = [c if len(c) < 200 else c[:60] + "..." for c in cmd]
    return " ".join(shlex.quote(c) for c in shown)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def _pgid(pid: int) -> Optional[int]:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _has_exited(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` exited, without reaping it where the OS allows."""
    if hasattr(os, "waitid"):
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return proc.poll() is not None
        return info is not None and info.si_pid != 0
    return proc.poll() is not None


def _exit_status(proc: subprocess.Popen) -> Optional[int]:
    """The exit status of an exited, unreaped child, without reaping it (else None)."""
    if hasattr(os, "waitid"):
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return proc.returncode
        if info is None or info.si_pid == 0:
            return None
        if info.si_code == os.CLD_EXITED:
            return info.si_status
        return -info.si_status
    return proc.returncode


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _tree_listen_ports(pid: int, host: str) -> set:
    """TCP ports that ``pid`` or its descendants listen on (Linux; else empty)."""
    table = sockets.listening(_family(host))
    if not table:
        return set()
    inodes = set()
    for member in [pid] + procinfo.descendants(pid):
        inodes.update(procinfo._socket_inodes(member))
    return {port for inode, port in table.items() if inode in inodes}


safety_net.install()


__all__ = ["ServerProcess", "start_server", "describe_exit"]
