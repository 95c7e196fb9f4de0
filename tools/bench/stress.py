"""Stress: many server lifecycles at once on oversubscribed cores, harness against the write-up.

    python tools/bench/stress.py [--workers 8] [--lifecycles 240] [--oversubscribe 4]
                                 [--range 9000-9100] [--approach both|harness|writeup]
                                 [--seed 1] [--json]

Worker processes (``--workers``) each run their share of ``--lifecycles``
server lifecycles (start, readiness, a few requests with a content check,
stop) while ``--oversubscribe`` x cores processes burn CPU, so every
process waits for a core most of the time, as on a crowded CI machine.
Every worker draws its ports from the same tight ``--range`` at the same
time.  The servers are a mix (the same seeded schedule for both approaches):

    healthy      routes exist when it listens
    late_routes  listens at once; /health is 404, then 200 without "message",
                 for 0.3-0.9 s (the write-up's 404 and KeyError: 'message')
    slow_start   0.2-0.8 s of start-up work before it listens
    noisy        ~1.6 MB of output before it listens, a line per request
    crash        exits with code 3 at start          (expected failure)
    wrong_json   /health never has "message"         (expected failure)

Each server puts a per-lifecycle token in its answers, so an answer from
another lifecycle's server (a port race) is caught, not mistaken for success.

"harness" is ``ServerProcess`` with leased ports (half of the lifecycles
with ``handoff=True``) and an ``HttpCheck`` of the JSON; a crash must be a
``ServerStartError`` with the exit code, a wrong JSON a ``ServerNotReady``
naming the missing key ("classified").
"write-up" is the incident write-up's approach: a random port in the range
checked with connect + bind (no lease), the script written to
``test_server_{port}_{time}.py``, output to a pipe read only on failure, a
fixed 1 s sleep, one health check, requests retried 5 times 0.1 s apart,
terminate, and 2 s of "cleanup time".  Its crash is "classified" when its
error names the exit code; its wrong JSON cannot be told from late routes
(both are KeyError: 'message' after one check), so it never is.

At the end: leftover processes (anything still running with the run's
private TMPDIR in its environment), files left in that TMPDIR, port leases
still held in the range, and fds each worker leaked: all must be 0.
Exit code 0 when harness had no unexpected failure and left nothing behind.
"""
from __future__ import annotations

import os
import sys

# tools/bench/http.py would shadow the stdlib's http package for scripts here.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from typing import Any, Dict, List, Optional, Tuple  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from harness import HttpCheck, ServerProcess, is_port_free  # noqa: E402
from harness._os import procinfo as _procinfo  # noqa: E402
from harness._server import logstore, supervisor  # noqa: E402
from harness._wait import Deadline, backoff  # noqa: E402
from harness.errors import HarnessError, ServerNotReady, ServerStartError  # noqa: E402
from harness.ports import held_ports, lease_holders  # noqa: E402

# kind: (weight in the mix, the failure it must produce or None)
KINDS: Dict[str, Tuple[int, Optional[str]]] = {
    "healthy": (5, None),
    "late_routes": (3, None),
    "slow_start": (2, None),
    "noisy": (2, None),
    "crash": (1, "crash"),
    "wrong_json": (1, "wrong_json"),
}
REQUESTS = 5              # requests per lifecycle after readiness
START_TIMEOUT = 60.0      # harness: a hang-catcher; it returns as soon as the server is ready
WRONG_JSON_TIMEOUT = 3.0  # harness: how long a server may take to say "message"
WRITEUP_START_SLEEP = 1.0
WRITEUP_CLEANUP_SLEEP = 2.0
WRITEUP_RETRIES, WRITEUP_RETRY_DELAY = 5, 0.1
LEFTOVER_WAIT = 10.0      # how long exiting processes (zygotes) may take to go

SERVER = r'''
import json, os, socket, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

kind, token = os.environ["STRESS_KIND"], os.environ["STRESS_TOKEN"]
delay = float(os.environ["STRESS_DELAY"])
if kind == "crash":
    print("stress server: bad configuration, giving up", file=sys.stderr, flush=True)
    sys.exit(3)
if kind == "slow_start":
    time.sleep(delay)  # stands for slow imports and set-up work
if kind == "noisy":
    for i in range(20000):
        print(f"noisy start-up line {i:05d} " + "x" * 60)
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        age = time.monotonic() - listening_since
        late = kind == "late_routes"
        if late and age < delay / 2:
            status, body = 404, {"error": "no such route"}
        elif late and age < delay or kind == "wrong_json":
            status, body = 200, {"status": "starting"}
        else:
            status, body = 200, {"message": "ok", "token": token, "path": self.path}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if kind == "noisy":
            sys.stderr.write("request: " + fmt % args + "\n")


handed_off = os.environ.get("LISTEN_FDS") == "1"  # harness's handoff=True: the socket is fd 3
server = ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler,
                             bind_and_activate=not handed_off)
if handed_off:
    server.socket.close()
    server.socket = socket.socket(fileno=3)
listening_since = time.monotonic()
server.serve_forever()
'''


