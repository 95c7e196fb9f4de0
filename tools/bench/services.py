"""Benchmark: harness.services against the bare programs and pytest-postgresql/pytest-redis.

    python tools/bench/services.py [--runs 7] [--tests 50]
        [--as-user hbench --python /path/to/venv/bin/python]

Side by side in one run, medians of ``--runs``:

* the floor: the bare program on a prepared directory (``postgres`` on a
  copy of an initdb cluster, ``redis-server``, ``memcached``), timed from
  spawn to the first answer of its own protocol (ReadyForQuery, PONG,
  VERSION) with this script's probe;
* harness: ``Postgres().start()`` with the cache warm (a spare copy taken)
  and cold (an empty ``HARNESS_CACHE_DIR``), ``Redis().start()``,
  ``Memcached().start()``, in a process whose zygote is already up (a
  suite pays that once);
* a fresh database per test: what ``fresh_database()`` costs the test over
  ``--tests`` tests that each create a table, insert and select;
* a ``--tests``-test pytest suite with a fresh database per test, whole
  wall time, harness vs pytest-postgresql (``postgresql`` fixture), and a
  Redis suite vs pytest-redis, run as ``--as-user`` (pytest-postgresql
  refuses root) with ``--python`` (a venv that has pytest-postgresql,
  pytest-redis, psycopg and redis).  Skipped without ``--as-user``.
"""
from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
# This directory has an http.py of its own: the checkout, not it, goes first.
sys.path[0] = os.path.dirname(os.path.dirname(HERE))

from harness.services import (  # noqa: E402
    Memcached,
    Postgres,
    Redis,
    _pgwire,
    wait_background,
)
from harness.services.postgres import DEFAULT_SETTINGS  # noqa: E402


def median_ms(values: List[float]) -> float:
    return statistics.median(values) * 1000


def wait_answer(probe: Callable[[], bool], proc: "subprocess.Popen[bytes]",
                limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the program exited with {proc.returncode}")
        try:
            if probe():
                return
        except (OSError, _pgwire.PgError, _pgwire.ProtocolError):
            pass
        time.sleep(0.0005)
    raise RuntimeError("no answer")


def as_user(uid: Optional[int], gid: Optional[int]) -> Optional[Callable[[], None]]:
    if uid is None:
        return None

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid if gid is not None else uid)
        os.setuid(uid)
    return drop


# ---------------------------------------------------------------- floors

