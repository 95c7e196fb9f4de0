"""Port pickers under contention: harness's allocator against the usual recipes.

8 worker processes start together; each picks 200 ports in turn and at once
binds and listens on each (with SO_REUSEADDR, as real servers do), holds it
a few ms, and closes it.  Per method we report picks per second (inside the
pick call only), bind failures, and duplicates: the same port held by two
workers at overlapping times.  The second run adds noise: every worker also
makes rapid outgoing connections on loopback, which take ephemeral ports.
The third adds a launch gap: 20 ms between the pick and the bind, as a real
server takes to start, which is where a probe-then-hope picker races.

    python tools/bench/ports.py [--workers 8] [--picks 200] [--hold-ms 3]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import socket
import statistics
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
# tools/bench/http.py would shadow the stdlib's http package: drop this folder.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.join(_HERE, "..", ".."))

import harness  # noqa: E402
from harness import ports as harness_ports  # noqa: E402


def _harness_picker() -> Tuple[Callable[[], int], Callable[[int], None]]:
    allocator = harness.PortAllocator()
    leases: Dict[int, harness.PortLease] = {}

    def pick() -> int:
        lease = allocator.acquire()
        leases[lease.port] = lease
        return lease.port

    def done(port: int) -> None:
        leases.pop(port).release()
    return pick, done


def _bind_zero() -> Tuple[Callable[[], int], Callable[[int], None]]:
    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    return pick, lambda port: None


def _write_up() -> Tuple[Callable[[], int], Callable[[int], None]]:
    """The incident write-up's method: random port in 9000-9100, connect + bind checks."""
    def free(port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return False
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def pick() -> int:
        for _ in range(1000):
            port = random.randint(9000, 9100)
            if free(port):
                return port
        raise RuntimeError("no free port in 9000-9100")
    return pick, lambda port: None


def _portpicker() -> Optional[Tuple[Callable[[], int], Callable[[int], None]]]:
    try:
        import portpicker
    except ImportError:
        return None
    return portpicker.pick_unused_port, portpicker.return_port


def _ephemeral_port_reserve() -> Optional[Tuple[Callable[[], int], Callable[[int], None]]]:
    try:
        import ephemeral_port_reserve
    except ImportError:
        return None
    return ephemeral_port_reserve.reserve, lambda port: None


def _port_for() -> Optional[Tuple[Callable[[], int], Callable[[int], None]]]:
    try:
        import port_for
    except ImportError:
        return None
    return port_for.select_random, lambda port: None


METHODS = {
    "harness PortAllocator": _harness_picker,
    "bind port 0, close": _bind_zero,
    "write-up: random 9000-9100": _write_up,
    "portpicker": _portpicker,
    "ephemeral-port-reserve": _ephemeral_port_reserve,
    "port-for": _port_for,
}


def _noise(sink: Tuple[str, int], stop: threading.Event) -> None:
    """Rapid outgoing loopback connections: each takes an ephemeral port."""
    while not stop.is_set():
        try:
            with socket.create_connection(sink, timeout=1):
                pass
        except OSError:
            pass


def _worker(method: str, picks: int, hold: float, gap: float, barrier, noise_sink,
            results) -> None:
    pick, done = METHODS[method]()  # type: ignore[misc]
    stop = threading.Event()
    noisers = []
    if noise_sink is not None:
        noisers = [threading.Thread(target=_noise, args=(noise_sink, stop), daemon=True)
                   for _ in range(2)]
        for thread in noisers:
            thread.start()
    barrier.wait()
    holds: List[Tuple[int, float, float]] = []
    failures = pick_errors = 0
    pick_time = 0.0
    for _ in range(picks):
        start = time.perf_counter()
        try:
            port = pick()
        except Exception:  # a picker that itself lost a race (or ran dry)
            pick_errors += 1
            continue
        finally:
            pick_time += time.perf_counter() - start
        if gap:
            time.sleep(gap)  # the server is starting up (benchmark workload)
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("127.0.0.1", port))
            server.listen(8)
        except OSError:
            failures += 1
            server.close()
            done(port)
            continue
        began = time.monotonic()
        time.sleep(hold)  # the "server" runs for a few ms (benchmark workload, not harness)
        # [began, ended] lies inside the real hold (after listen, before close),
        # so two overlapping spans are a real duplicate, never clock noise.
        holds.append((port, began, time.monotonic()))
        server.close()
        done(port)
    stop.set()
    for thread in noisers:
        thread.join()
    results.put((os.getpid(), pick_time, failures, holds, pick_errors))