# ------------------------------------------------------------------ workers

class LifecycleResult:
    """One lifecycle: result is ok, expected (failed as it must, and said why),
    unclassified (failed as it must, without saying why) or unexpected.
    ``seconds``: start to stopped, or for a failure that was expected, start
    to the verdict."""

    def __init__(self, kind: str, result: str, why: str = "", seconds: float = 0.0) -> None:
        self.kind, self.result, self.why, self.seconds = kind, result, why, seconds
        self.handoff = False

    def to_json(self) -> Dict[str, Any]:
        return {"kind": self.kind, "result": self.result, "why": self.why,
                "seconds": round(self.seconds, 4), "handoff": self.handoff}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    line = re.sub(r"\b\d{4,}\b", "N", line)  # ports, pids
    line = re.sub(r"'stress-\w+'", "'stress-...'", line)
    return f"{type(error).__name__}: {line[:140]}"


def harness_lifecycle(kind: str, delay: float, handoff: bool,
                      port_range: Tuple[int, int]) -> LifecycleResult:
    token = secrets.token_hex(8)
    expected = KINDS[kind][1]
    start = time.monotonic()
    server = ServerProcess(
        SERVER, env={"STRESS_KIND": kind, "STRESS_TOKEN": token, "STRESS_DELAY": f"{delay:.3f}"},
        port_range=port_range, handoff=handoff, name=f"stress-{kind}",
        health=HttpCheck("/health", json={"message": "ok", "token": token}),
        start_timeout=WRONG_JSON_TIMEOUT if kind == "wrong_json" else START_TIMEOUT)
    try:
        server.start()
    except ServerStartError as error:
        seconds = time.monotonic() - start
        if error.log_path:  # a failed start keeps its log for the user: ours to remove
            logstore.discard(error.log_path)
        text = str(error)
        if expected == "crash" and not isinstance(error, ServerNotReady):
            ok = error.returncode == 3 and "bad configuration" in text
            return LifecycleResult(kind, "expected" if ok else "unclassified",
                                   _first_line(error), seconds)
        if expected == "wrong_json" and isinstance(error, ServerNotReady):
            ok = "'message'" in text and "starting" in text
            return LifecycleResult(kind, "expected" if ok else "unclassified",
                                   _first_line(error), seconds)
        return LifecycleResult(kind, "unexpected", _first_line(error), seconds)
    except HarnessError as error:
        return LifecycleResult(kind, "unexpected", _first_line(error), time.monotonic() - start)
    why = ""
    try:
        if expected is not None:
            why = f"started a server that should have failed ({expected})"
        for i in range(REQUESTS):
            server.get(f"/work/{i}", expect_status=200,
                       expect_json={"token": token, "path": f"/work/{i}"})
    except HarnessError as error:
        why = why or _first_line(error)
    finally:
        try:
            code = server.stop()
            if code != 143 and not why:  # an app_code server exits 143 on SIGTERM
                why = f"unclean stop: exit code {code}"
        except HarnessError as error:
            why = why or _first_line(error)
    return LifecycleResult(kind, "unexpected" if why else "ok", why, time.monotonic() - start)


class _WriteupFailure(Exception):
    pass