def postgres_floor(runs: int) -> Dict[str, float]:
    pg = Postgres()
    assert pg.unavailable() is None, pg.unavailable()
    uid, gid = pg.spec.uid, pg.spec.gid
    ready = pg.cache_key()
    from harness.services._cache import Entry, chown_tree
    entry = Entry(ready)
    if not entry.exists():
        Postgres().start().stop()
        wait_background(120)
    starts, initdbs = [], []
    for _ in range(runs):
        work = tempfile.mkdtemp()
        try:
            data = os.path.join(work, "data")
            shutil.copytree(entry.ready, data, symlinks=True)
            with open(os.path.join(data, "pg_hba.conf"), "w") as f:
                f.write("local all all trust\n")
            chown_tree(work, uid, gid)
            port = free_port()
            argv = [pg.binary("postgres"), "-D", data, "-p", str(port), "-h", "127.0.0.1",
                    "-k", work] + sum((["-c", f"{k}={v}"] for k, v in DEFAULT_SETTINGS.items()),
                                      [])
            sock = os.path.join(work, f".s.PGSQL.{port}")
            started = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    preexec_fn=as_user(uid, gid))

            def probe(path: str = sock) -> bool:
                _pgwire.connect(unix_path=path, database="template1", timeout=2).close()
                return True
            try:
                wait_answer(probe, proc)
                starts.append(time.perf_counter() - started)
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(30)
            target = os.path.join(work, "initdb")
            os.mkdir(target, 0o700)
            chown_tree(target, uid, gid)
            started = time.perf_counter()
            subprocess.run([pg.binary("initdb"), "-D", target, "-U", "postgres", "--auth=trust",
                            "--no-sync", "-E", "UTF8", "--locale=C", "--wal-segsize=1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                           preexec_fn=as_user(uid, gid), cwd="/")
            initdbs.append(time.perf_counter() - started)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return {"floor": median_ms(starts), "initdb": median_ms(initdbs)}


def program_floor(argv_of: Callable[[int, str], List[str]], probe_of: Callable[[int, str], bool],
                  runs: int) -> float:
    times = []
    for _ in range(runs):
        work = tempfile.mkdtemp()
        port = free_port()
        started = time.perf_counter()
        proc = subprocess.Popen(argv_of(port, work), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_answer(lambda port=port, work=work: probe_of(port, work), proc)
            times.append(time.perf_counter() - started)
        finally:
            proc.kill()
            proc.wait()
            shutil.rmtree(work, ignore_errors=True)
    return median_ms(times)


def redis_ping(port: int, work: str) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(20).startswith(b"+PONG")


def memcached_version(port: int, work: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(os.path.join(work, "s"))
        sock.sendall(b"version\r\n")
        return sock.recv(40).startswith(b"VERSION")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- harness

def harness_start(factory: Callable[[], object], runs: int, quiet: bool = True) -> float:
    times = []
    for _ in range(runs):
        server = factory()
        started = time.perf_counter()
        server.start()  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
        server.stop()  # type: ignore[attr-defined]
        if quiet:
            wait_background(120)  # the next start finds its spare, as in a suite
    return median_ms(times)


def postgres_cold(runs: int) -> float:
    times = []
    previous = os.environ.get("HARNESS_CACHE_DIR")
    for _ in range(runs):
        cache = tempfile.mkdtemp()
        os.environ["HARNESS_CACHE_DIR"] = cache
        try:
            server = Postgres()
            started = time.perf_counter()
            server.start()
            times.append(time.perf_counter() - started)
            server.stop()
            wait_background(120)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
            if previous is None:
                os.environ.pop("HARNESS_CACHE_DIR", None)
            else:
                os.environ["HARNESS_CACHE_DIR"] = previous
    return median_ms(times)


def fresh_database_cost(tests: int) -> Dict[str, float]:
    from harness import _runner
    costs = []
    with Postgres() as pg:
        for _ in range(tests):
            scope = _runner.open_scope("bench")
            started = time.perf_counter()
            db = pg.fresh_database()
            costs.append(time.perf_counter() - started)
            connection = _pgwire.connect(host=pg.host, port=pg.port, database=db.name,
                                         password=pg.secret)
            connection.query("CREATE TABLE t (id int PRIMARY KEY, name text); "
                             "INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 100) g")
            connection.query("SELECT count(*) FROM t")
            connection.close()
            scope.close()
    return {"median": median_ms(costs), "p90": statistics.quantiles(costs, n=10)[-1] * 1000,
            "max": max(costs) * 1000}


# ------------------------------------------------------------------ suites

HARNESS_CONFTEST = '''
import psycopg
import pytest
from harness.services import Postgres, Redis

@pytest.fixture(scope="session")
def pg():
    with Postgres() as server:
        yield server

@pytest.fixture
def postgresql(pg):
    with psycopg.connect(pg.fresh_database().dsn) as conn:
        yield conn

@pytest.fixture(scope="session")
def redis_server():
    with Redis() as server:
        yield server

@pytest.fixture
def redisdb(redis_server):
    import redis
    redis_server.flush()
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
'''

PG_TESTS = '''
import pytest

@pytest.mark.parametrize("n", range({tests}))
def test_db(postgresql, n):
    cur = postgresql.cursor()
    cur.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
    cur.execute("INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 100) g")
    cur.execute("SELECT count(*) FROM t")
    assert cur.fetchone()[0] == 100
'''

REDIS_TESTS = '''
import pytest

@pytest.mark.parametrize("n", range({tests}))
def test_redis(redisdb, n):
    assert redisdb.dbsize() == 0
    redisdb.set("k", n)
'''


def suite_time(kind: str, tool: str, tests: int, user: str, python: str,
               runs: int) -> List[float]:
    """The wall times (ms) of ``runs`` runs, in order (harness's first one fills
    the user's cache if it was empty)."""
    entry = pwd.getpwnam(user)
    times = []
    for _ in range(runs):
        work = tempfile.mkdtemp(prefix="hbench-")
        try:
            shutil.copytree(os.path.join(os.path.dirname(os.path.dirname(HERE)), "harness"),
                            os.path.join(work, "harness"))
            if tool == "harness":
                with open(os.path.join(work, "conftest.py"), "w") as f:
                    f.write(HARNESS_CONFTEST)
                plugins = ["-p", "no:postgresql", "-p", "no:redis"]
            else:
                plugins = ["-p", "no:harness"]
            with open(os.path.join(work, f"test_{kind}.py"), "w") as f:
                f.write((PG_TESTS if kind == "postgres" else REDIS_TESTS).format(tests=tests))
            for top, dirs, files in os.walk(work):
                for name in dirs + files + [""]:
                    os.chown(os.path.join(top, name), entry.pw_uid, entry.pw_gid)
            env = {"PATH": "/usr/lib/postgresql/15/bin:/usr/bin:/bin", "HOME": entry.pw_dir,
                   "PYTHONPATH": work, "PYTHONDONTWRITEBYTECODE": "1"}
            argv = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + plugins
            if tool == "pytest-postgresql":
                argv += ["--postgresql-exec", shutil.which("pg_ctl") or "pg_ctl"]
            started = time.perf_counter()
            done = subprocess.run(argv, cwd=work, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, preexec_fn=as_user(
                                      entry.pw_uid, entry.pw_gid), universal_newlines=True)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"{tool} suite failed:\n{done.stdout[-3000:]}")
            times.append(elapsed * 1000)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return times


# ------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--as-user", default=None)
    parser.add_argument("--python", default=None)
    args = parser.parse_args()
    rows = []

    def row(figure: str, floor: Optional[float], ours: float, goal: str) -> None:
        ratio = f"{ours / floor:.2f}x" if floor else ""
        rows.append((figure, f"{floor:.0f}" if floor else "", f"{ours:.0f}", ratio, goal))
        print(f"  {figure}: {ours:.1f} ms" + (f" (reference {floor:.1f} ms)" if floor else ""),
              flush=True)

    # Warm up harness (zygote, cache, spares) once, as a suite's first server does.
    for cls in (Postgres, Redis, Memcached):
        cls().start().stop()
    wait_background(120)
    # Each round runs a floor and harness's figure one after the other: on a
    # shared machine the load moves, and both see the same.
    figures: Dict[str, List[float]] = {}
    redis, memcached = shutil.which("redis-server"), shutil.which("memcached")
    root = ["--user=root"] if os.geteuid() == 0 else []
    for _ in range(args.runs):
        pg = postgres_floor(1)
        figures.setdefault("pg floor", []).append(pg["floor"])
        figures.setdefault("initdb", []).append(pg["initdb"])
        figures.setdefault("pg warm", []).append(harness_start(Postgres, 1))
        if redis:
            figures.setdefault("redis floor", []).append(program_floor(
                lambda port, work: [redis, "--port", str(port), "--bind", "127.0.0.1", "--save",
                                    "", "--dir", work], redis_ping, 1))
            figures.setdefault("redis", []).append(harness_start(Redis, 1))
        if memcached:
            figures.setdefault("memcached floor", []).append(program_floor(
                lambda port, work: [memcached, f"--unix-socket={work}/s"] + root,
                memcached_version, 1))
            figures.setdefault("memcached", []).append(harness_start(Memcached, 1))
    med = {key: statistics.median(values) for key, values in figures.items()}
    row("Postgres ready, cache warm", med["pg floor"], med["pg warm"], "<= 2x the floor")
    cold_goal = med["pg floor"] + med["initdb"]
    row("Postgres ready, cache cold", cold_goal, postgres_cold(max(3, args.runs // 2)),
        "<= floor + one initdb (reference: their sum)")
    fresh = fresh_database_cost(args.tests)
    row(f"fresh database, cost the test sees (median of {args.tests})", None, fresh["median"],
        f"<= 10 ms (p90 {fresh['p90']:.0f} ms, max {fresh['max']:.0f} ms)")
    if redis:
        row("Redis ready", med["redis floor"], med["redis"], "<= 2x the floor")
    if memcached:
        row("memcached ready", med["memcached floor"], med["memcached"], "<= 2x the floor")
    if args.as_user and args.python:
        suites = max(2, args.runs // 3)
        theirs = statistics.median(suite_time("postgres", "pytest-postgresql", args.tests,
                                              args.as_user, args.python, suites))
        # The first run may fill the user's cache (initdb); the figure is the
        # runs after it, as a developer's second run or a CI that keeps the cache.
        ours_all = suite_time("postgres", "harness", args.tests, args.as_user, args.python,
                              suites + 1)
        ours = statistics.median(ours_all[1:])
        rows.append((f"{args.tests}-test suite, fresh database each (wall)", f"{theirs:.0f}",
                     f"{ours:.0f}", f"{theirs / ours:.1f}x faster",
                     f">= 4x faster than pytest-postgresql (harness's first run: "
                     f"{ours_all[0]:.0f} ms)"))
        print(f"  pg suite: harness {ours:.0f} ms, pytest-postgresql {theirs:.0f} ms", flush=True)
        theirs = statistics.median(suite_time("redis", "pytest-redis", args.tests,
                                              args.as_user, args.python, suites))
        ours = statistics.median(suite_time("redis", "harness", args.tests, args.as_user,
                                            args.python, suites))
        rows.append((f"{args.tests}-test Redis suite (wall)", f"{theirs:.0f}", f"{ours:.0f}",
                     f"{theirs / ours:.1f}x faster", "(pytest-redis for reference)"))
    print()
    print("| figure | reference ms | harness ms | ratio | goal |")
    print("|---|---|---|---|---|")
    for figure, floor_text, ours_text, ratio, goal in rows:
        print(f"| {figure} | {floor_text} | {ours_text} | {ratio} | {goal} |")
    with open("/proc/loadavg") as f:
        print(f"\nload average at the end: {f.read().split()[0]} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
