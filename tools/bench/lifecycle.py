"""Benchmark: time-to-ready and time-to-stopped of a server, side by side.

    python tools/bench/lifecycle.py [--rounds 30] [--quick]

Two stdlib HTTP servers: "trivial" (routes exist when it listens) and
"late" (listens at once, /health is 404 for ~300 ms).  Each writes the
``time.monotonic()`` (system-wide on Linux) of its listen() and of the moment
its routes exist, so the physical floor is known per round:

    floor = routes-exist timestamp - launch time + one request

Approaches: harness with a leased port, harness with handoff (argv and
app_code), app_code and a callable (``target=``) both fresh and warm
(forked from a zygote that preloaded ``http.server``), mirakuru's
HTTPExecutor (GET) when installed, a hand-written 1 ms TCP-connect loop, the
write-up's first band-aid (sleep 0.2 s, one check) and its final approach
(sleep 0.5 s, poll every 0.5 s, three checks, 2 s sleep after stop).
After each "ready" verdict one GET /health is made: a 404 there is an early
(wrong) verdict, counted in the "early" column.

Then, side by side in the same run:

* warm against fresh: a stdlib server, and a minimal Flask app when Flask
  is installed (fresh start, its hand-written floor, warm start);
* suites: 100 tests each with its own Flask server, fresh against warm; and
  137 tests each with its own callable server, harness (warm) against
  forking the callable by hand in the test process;
* the launch itself: exec of ``true`` directly and through the zygote.
"""
from __future__ import annotations

import os
import sys

# tools/bench/http.py would shadow the stdlib's http package for scripts here.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import http.client  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Dict, List, Tuple  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# --harness DIR: time another checkout (e.g. 0.1's) with the rows its API has.
if "--harness" in sys.argv:
    ROOT = os.path.abspath(sys.argv[sys.argv.index("--harness") + 1])
sys.path.insert(0, ROOT)

from harness.process import ServerProcess  # noqa: E402

SERVER = r'''
import http.server, os, socket, sys, time
stamp_path, delay = sys.argv[1], float(sys.argv[2])
host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])
state = {"routes": False, "since": None}

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if not state["routes"] and time.monotonic() >= state["since"] + delay:
            state["routes"] = True
        ok = state["routes"] and self.path == "/health"
        body = b'{"message": "ok"}' if ok else b'{"error": "no route"}'
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

if os.environ.get("LISTEN_PID") == str(os.getpid()):
    server = http.server.HTTPServer((host, port), H, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=3)
else:
    server = http.server.HTTPServer((host, port), H)
state["since"] = time.monotonic()
with open(stamp_path, "w") as f:
    f.write("%r %r" % (state["since"], state["since"] + delay))
server.serve_forever()
'''


class Round:
    def __init__(self, ready: float, stopped: float, floor: float, early: bool) -> None:
        self.ready, self.stopped, self.floor, self.early = ready, stopped, floor, early