def _writeup_get(port: int, path: str, token: str) -> None:
    """One GET with the write-up's validation: status, then the "message" key."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise _WriteupFailure(f"HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise _WriteupFailure(f"{type(reason).__name__}: {reason}") from None
    try:
        data["message"]
    except KeyError as error:
        raise _WriteupFailure(f"KeyError: {error}") from None
    if data.get("token") != token:
        raise _WriteupFailure("answered by another lifecycle's server (port race)")


def writeup_lifecycle(kind: str, delay: float, handoff: bool,  # noqa: C901 (the write-up's steps, in its order)
                      port_range: Tuple[int, int]) -> LifecycleResult:
    """(``handoff`` is harness's; the write-up has no such thing.)"""
    token = secrets.token_hex(8)
    expected = KINDS[kind][1]
    start = time.monotonic()
    lo, hi = port_range
    rng = random.SystemRandom()
    # The write-up's check is exactly is_port_free (connect refused, plain bind
    # succeeds); what it lacks is the lease that keeps the port ours afterwards.
    port = next((p for p in (rng.randint(lo, hi) for _ in range(100)) if is_port_free(p)), None)
    if port is None:
        return LifecycleResult(kind, "unexpected", "no free port found in 100 tries", 0.0)
    script = os.path.join(tempfile.gettempdir(), f"test_server_{port}_{int(time.time())}.py")
    with open(script, "w") as f:
        f.write(SERVER)
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", STRESS_KIND=kind,
               STRESS_TOKEN=token, STRESS_DELAY=f"{delay:.3f}")
    proc = subprocess.Popen([sys.executable, script], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    why = ""
    detected = 0.0
    try:
        time.sleep(WRITEUP_START_SLEEP)
        try:
            _writeup_get(port, "/health", token)  # the single check
        except _WriteupFailure as error:
            detected = time.monotonic() - start
            code = proc.poll()  # "better error reporting with full process output"
            why = f"server exited with code {code}" if code is not None else f"health: {error}"
            output = proc.communicate()[0] if code is not None else b""
            if b"Address already in use" in output:
                why += " (Address already in use)"
            elif code == 0 and not output:  # the server never returns: it ran an empty file
                why += (" at once, silently: its script, named by port and second, "
                        "was being rewritten by another lifecycle")
        if not why:
            for i in range(REQUESTS):
                for attempt in range(WRITEUP_RETRIES):
                    try:
                        _writeup_get(port, f"/work/{i}", token)
                        break
                    except _WriteupFailure as error:
                        if attempt == WRITEUP_RETRIES - 1:
                            raise
                        why = str(error)
                        time.sleep(WRITEUP_RETRY_DELAY)
                why = ""
    except _WriteupFailure as error:
        why = f"request: {error}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        time.sleep(WRITEUP_CLEANUP_SLEEP)
        try:
            os.remove(script)
        except OSError:
            pass
    seconds = time.monotonic() - start
    if expected == "crash" and why:
        return LifecycleResult(kind, "expected" if "code 3" in why else "unclassified", why,
                               detected)
    if expected == "wrong_json" and why:
        return LifecycleResult(kind, "unclassified", why, detected)
    if expected is not None:
        why = f"started a server that should have failed ({expected})"
    return LifecycleResult(kind, "unexpected" if why else "ok", why, seconds)


def _open_fds() -> Optional[set]:
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    return {name for name in names if _is_open(int(name))}  # not listdir's own, closed now


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def plan(seed: int, worker: int, count: int) -> List[Tuple[str, float, bool]]:
    """The same (kind, delay, handoff) schedule for a worker under either approach.

    Half of harness's lifecycles hand the listening socket over (fd 3), half
    let the server bind the leased port itself.
    """
    rng = random.Random(f"{seed}/{worker}")
    names = list(KINDS)
    kinds = rng.choices(names, weights=[KINDS[n][0] for n in names], k=count)
    return [(kind, round(rng.uniform(0.2, 0.9), 3), rng.random() < 0.5) for kind in kinds]


def worker_main(approach: str, seed: int, worker: int, count: int,
                port_range: Tuple[int, int]) -> None:
    lifecycle = harness_lifecycle if approach == "harness" else writeup_lifecycle
    fds_before = _open_fds()
    outcomes = []
    for kind, delay, handoff in plan(seed, worker, count):
        try:
            outcome = lifecycle(kind, delay, handoff, port_range)
        except Exception as error:  # a bug in the lifecycle itself: counted, never hidden
            outcome = LifecycleResult(kind, "unexpected", f"worker: {_first_line(error)}")
        outcome.handoff = handoff and approach == "harness"
        outcomes.append(outcome)
    fds_after = _open_fds()
    leaked = set() if fds_before is None or fds_after is None else fds_after - fds_before
    leaked -= {str(fd) for fd in supervisor.own_fds()}  # they live as long as the runner
    report = {"outcomes": [o.to_json() for o in outcomes], "leases_held": len(held_ports()),
              "fds_leaked": len(leaked)}
    sys.stdout.write(json.dumps(report) + "\n")


# ------------------------------------------------------------------ the run

def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _ours(pid: int, tmpdir: str) -> bool:
    """Started by this run's workers: they all carry its private TMPDIR."""
    env = _procinfo.environ(pid)
    return bool(env) and env.get("TMPDIR") == tmpdir and pid != os.getpid()


def _leftover_processes(tmpdir: str) -> List[str]:
    return [f"pid {pid}: {_procinfo.short_cmdline(_procinfo.cmdline(pid), 80)}"
            for pid in _procinfo.all_pids() if _ours(pid, tmpdir)]


def _wait_no_leftovers(tmpdir: str) -> List[str]:
    """Exiting processes (each runner's zygote) may take a moment to go."""
    deadline = Deadline(LEFTOVER_WAIT)
    for pause in backoff():
        found = _leftover_processes(tmpdir)
        if not found or deadline.expired:
            break
        time.sleep(deadline.cap(pause))
    return found


def run_approach(approach: str, port_range: Tuple[int, int], args: argparse.Namespace,
                 base: str) -> Dict[str, Any]:
    tmpdir = os.path.join(base, approach)
    os.mkdir(tmpdir, 0o700)
    shares = [args.lifecycles // args.workers + (1 if i < args.lifecycles % args.workers else 0)
              for i in range(args.workers)]
    env = dict(os.environ, TMPDIR=tmpdir, PYTHONDONTWRITEBYTECODE="1")
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                stdin=subprocess.DEVNULL)
               for _ in range(args.oversubscribe * _cores())]
    start = time.monotonic()
    workers = []
    try:
        for i, share in enumerate(shares):
            # Open until the worker is collected below (closed there).
            err = open(os.path.join(base, f"{approach}-worker-{i}.err"), "w")  # noqa: SIM115
            argv = [sys.executable, os.path.abspath(__file__), "--worker", approach, str(i),
                    str(share), "--seed", str(args.seed),
                    "--range", f"{port_range[0]}-{port_range[1]}"]
            workers.append((subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=err), err))
        reports = []
        for i, (proc, err) in enumerate(workers):
            out, _ = proc.communicate(timeout=max(600.0, 30.0 * shares[i]))
            err.close()
            lines = out.decode().strip().splitlines()
            if proc.returncode != 0 or not lines:
                with open(err.name) as f:
                    tail = f.read()[-2000:]
                raise SystemExit(f"{approach} worker {i} exited with {proc.returncode}:\n{tail}")
            reports.append(json.loads(lines[-1]))
    finally:
        for proc, err in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err.close()
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()
    wall = time.monotonic() - start
    leftovers = _wait_no_leftovers(tmpdir)
    files = sorted(os.listdir(tmpdir))
    # A lease still held by a process of this run (a server that inherited it,
    # say); other users of the same range may hold theirs.
    leases = {p: [pid for pid in lease_holders(p) if _ours(pid, tmpdir)]
              for p in range(port_range[0], port_range[1] + 1)}
    return {
        "approach": approach, "range": f"{port_range[0]}-{port_range[1]}", "wall": wall,
        "outcomes": [o for r in reports for o in r["outcomes"]],
        "leftover_processes": leftovers, "leftover_files": files,
        "leases_held": sum(r["leases_held"] for r in reports)
        + sum(1 for holders in leases.values() if holders),
        "fds_leaked": sum(r["fds_leaked"] for r in reports),
    }


