"""Requests per second: harness's load() and request() beside plain clients, per server.

Is the client or the server the bottleneck?  Each server runs in its own
process (so it does not share the client's GIL) on a socket handed to it:

* raw:        a minimal single-threaded selectors server, canned keep-alive answer
              (as fast as a Python server gets: shows the clients' own cost);
* stdlib:     ThreadingHTTPServer, HTTP/1.1 keep-alive, TCP_NODELAY, backlog 128
              (what harness's tests use);
* nagle:      the same with Nagle left on (send_response/end_headers/write is two
              writes: the body waits for the client's delayed ACK, ~40 ms);
* http1.0/5:  ThreadingHTTPServer with every default: HTTP/1.0 (a new connection
              per request) and listen backlog 5 (socketserver's request_queue_size);
* http1.0/128: the same with backlog 128.

Clients: a plain http.client loop on one keep-alive connection; harness
load() at concurrency 1 and 16; harness request() in a loop (a new connection
and validation per call); requests.Session and urllib3 loops when installed.
Each cell runs up to --requests requests or --seconds seconds and reports
the median rate of --repeats runs (clients interleaved, after a discarded
warm-up round); "x" is the ratio to the http.client loop on the same server.

    python tools/bench/http.py [--requests 1000] [--seconds 2] [--repeats 3]

``--clients load,urllib3`` and ``--servers raw,stdlib`` keep only the
clients whose name contains one of the words (the http.client loop, the
base of "x", always runs) and the servers named.

``--deadlines`` measures instead how long each call takes to give up on a
server that trickles its answer one byte every 0.2 s (and on one that
accepts and never answers), against the deadline it was given: the median
and the largest overshoot of --repeats runs.

    python tools/bench/http.py --deadlines [--repeats 7]

``--unannounced`` measures load() against an HTTP/1.1 server that closes
every connection after its answer without saying ``Connection: close``
(issue 21): requests ok, connections found closed before reuse (stale),
requests resent, and the rate, at concurrency 1, 4 and 16.

    python tools/bench/http.py --unannounced [--requests 1000] [--repeats 3]
"""
from __future__ import annotations

import os
import sys

# This file is named http.py: its own directory must not be on sys.path, or it
# would shadow the standard library's http package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.join(_HERE, "..", ".."))

import argparse  # noqa: E402
import http.client  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Callable, Dict, List, Optional, Tuple  # noqa: E402

from harness import ports  # noqa: E402
from harness.checks import HttpCheck  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.http import load, request  # noqa: E402

RAW_SERVER = r"""
import selectors, socket, sys
listener = socket.socket(fileno=int(sys.argv[1]))
listener.setblocking(False)
answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
sel = selectors.DefaultSelector()
sel.register(listener, selectors.EVENT_READ)
pending = {}
while True:
    for key, _ in sel.select():
        if key.fileobj is listener:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(conn, selectors.EVENT_READ)
            pending[conn] = b""
            continue
        conn = key.fileobj
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            sel.unregister(conn)
            conn.close()
            del pending[conn]
            continue
        buf = pending[conn] + data
        count = buf.count(b"\r\n\r\n")  # GETs without bodies: one request per blank line
        if count:
            pending[conn] = buf[buf.rfind(b"\r\n\r\n") + 4:]
            conn.sendall(answer * count)
        else:
            pending[conn] = buf
"""

STDLIB_SERVER = r"""
import http.server, socket, sys
fd, protocol, nodelay, backlog = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
unannounced_close = sys.argv[5:] == ["close"]  # close after each answer, without saying so
listener = socket.socket(fileno=fd)
listener.listen(backlog)  # the backlog the stdlib server would have set itself

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = protocol
    disable_nagle_algorithm = nodelay
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
        self.close_connection = self.close_connection or unannounced_close
    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def __init__(self):
        super().__init__(listener.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener

Server().serve_forever()
"""

