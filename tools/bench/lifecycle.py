"""Benchmark: time-to-ready and time-to-stopped of a server, side by side.

    python tools/bench/lifecycle.py [--rounds 30] [--quick]

Two stdlib HTTP servers: "trivial" (routes exist when it listens) and
"late" (listens at once, /health is 404 for ~300 ms).  Each writes the
``time.monotonic()`` (system-wide on Linux) of its listen() and of the moment
its routes exist, so the physical floor is known per round:

    floor = routes-exist timestamp - launch time + one request

Approaches: harness with a leased port, harness with handoff (argv and
app_code), mirakuru's HTTPExecutor (GET) when installed, a hand-written 1 ms
TCP-connect loop, the write-up's first band-aid (sleep 0.2 s, one check) and
its final approach (sleep 0.5 s, poll every 0.5 s, three checks, 2 s sleep
after stop).
After each "ready" verdict one GET /health is made: a 404 there is an early
(wrong) verdict, counted in the "early" column.
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
from typing import Callable, Dict, List, Tuple  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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

    def harness(self, handoff: bool, app_code: bool = False) -> Round:
        self._reset()
        if app_code:
            code = (f"import sys\nsys.argv[1:] = [{self.stamp!r}, {str(self.delay)!r}]\n" + SERVER)
            server = ServerProcess(code, handoff=handoff)
        else:
            server = ServerProcess(argv=self.argv(), handoff=handoff)
        launched = time.monotonic()
        server.start()
        ready = time.monotonic() - launched
        early = _get(server.port) != 200
        floor = _routes_at(self.stamp) - launched + _request_cost(server.port)
        started = time.monotonic()
        server.stop()
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


def _pct(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def shim_costs(rounds: int) -> List[Tuple[str, float]]:
    """Median cost of starting ``true`` directly and through each handoff shim."""
    from harness._server import launch as _launch
    true = shutil.which("true") or "/bin/true"
    ways = [("direct exec", [true]),
            ("sh shim (handoff, argv)", ["/bin/sh", "-c", _launch.SH_SHIM, "x", true]),
            ("python -I -S shim (fallback)", [sys.executable, "-I", "-S", "-c",
                                               _launch.PY_SHIM, true])]
    results = []
    for label, cmd in ways:
        times = []
        for _ in range(rounds):
            started = time.monotonic()
            subprocess.run(cmd, stdin=subprocess.DEVNULL, check=True)
            times.append(time.monotonic() - started)
        results.append((label, statistics.median(times)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true",
                        help="skip the write-up's approach (3.5 s per round)")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-lifecycle-")
    try:
        approaches: List[Tuple[str, Callable[[Bench], Round]]] = [
            ("harness, leased port", lambda b: b.harness(False)),
            ("harness, handoff (argv)", lambda b: b.harness(True)),
            ("harness, handoff (app_code)", lambda b: b.harness(True, app_code=True)),
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
        print("\nexec shim cost (median of 30 runs of `true`, ms):")
        for label, cost in shim_costs(30):
            print(f"  {label:30} {cost * 1000:6.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