def summarise(result: Dict[str, Any]) -> Dict[str, Any]:
    outcomes = result["outcomes"]
    by = collections.Counter(o["result"] for o in outcomes)
    must_fail = [o for o in outcomes if KINDS[o["kind"]][1] is not None]
    ok_times = [o["seconds"] for o in outcomes if o["result"] == "ok"]
    crash_times = [o["seconds"] for o in must_fail
                   if o["kind"] == "crash" and o["result"] != "unexpected"]
    unexpected = collections.Counter(f"{o['kind']}: {o['why']}" for o in outcomes
                                     if o["result"] == "unexpected")
    return {
        "approach": result["approach"], "range": result["range"],
        "lifecycles": len(outcomes), "ok": by["ok"],
        "handoff": sum(1 for o in outcomes if o["handoff"]),
        "unexpected": by["unexpected"], "must_fail": len(must_fail),
        "classified": by["expected"], "unclassified": by["unclassified"],
        "p50_ok": statistics.median(ok_times) if ok_times else None,
        "p50_crash": statistics.median(crash_times) if crash_times else None,
        "leftover_processes": len(result["leftover_processes"]),
        "leftover_files": len(result["leftover_files"]),
        "leases_held": result["leases_held"], "fds_leaked": result["fds_leaked"],
        "wall": result["wall"], "unexpected_kinds": dict(unexpected.most_common()),
        "leftover_details": result["leftover_processes"][:5] + result["leftover_files"][:5],
    }


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def render(summaries: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    ranges = ", ".join(f"{s['approach']} {s['range']}" for s in summaries)
    lines = [f"{args.workers} workers, {args.lifecycles} lifecycles per approach, ports "
             f"{ranges}, {args.oversubscribe * _cores()} CPU burners on "
             f"{_cores()} cores ({args.oversubscribe}x oversubscribed), seed {args.seed}",
             "",
             f"{'approach':9} {'runs':>5} {'ok':>5} {'unexpected':>10} {'expected fail':>13} "
             f"{'classified':>10} {'ok p50 ms':>9} {'crash seen ms':>13} "
             f"{'left: procs':>11} {'files':>5} {'leases':>6} {'fds':>4} {'wall s':>7}",
             "-" * 118]
    for s in summaries:
        lines.append(
            f"{s['approach']:9} {s['lifecycles']:5} {s['ok']:5} {s['unexpected']:10} "
            f"{s['must_fail']:13} {s['classified']:10} {_ms(s['p50_ok']):>9} "
            f"{_ms(s['p50_crash']):>13} {s['leftover_processes']:11} {s['leftover_files']:5} "
            f"{s['leases_held']:6} {s['fds_leaked']:4} {s['wall']:7.1f}")
    for s in summaries:
        if s["handoff"]:
            lines.append(f"({s['approach']}: {s['handoff']} of {s['lifecycles']} lifecycles "
                         f"with handoff=True, the rest on a leased port)")
    if len(summaries) == 2 and all(s["p50_ok"] for s in summaries):
        h, w = summaries
        lines.append(f"\nmedian successful lifecycle: {w['approach']} / {h['approach']} = "
                     f"{w['p50_ok'] / h['p50_ok']:.1f}x; wall time {w['wall'] / h['wall']:.1f}x")
    for s in summaries:
        if s["unexpected_kinds"]:
            lines.append(f"\n{s['approach']}: unexpected failures by server kind and symptom")
            for what, n in s["unexpected_kinds"].items():
                lines.append(f"  {n:4}  {what}")
        if s["leftover_details"]:
            lines.append(f"\n{s['approach']}: left behind")
            lines.extend(f"  {what}" for what in s["leftover_details"])
    return "\n".join(lines)


def _port_range(text: str) -> Tuple[int, int]:
    match = re.fullmatch(r"(\d+)-(\d+)", text)
    if not match or not 1024 <= int(match[1]) <= int(match[2]) <= 65535:
        raise argparse.ArgumentTypeError(
            f"--range must be LOW-HIGH within 1024-65535, got {text!r}")
    return int(match[1]), int(match[2])


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=_positive, default=8)
    parser.add_argument("--lifecycles", type=_positive, default=240,
                        help="per approach, spread over the workers (default 240)")
    parser.add_argument("--oversubscribe", type=int, default=4,
                        help="CPU burners per core (default 4; 0 for none)")
    parser.add_argument("--range", type=_port_range, default=(9000, 9100),
                        help="the first approach's ports; the second gets the next block "
                             "of the same size (default 9000-9100)")
    parser.add_argument("--approach", choices=("both", "harness", "writeup"), default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    parser.add_argument("--worker", nargs=3, metavar=("APPROACH", "INDEX", "COUNT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        approach, index, count = args.worker
        worker_main(approach, args.seed, int(index), int(count), args.range)
        return 0
    if args.oversubscribe < 0:
        parser.error("--oversubscribe must be 0 or more")
    approaches = ["harness", "writeup"] if args.approach == "both" else [args.approach]
    base = tempfile.mkdtemp(prefix="stress-")
    try:
        # Each approach gets its own block of ports of the same size: the
        # TIME_WAIT connections one leaves behind must not burden the other.
        size = args.range[1] - args.range[0] + 1
        summaries = [summarise(run_approach(
            a, (args.range[0] + i * size, args.range[1] + i * size), args, base))
            for i, a in enumerate(approaches)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(summaries, indent=2) if args.json else render(summaries, args))
    harness_summary = next((s for s in summaries if s["approach"] == "harness"), None)
    if harness_summary is None:
        return 0
    bad = (harness_summary["unexpected"] + harness_summary["unclassified"]
           + harness_summary["leftover_processes"] + harness_summary["leftover_files"]
           + harness_summary["leases_held"] + harness_summary["fds_leaked"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