def _get(port: int, path: str = "/health", timeout: float = 5.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _request_cost(port: int) -> float:
    started = time.monotonic()
    _get(port)
    return time.monotonic() - started


def _routes_at(stamp: str) -> float:
    with open(stamp) as f:
        return float(f.read().split()[1])


class Bench:
    def __init__(self, workdir: str, delay: float) -> None:
        self.script = os.path.join(workdir, "server.py")
        with open(self.script, "w") as f:
            f.write(SERVER)
        self.stamp = os.path.join(workdir, "stamp")
        self.delay = delay

    def argv(self) -> List[str]:
        return [sys.executable, self.script, self.stamp, str(self.delay)]

    def _reset(self) -> None:
        if os.path.exists(self.stamp):
            os.unlink(self.stamp)

    def harness(self, handoff: bool, app_code: bool = False, warm: bool = False,
                target: bool = False) -> Round:
        self._reset()
        preload = ["http.server"] if warm else None
        if target:
            bench_targets = _targets()
            os.environ["HARNESS_WARM"] = "1" if warm else "0"
            server = ServerProcess(target=bench_targets.serve, args=(self.stamp, self.delay),
                                   handoff=handoff)
        elif app_code:
            code = (f"import sys\nsys.argv[1:] = [{self.stamp!r}, {str(self.delay)!r}]\n" + SERVER)
            warm_kw = {"preload": preload} if preload else {}  # (0.1 has no preload=)
            server = ServerProcess(code, handoff=handoff, **warm_kw)
        else:
            server = ServerProcess(argv=self.argv(), handoff=handoff)
        launched = time.monotonic()
        server.start()
        ready = time.monotonic() - launched
        early = _get(server.port) != 200
        floor = _routes_at(self.stamp) - launched + _request_cost(server.port)
        started = time.monotonic()
        server.stop()
        os.environ.pop("HARNESS_WARM", None)
        return Round(ready, time.monotonic() - started, floor, early)

    def _plain(self, wait_ready: Callable[[int], None]) -> Round:
        """Popen, ``wait_ready(port)``, then terminate+wait: the usual hand-written way."""
        from harness.ports import find_free_port, release_port
        self._reset()
        port = find_free_port()
        env = dict(os.environ, PORT=str(port))
        launched = time.monotonic()
        proc = subprocess.Popen(self.argv(), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_ready(port)
        ready = time.monotonic() - launched
        early = _get(port) != 200
        floor = _routes_at(self.stamp) - launched + _request_cost(port)
        started = time.monotonic()
        proc.terminate()
        proc.wait()
        release_port(port)
        return Round(ready, time.monotonic() - started, floor, early)

    def tcp_poll(self) -> Round:
        """A hand-written loop: TCP connect every 1 ms until it succeeds."""
        import socket

        def wait(port: int) -> None:
            while True:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        return
                time.sleep(0.001)
        return self._plain(wait)

    def fixed_sleep(self) -> Round:
        """The write-up's first band-aid: sleep 0.2 s, then one check (port open)."""
        import socket

        def wait(port: int) -> None:
            time.sleep(0.2)
            with socket.socket() as sock:
                sock.connect_ex(("127.0.0.1", port))
        return self._plain(wait)

    def writeup(self) -> Round:
        """The incident write-up: sleep, poll every 0.5 s, 3 checks, 2 s after stop."""
        from harness.ports import find_free_port, release_port
        self._reset()
        port = find_free_port()
        env = dict(os.environ, PORT=str(port))
        launched = time.monotonic()
        proc = subprocess.Popen(self.argv(), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        passes = 0
        time.sleep(0.5)
        while passes < 3:
            try:
                passes = passes + 1 if _get(port, timeout=5) == 200 else 0
            except OSError:
                passes = 0
            if passes < 3:
                time.sleep(0.5)
        ready = time.monotonic() - launched
        early = _get(port) != 200
        floor = _routes_at(self.stamp) - launched + _request_cost(port)
        started = time.monotonic()
        proc.terminate()
        proc.wait()
        time.sleep(2.0)
        release_port(port)
        return Round(ready, time.monotonic() - started, floor, early)

    def mirakuru(self) -> Round:
        from mirakuru import HTTPExecutor

        from harness.ports import find_free_port, release_port
        self._reset()
        port = find_free_port()
        executor = HTTPExecutor(self.argv(), url=f"http://127.0.0.1:{port}/health",
                                method="GET", status=200, timeout=30,
                                envvars={"PORT": str(port)}, stdout=subprocess.DEVNULL)
        launched = time.monotonic()
        executor.start()
        ready = time.monotonic() - launched
        early = _get(port) != 200
        floor = _routes_at(self.stamp) - launched + _request_cost(port)
        started = time.monotonic()
        executor.stop()
        stopped = time.monotonic() - started
        release_port(port)
        return Round(ready, stopped, floor, early)


# A 0.1-era server: it binds its own Unix socket ($SOCK) and writes a line for
# every request, as werkzeug's dev server does (its tree is never idle while
# probed).  0.1-style use: a callable check over that socket, listens unset.
OWN_UNIX_SERVER = r'''
import http.server, os, socketserver, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def address_string(self):
        return "unix"
    def log_message(self, fmt, *args):
        sys.stderr.write("request %s\\n" % (fmt % args))

class Server(socketserver.UnixStreamServer):
    def get_request(self):
        conn, _ = super().get_request()
        return conn, ("unix", 0)

Server(os.environ["SOCK"], Handler).serve_forever(poll_interval=0.5)
'''


def _unix_get_ok(path: str) -> bool:
    """One HTTP/1.0 GET over a Unix socket: True if it answered 200."""
    import socket
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.0 200")
    except OSError:
        return False
    finally:
        sock.close()


def own_unix_rounds(rounds: int, workdir: str) -> Dict[str, List[float]]:
    """Ready time of the 0.1-style Unix socket server: harness against a hand-written poll."""
    script = os.path.join(workdir, "own_unix.py")
    with open(script, "w") as f:
        f.write(OWN_UNIX_SERVER)
    sock = os.path.join(workdir, "own.sock")
    times: Dict[str, List[float]] = {"floor": [], "harness": [], "harness stop": [],
                                     "after check": []}
    for _ in range(rounds):
        for path in (sock,):
            if os.path.exists(path):
                os.unlink(path)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, script], env=dict(os.environ, SOCK=sock),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (os.path.exists(sock) and _unix_get_ok(sock)):
            time.sleep(0.001)
        times["floor"].append(time.monotonic() - started)
        proc.terminate()
        proc.wait()
        os.unlink(sock)
        passed: List[float] = []  # when the check first passed

        def check(server: Any, passed: List[float] = passed) -> bool:
            ok = os.path.exists(sock) and _unix_get_ok(sock)
            if ok and not passed:
                passed.append(time.monotonic())
            return ok
        server = ServerProcess(OWN_UNIX_SERVER, env={"SOCK": sock}, health=check)
        started = time.monotonic()
        server.start()
        ready = time.monotonic()
        times["harness"].append(ready - started)
        times["after check"].append(ready - passed[0])
        started = time.monotonic()
        server.stop()
        times["harness stop"].append(time.monotonic() - started)
        if os.path.exists(sock):
            os.unlink(sock)
    return times


def print_v01_rows(rounds: int, workdir: str) -> None:
    """The rows of 0.1-style use (API 0.1 has), for comparing releases side by side."""
    times = own_unix_rounds(rounds, workdir)
    print(f"0.1-style use, {rounds} rounds each, interleaved, ms (median, p95); harness from "
          f"{ROOT}")
    print(f"  own Unix socket + callable check: hand-written poll {_ms(times['floor']):7.1f}  "
          f"harness {_ms(times['harness']):7.1f} (p95 {1000 * _pct(times['harness'], 0.95):.1f}, "
          f"{statistics.median(times['harness']) / statistics.median(times['floor']):.2f}x)  "
          f"ready {_ms(times['after check']):.1f} after the check passed  "
          f"stop {_ms(times['harness stop']):.1f}")
    bench = Bench(workdir, 0.0)
    handoff = [bench.harness(True, app_code=True) for _ in range(rounds)]
    ready = [r.ready for r in handoff]
    floor = [r.floor for r in handoff]
    print(f"  app_code + handoff (HttpCheck):   floor {_ms(floor):7.1f}  harness "
          f"{_ms(ready):7.1f} (p95 {1000 * _pct(ready, 0.95):.1f}, "
          f"{statistics.median(ready) / statistics.median(floor):.2f}x)  stop "
          f"{_ms([r.stopped for r in handoff]):.1f}")


def _pct(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def launch_costs(rounds: int) -> List[Tuple[str, float]]:
    """Median cost of starting ``true`` directly and through the zygote and a keeper."""
    from harness._server import protocol, supervisor
    true = shutil.which("true") or "/bin/true"
    zygote = supervisor.zygote(None)
    direct, zygoted = [], []
    for _ in range(rounds):
        started = time.monotonic()
        subprocess.run([true], stdin=subprocess.DEVNULL, check=True)
        direct.append(time.monotonic() - started)
        fd = os.open(os.devnull, os.O_WRONLY)
        started = time.monotonic()
        link = zygote.spawn(protocol.spawn("argv", warm=False, argv=[true],
                                           env=dict(os.environ), cwd="/"), fd, None)
        os.close(fd)
        link.wait_started(10)
        while not link.exited(1.0):
            pass
        link.stop(1.0, 1.0)
        zygoted.append(time.monotonic() - started)
        link.close()
    return [("subprocess.run, exit seen", statistics.median(direct)),
            ("zygote + keeper, exit seen, reaped", statistics.median(zygoted))]


FLASK_APP = r'''
import os
from flask import Flask
app = Flask(__name__)

@app.get("/health")
def health():
    return {"message": "ok"}

app.run(host=os.environ["HOST"], port=int(os.environ["PORT"]))
'''


def _first_200(port: int, deadline: float) -> None:
    """The hand-written floor: TCP-poll every 1 ms, then GET until 200."""
    while time.monotonic() < deadline:
        try:
            if _get(port, timeout=1.0) == 200:
                return
        except OSError:
            time.sleep(0.001)
    raise RuntimeError("no 200 before the deadline")


def flask_rounds(rounds: int, workdir: str) -> Dict[str, List[float]]:
    """Start-to-first-200 and stop of a minimal Flask app: fresh, its floor, warm."""
    from harness.ports import find_free_port, release_port
    app_path = os.path.join(workdir, "flask_app.py")
    with open(app_path, "w") as f:
        f.write(FLASK_APP)
    times: Dict[str, List[float]] = {"floor": [], "fresh": [], "warm": [], "fresh stop": [],
                                     "warm stop": []}
    for _ in range(rounds):
        port = find_free_port()
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, app_path], env=dict(os.environ, PORT=str(port),
                                                                    HOST="127.0.0.1"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _first_200(port, started + 30)
        times["floor"].append(time.monotonic() - started)
        proc.terminate()
        proc.wait()
        release_port(port)
        for label, preload in (("fresh", None), ("warm", ["flask"])):
            server = ServerProcess(FLASK_APP, preload=preload)
            started = time.monotonic()
            server.start()
            times[label].append(time.monotonic() - started)
            started = time.monotonic()
            server.stop()
            times[f"{label} stop"].append(time.monotonic() - started)
    return times


def flask_suite(tests: int, warm: bool) -> float:
    """A suite of ``tests`` tests, each with its own Flask server and one request."""
    started = time.monotonic()
    for _ in range(tests):
        with ServerProcess(FLASK_APP, preload=["flask"] if warm else None) as server:
            server.get("/health", expect_status=200)
    return time.monotonic() - started


def callable_suite_by_hand(tests: int) -> float:
    """The original way: fork the test process and run the same callable in the child
    (on a port found free, as such suites do), poll until it answers, kill, wait."""
    import signal

    from harness.ports import find_free_port, release_port
    bench_targets = _targets()
    started = time.monotonic()
    for _ in range(tests):
        port = find_free_port()
        release_port(port)
        pid = os.fork()
        if pid == 0:
            try:
                os.environ.update(HOST="127.0.0.1", PORT=str(port))
                bench_targets.plain()
            finally:
                os._exit(0)
        _first_200(port, time.monotonic() + 30)
        if _get(port) != 200:  # the test's own request, as in the harness suite
            raise RuntimeError("no 200")
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    return time.monotonic() - started


def callable_suite_harness(tests: int) -> float:
    """The same suite with harness: ``target=``, warm, every guarantee kept."""
    bench_targets = _targets()
    started = time.monotonic()
    for _ in range(tests):
        with ServerProcess(target=bench_targets.plain, preload=["http.server"]) as server:
            server.get("/health", expect_status=200)
    return time.monotonic() - started


TARGETS = r'''
import http.server, os, sys

SERVER = __SERVER__


def serve(stamp, delay):
    """The lifecycle table's server, as a callable."""
    sys.argv[1:] = [stamp, str(delay)]
    exec(compile(SERVER, "server", "exec"), {"__name__": "__main__"})


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def plain():
    """A minimal callable server on $HOST:$PORT."""
    http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])),
                           Handler).serve_forever()

'''


def _targets() -> Any:
    """The module of callable servers ``main`` writes into the work dir (on sys.path)."""
    import importlib
    return importlib.import_module("bench_targets")


def _ms(values: List[float]) -> float:
    return 1000 * statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true",
                        help="skip the write-up's approach (3.5 s per round)")
    parser.add_argument("--suite", type=int, default=100,
                        help="Flask servers in the suite-level row (default 100)")
    parser.add_argument("--callables", type=int, default=137,
                        help="callable servers in the by-hand comparison (default 137)")
    parser.add_argument("--harness", metavar="DIR",
                        help="import harness from this checkout (another release)")
    parser.add_argument("--v01-only", action="store_true",
                        help="only the rows of 0.1-style use (for --harness of 0.1)")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-lifecycle-")
    if args.v01_only:
        try:
            print_v01_rows(args.rounds, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    with open(os.path.join(workdir, "bench_targets.py"), "w") as f:
        f.write(TARGETS.replace("__SERVER__", repr(SERVER)))
    sys.path.insert(0, workdir)
    try:
        approaches: List[Tuple[str, Callable[[Bench], Round]]] = [
            ("harness, leased port", lambda b: b.harness(False)),
            ("harness, handoff (argv)", lambda b: b.harness(True)),
            ("harness, handoff (app_code)", lambda b: b.harness(True, app_code=True)),
            ("harness, app_code warm", lambda b: b.harness(False, app_code=True, warm=True)),
            ("harness, target fresh", lambda b: b.harness(False, target=True)),
            ("harness, target warm", lambda b: b.harness(False, target=True, warm=True)),
        ]
        try:
            import mirakuru  # noqa: F401
            approaches.append(("mirakuru HTTPExecutor GET", lambda b: b.mirakuru()))
        except ImportError:
            print("(mirakuru not installed: skipped)")
        approaches.append(("hand-written 1 ms TCP poll", lambda b: b.tcp_poll()))
        approaches.append(("sleep 0.2 s + one check", lambda b: b.fixed_sleep()))
        if not args.quick:
            approaches.append(("write-up (sleep+0.5 s polls)", lambda b: b.writeup()))
        print(f"{args.rounds} rounds each, interleaved; times in ms; "
              f"ratio = median ready / median floor of the same rounds\n")
        header = (f"{'server':8} {'approach':30} {'ready p50':>9} {'p95':>7} {'floor p50':>9} "
                  f"{'ratio':>6} {'stop p50':>8} {'p95':>7} {'early':>5}")
        print(header)
        print("-" * len(header))
        floors: Dict[str, float] = {}
        warm_ready = 0.0
        for kind, delay in (("trivial", 0.0), ("late", 0.3)):
            bench = Bench(workdir, delay)
            rounds: Dict[str, List[Round]] = {label: [] for label, _ in approaches}
            for _ in range(args.rounds):
                for label, run in approaches:  # interleaved: drift hits all alike
                    rounds[label].append(run(bench))
            for label, _ in approaches:
                rs = rounds[label]
                ready = [r.ready * 1000 for r in rs]
                floor = [r.floor * 1000 for r in rs]
                stop = [r.stopped * 1000 for r in rs]
                print(f"{kind:8} {label:30} {statistics.median(ready):9.1f} "
                      f"{_pct(ready, 0.95):7.1f} {statistics.median(floor):9.1f} "
                      f"{statistics.median(ready) / statistics.median(floor):6.2f} "
                      f"{statistics.median(stop):8.1f} {_pct(stop, 0.95):7.1f} "
                      f"{sum(r.early for r in rs):5d}")
            if kind == "trivial":
                floors[kind] = statistics.median(
                    [r.floor for r in rounds["hand-written 1 ms TCP poll"]])
                warm_ready = statistics.median([r.ready for r in rounds["harness, app_code warm"]])
        print(f"\nwarm stdlib server: ready {warm_ready * 1000:.1f} ms = "
              f"{warm_ready / floors['trivial']:.2f}x the fresh floor "
              f"({floors['trivial'] * 1000:.1f} ms; target <= 0.25x)")
        try:
            import flask  # noqa: F401
        except ImportError:
            print("\n(Flask not installed: its rows are skipped)")
        else:
            times = flask_rounds(max(5, args.rounds // 2), workdir)
            print(f"\nminimal Flask app, {len(times['fresh'])} rounds, ms (median):")
            print(f"  hand-written floor (Popen, poll, first 200)  {_ms(times['floor']):8.1f}")
            print(f"  harness fresh                                {_ms(times['fresh']):8.1f}  "
                  f"stop {_ms(times['fresh stop']):.1f}")
            print(f"  harness warm (preload=['flask'])             {_ms(times['warm']):8.1f}  "
                  f"stop {_ms(times['warm stop']):.1f}")
            ratio = statistics.median(times["warm"]) / statistics.median(times["fresh"])
            print(f"  warm / fresh = {ratio:.3f} (target <= 0.15)")
            suite = {warm: flask_suite(args.suite, warm) for warm in (False, True)}
            print(f"\nsuite: {args.suite} tests, each with its own Flask server and one "
                  f"request: fresh {suite[False]:.2f} s, warm {suite[True]:.2f} s "
                  f"({suite[False] / suite[True]:.1f}x faster)")
        by_hand = callable_suite_by_hand(args.callables)
        harnessed = callable_suite_harness(args.callables)
        print(f"\nsuite: {args.callables} tests, each with its own callable server and one "
              f"request: forking by hand {by_hand:.2f} s, harness target= (warm) "
              f"{harnessed:.2f} s = {harnessed / by_hand:.2f}x (target <= 1.1x)")
        print()
        print_v01_rows(args.rounds, workdir)
        print("\nlaunch cost (median of 30 launches of `true`, ms):")
        for label, cost in launch_costs(30):
            print(f"  {label:38} {cost * 1000:6.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
