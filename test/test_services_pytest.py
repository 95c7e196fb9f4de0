"""The services under a real pytest in a subprocess, alone and with ``-n 2``: a
session server per worker, a fresh database per test dropped after it, a
database made by a session fixture kept for the session, Redis flushed per test."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import unittest

from _services import needs_memcached, needs_postgres, needs_redis
from test_testcase_runners import HAVE_PYTEST, HAVE_XDIST, run_pytest

CONFTEST = '''
import os

import pytest

from harness.services import Memcached, Postgres, Redis


@pytest.fixture(scope="session")
def pg():
    with Postgres() as server:
        yield server


@pytest.fixture(scope="session")
def shared_db(pg):
    return pg.fresh_database()          # made in a session fixture: lives for the session


@pytest.fixture
def db(pg):
    return pg.fresh_database()          # made for the test: dropped when it ends


@pytest.fixture(scope="module")
def redis():
    with Redis() as server:
        yield server


@pytest.fixture
def cache(redis):
    redis.flush()
    return redis


@pytest.fixture(scope="class")
def memcached():
    with Memcached() as server:
        yield server
'''

TESTS = '''
import os

import pytest

NAMES = []


@pytest.mark.parametrize("n", range(6))
def test_fresh_database_each_time(pg, db, shared_db, n):
    names = {{row[0] for row in pg.query("SELECT datname FROM pg_database")}}
    for earlier in NAMES:
        assert earlier.dropped, earlier   # dropped at its test's end (in the background)
    assert shared_db.name in names and not shared_db.dropped
    db.query("CREATE TABLE t (x int)")   # would clash if the database were reused
    shared_db.query("CREATE TABLE IF NOT EXISTS s (x int)")
    NAMES.append(db)
    with open(os.path.join({out!r}, "pg-" + os.environ.get("PYTEST_XDIST_WORKER", "main")
                           + "-" + str(pg.pid)), "a") as f:
        f.write(db.name + "\\n")


@pytest.mark.parametrize("n", range(4))
def test_redis_is_flushed_per_test(cache, n):
    assert cache.execute("DBSIZE") == 0
    cache.execute("SET", "k", str(n))


class TestMemcached:
    def test_one(self, memcached):
        assert memcached.execute("set k 0 0 1\\r\\nv") == "STORED"

    def test_two(self, memcached):
        memcached.flush()
        assert memcached.execute("get k") == "END"
'''


@unittest.skipUnless(HAVE_PYTEST, "pytest is not installed")
@needs_postgres
@needs_redis
@needs_memcached
class ServicesUnderPytestTest(unittest.TestCase):
    def write(self) -> str:
        work = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, work, True)
        self.out = os.path.join(work, "out")
        os.mkdir(self.out)
        with open(os.path.join(work, "conftest.py"), "w") as f:
            f.write(CONFTEST)
        with open(os.path.join(work, "test_services_use.py"), "w") as f:
            f.write(TESTS.format(out=self.out))
        return work

    def check(self, args: list, workers: int) -> None:
        work = self.write()
        code, output = run_pytest(["-q"] + args, cwd=work)
        self.assertEqual(code, 0, output)
        self.assertRegex(output, r"\b12 passed")
        records = os.listdir(self.out)
        self.assertEqual(len({name.split("-")[-1] for name in records}), workers,
                         f"one session server per worker: {records}")
        for name in records:
            with open(os.path.join(self.out, name)) as f:
                names = f.read().split()
            self.assertEqual(len(names), len(set(names)), "a database was handed out twice")
        self.assertFalse(re.search(r"harness: ending what .* made failed", output), output)

    def test_plain(self) -> None:
        self.check([], 1)

    @unittest.skipUnless(HAVE_XDIST, "pytest-xdist is not installed")
    def test_two_workers(self) -> None:
        self.check(["-n", "2"], 2)


if __name__ == "__main__":
    unittest.main()