HOSTILE_SERVER = r"""
import socket, sys, threading, time
listener = socket.socket(fileno=int(sys.argv[1]))
mode = sys.argv[2]
answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" if mode != "portserver" else b"1" * 60

def serve(conn):
    try:
        conn.recv(4096)
        if mode == "silent":
            time.sleep(60)
        for byte in answer:  # one byte every 0.2 s
            conn.sendall(bytes([byte]))
            time.sleep(0.2)
    except OSError:
        pass
    finally:
        conn.close()

while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

SERVERS: List[Tuple[str, str, List[str]]] = [
    ("raw", RAW_SERVER, []),
    ("stdlib", STDLIB_SERVER, ["HTTP/1.1", "1", "128"]),
    ("nagle", STDLIB_SERVER, ["HTTP/1.1", "0", "128"]),
    ("http1.0/5", STDLIB_SERVER, ["HTTP/1.0", "0", "5"]),
    ("http1.0/128", STDLIB_SERVER, ["HTTP/1.0", "0", "128"]),
]


class Server:
    """A benchmark server in a child process, on a listening socket we hand it."""

    def __init__(self, code: str, args: List[str]) -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(listener.fileno()), *args],
                pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            listener.close()
        request("GET", self.url, timeout=30, expect_status=200)  # up and answering

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


# Each client returns (requests done, seconds); at most `count` requests or `seconds`.
Client = Callable[[str, int, float], Tuple[int, float]]


def plain_loop(url: str, count: int, seconds: float) -> Tuple[int, float]:
    port = int(url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    done = 0
    start = time.perf_counter()
    end = start + seconds
    try:
        while done < count and time.perf_counter() < end:
            conn.request("GET", "/")
            answer = conn.getresponse()
            answer.read()
            if answer.will_close:
                conn.close()
            done += answer.status == 200
    finally:
        conn.close()
    return done, time.perf_counter() - start


def load_client(concurrency: int) -> Client:
    def run(url: str, count: int, seconds: float) -> Tuple[int, float]:
        result = load(url, requests=count, concurrency=concurrency, timeout=10,
                      deadline=seconds)
        return result.ok, result.duration
    return run


def request_loop(url: str, count: int, seconds: float) -> Tuple[int, float]:
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while done < count and time.perf_counter() < end:
        request("GET", url, expect_status=200)
        done += 1
    return done, time.perf_counter() - start


def requests_loop() -> Optional[Client]:
    try:
        import requests
    except ImportError:
        return None

    def run(url: str, count: int, seconds: float) -> Tuple[int, float]:
        done = 0
        with requests.Session() as session:
            start = time.perf_counter()
            end = start + seconds
            while done < count and time.perf_counter() < end:
                done += session.get(url, timeout=10).status_code == 200
            return done, time.perf_counter() - start
    return run


def urllib3_loop() -> Optional[Client]:
    try:
        import urllib3
    except ImportError:
        return None

    def run(url: str, count: int, seconds: float) -> Tuple[int, float]:
        done = 0
        with urllib3.PoolManager(maxsize=1) as pool:
            start = time.perf_counter()
            end = start + seconds
            while done < count and time.perf_counter() < end:
                done += pool.request("GET", url, timeout=10).status == 200
            return done, time.perf_counter() - start
    return run


class Hostile:
    """HOSTILE_SERVER in a child process on a TCP or Unix listener we hand it."""

    def __init__(self, mode: str, unix_path: Optional[str] = None) -> None:
        if unix_path is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(unix_path)
        else:
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.host, self.port = "127.0.0.1", (listener.getsockname()[1] if unix_path is None
                                             else 0)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", HOSTILE_SERVER, str(listener.fileno()), mode],
                pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            listener.close()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def give_up_time(call: Callable[[], object]) -> float:
    started = time.monotonic()
    try:
        call()
    except HarnessError:
        pass
    return time.monotonic() - started


Row = Tuple[str, str, float, float, float]


def measure(mode: str, repeats: int) -> List[Row]:
    server = Hostile(mode)
    url = server.url + "/"
    cases: List[Tuple[str, float, Callable[[], object]]] = [
        ("request(timeout=0.5, deadline=1.0)", 1.0,
         lambda: request("GET", url, timeout=0.5, deadline=1.0)),
        ("request(timeout=0.5, retry=1)", 0.5,
         lambda: request("GET", url, timeout=0.5, retry=1)),
        ("load(requests=20, concurrency=4, deadline=1.0)", 1.0,
         lambda: load(url, requests=20, concurrency=4, timeout=5, deadline=1.0)),
        ("HttpCheck().probe(server, 0.5)", 0.5,
         lambda: HttpCheck().probe(server, 0.5)),
    ]
    rows = []
    try:
        for name, limit, call in cases:
            times = [give_up_time(call) for _ in range(repeats)]
            rows.append((mode, name, limit, statistics.median(times), max(times)))
    finally:
        server.close()
    return rows


def deadlines(repeats: int) -> None:
    import tempfile
    print(f"seconds to give up (median, max of {repeats} runs) against a server that "
          f"trickles one byte per 0.2 s or never answers; Python {sys.version.split()[0]}\n")
    rows = measure("trickle", repeats) + measure("silent", repeats)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "portserver.sock")
        server = Hostile("portserver", unix_path=path)
        os.environ[ports.PORTSERVER_VAR] = path
        import logging
        logging.getLogger("harness").setLevel(logging.ERROR)  # the warning each run is expected
        try:
            times = []
            for _ in range(repeats):
                started = time.monotonic()
                ports.release_port(ports.find_free_port())
                times.append(time.monotonic() - started)
            rows.append(("trickle", "find_free_port() with PORTSERVER_ADDRESS", 1.0,
                         statistics.median(times), max(times)))
        finally:
            del os.environ[ports.PORTSERVER_VAR]
            server.close()
    for mode, name, limit, median, worst in rows:
        print(f"  {mode:<8} {name:<48} limit {limit:.1f}  median {median:.4f}  "
              f"max {worst:.4f}  (+{1000 * (worst - limit):.1f} ms)")


def unannounced(requests: int, repeats: int) -> None:
    """load() against a server closing every connection after its answer, unannounced."""
    server = Server(STDLIB_SERVER, ["HTTP/1.1", "1", "128", "close"])
    print(f"harness load(), {requests} requests, against an HTTP/1.1 server closing each "
          f"connection after its answer without saying so; median of {repeats} runs; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    try:
        for concurrency in (1, 4, 16):
            results = [load(server.url, requests=requests, concurrency=concurrency, timeout=10,
                            deadline=60) for _ in range(repeats)]
            middle = sorted(results, key=lambda r: r.throughput)[len(results) // 2]
            errors = f" {middle.errors}" if middle.errors else ""
            print(f"  c={concurrency:<3} ok {middle.ok}/{middle.requests}, failed "
                  f"{middle.failed}{errors}, {middle.connections} connections, "
                  f"stale {middle.stale}, resent {middle.resent}, "
                  f"{middle.throughput:.0f} ok/s")
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", default="",
                        help="comma-separated words: keep the clients whose name has one")
    parser.add_argument("--servers", default="",
                        help="comma-separated server names: " + ", ".join(s[0] for s in SERVERS))
    parser.add_argument("--deadlines", action="store_true",
                        help="measure how long calls take to give up on hostile servers")
    parser.add_argument("--unannounced", action="store_true",
                        help="load() against a server that closes connections unannounced")
    opts = parser.parse_args()
    if opts.deadlines:
        deadlines(opts.repeats)
        return
    if opts.unannounced:
        unannounced(opts.requests, opts.repeats)
        return

    clients: List[Tuple[str, Optional[Client]]] = [
        ("http.client loop (c=1)", plain_loop),
        ("harness load() c=1", load_client(1)),
        ("harness load() c=16", load_client(16)),
        ("harness request() loop", request_loop),
        ("requests.Session loop", requests_loop()),
        ("urllib3 PoolManager loop", urllib3_loop()),
    ]
    words = [w for w in opts.clients.split(",") if w]
    clients = [(name, c) for name, c in clients if c is not None and (
        not words or name == "http.client loop (c=1)" or any(w in name for w in words))]
    wanted = [w for w in opts.servers.split(",") if w]
    unknown = set(wanted) - {s[0] for s in SERVERS}
    if unknown:
        parser.error(f"--servers: no server named {', '.join(sorted(unknown))}")
    servers = [s for s in SERVERS if not wanted or s[0] in wanted]
    rates: Dict[Tuple[str, str], float] = {}
    tails: Dict[str, str] = {}
    for server_name, code, args in servers:
        server = Server(code, args)
        try:
            runs: Dict[str, List[float]] = {name: [] for name, _ in clients}
            for repeat in range(-1, opts.repeats):  # run -1 is a warm-up, discarded
                for client_name, client in clients:  # interleaved, so drift hits all alike
                    done, took = client(server.url, opts.requests, opts.seconds)  # type: ignore
                    if repeat >= 0:
                        runs[client_name].append(done / took if took > 0 else 0.0)
            for client_name, _ in clients:
                rates[(client_name, server_name)] = statistics.median(runs[client_name])
                print(f"  {server_name:<12} {client_name:<26} "
                      f"{rates[(client_name, server_name)]:>9.0f} req/s", file=sys.stderr)
            result = load(server.url, requests=opts.requests, concurrency=16, timeout=10,
                          deadline=max(opts.seconds, 10.0))
            tails[server_name] = (f"ok {result.ok}/{result.requests}, p50 "
                                  f"{1000 * (result.p50 or 0):.1f} ms, p99 "
                                  f"{1000 * (result.p99 or 0):.1f} ms, max "
                                  f"{1000 * (result.latencies[-1] if result.latencies else 0):.0f}"
                                  f" ms, {result.connections} connections")
        finally:
            server.close()

    names = [s[0] for s in servers]
    width = max(len(n) for n, _ in clients)
    print(f"\nrequests/s, median of {opts.repeats} runs of up to {opts.requests} requests or "
          f"{opts.seconds:g} s (x = ratio to the http.client loop on the same server); "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print(f"{'client':<{width}} " + " ".join(f"{n:>16}" for n in names))
    for client_name, _ in clients:
        cells = []
        for server_name in names:
            rate = rates[(client_name, server_name)]
            base = rates[("http.client loop (c=1)", server_name)]
            cells.append(f"{rate:>8.0f} {rate / base if base else 0:>5.2f}x")
        print(f"{client_name:<{width}} " + " ".join(f"{c:>16}" for c in cells))
    print(f"\nharness load(), {opts.requests} requests at concurrency 16, latencies:")
    for server_name in names:
        print(f"  {server_name:<12} {tails[server_name]}")


if __name__ == "__main__":
    main()