def _duplicates(per_worker: Dict[int, List[Tuple[int, float, float]]]) -> int:
    """Holds of one port by two workers that overlap in time."""
    by_port: Dict[int, List[Tuple[float, float, int]]] = {}
    for pid, holds in per_worker.items():
        for port, began, ended in holds:
            by_port.setdefault(port, []).append((began, ended, pid))
    count = 0
    for spans in by_port.values():
        spans.sort()
        for (_b1, e1, p1), (b2, _e2, p2) in zip(spans, spans[1:]):
            if p1 != p2 and b2 < e1:
                count += 1
    return count


def run(method: str, workers: int, picks: int, hold: float, noisy: bool, gap: float) -> dict:
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    sink = sink_thread = None
    if noisy:
        sink = socket.socket()
        sink.bind(("127.0.0.1", 0))
        sink.listen(1024)

        def drain() -> None:
            while True:
                try:
                    conn, _ = sink.accept()
                except OSError:
                    return
                conn.close()
        sink_thread = threading.Thread(target=drain, daemon=True)
        sink_thread.start()
    procs = [ctx.Process(target=_worker, args=(method, picks, hold, gap, barrier,
                                               sink.getsockname() if sink else None, results))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    collected = [results.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join()
    if sink is not None:
        sink.close()
    pick_times = [c[1] for c in collected]
    return {
        "rate": picks / statistics.median(pick_times) if statistics.median(pick_times) else 0,
        "failures": sum(c[2] for c in collected),
        "pick_errors": sum(c[4] for c in collected),
        "duplicates": _duplicates({c[0]: c[3] for c in collected}),
        "picks": workers * picks,
    }


def single_process_rate(rounds: int = 5, leases: int = 2000) -> float:
    """Median leases per second (acquire + release) in one process."""
    allocator = harness.PortAllocator()
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(leases):
            allocator.acquire().release()
        rates.append(leases / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--picks", type=int, default=200)
    parser.add_argument("--hold-ms", type=float, default=3.0)
    args = parser.parse_args()
    print(f"{args.workers} workers x {args.picks} picks, each port held {args.hold_ms} ms; "
          f"ephemeral range {harness_ports.ephemeral_port_range()}, "
          f"harness default range {harness_ports.default_port_range()}")
    print(f"harness single-process leases/s (acquire+release, median of 5 x 2000): "
          f"{single_process_rate():,.0f}")
    header = (f"{'method':28} {'condition':22} {'picks/s/worker':>14} {'pick err':>9} "
              f"{'bind fail':>10} {'dupes':>6}")
    print(header)
    print("-" * len(header))
    conditions = [("quiet", False, 0.0), ("outgoing conns", True, 0.0),
                  ("conns + 20 ms launch", True, 0.02)]
    for condition, noisy, gap in conditions:
        for method, factory in METHODS.items():
            if factory() is None:
                print(f"{method:28} {'(not installed)':22}")
                continue
            result = run(method, args.workers, args.picks, args.hold_ms / 1000, noisy, gap)
            print(f"{method:28} {condition:22} {result['rate']:14,.0f} "
                  f"{result['pick_errors']:9d} {result['failures']:10d} "
                  f"{result['duplicates']:6d}")


if __name__ == "__main__":
    main()
