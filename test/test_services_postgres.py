"""``harness.services.Postgres``: a PostgreSQL server per test or per class, fresh
databases, settings, versions, as root and not, nobody else gets in, nothing left."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from _other_user import OTHER_UID, needs_root, run_as
from _process_helpers import NoKeptLogsMixin, remove_kept
from _services import IS_ROOT, alive, needs_postgres, proc_uid, shm_segments
from _support import ROOT, python_env

from harness import HarnessError, ServerProcess, ServerStartError, ServerTestMixin
from harness.services import Database, PgError, Postgres, ServiceUnavailable, _pgwire

HANG = 60.0


def database_names(pg: Postgres) -> set:
    return {row[0] for row in pg.query("SELECT datname FROM pg_database")}


def wait_for(predicate, what: str, seconds: float = HANG):
    """Poll ``predicate`` (this is a test: a background drop takes a moment)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what}: not within {seconds} s")


@needs_postgres
class PostgresTest(NoKeptLogsMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.pg = Postgres().start()
        cls.addClassCleanup(cls.pg.stop)

    def test_is_a_server_process_with_address_and_credentials(self) -> None:
        pg = self.pg
        self.assertIsInstance(pg, ServerProcess)
        self.assertEqual(pg.host, "127.0.0.1")
        self.assertTrue(pg.url.startswith(f"postgresql://postgres:{pg.secret}@127.0.0.1:{pg.port}/"))
        self.assertIn(f"port={pg.port}", pg.dsn)
        self.assertIn(f"password={pg.secret}", pg.dsn)
        self.assertEqual(pg.query("SELECT current_user, 1 + 1, NULL"), [("postgres", "2", None)])

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
    def test_a_forked_child_leaving_the_server_leaves_it_and_its_data(self) -> None:
        pg = self.pg
        home = pg.home
        pid = os.fork()
        if pid == 0:  # multiprocessing's fork: the child leaves the parent's block
            code = 0
            try:
                pg.stop()
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.WEXITSTATUS(status), 0, "stop() in the child raised")
        self.assertTrue(pg.running, "the child's stop() stopped the parent's server")
        self.assertEqual(pg.home, home)
        self.assertTrue(os.path.isdir(os.path.join(home, "data")), "the child removed the data")
        self.assertEqual(pg.query("SELECT 1"), [("1",)])

    def test_the_password_is_in_no_log_line_error_or_repr(self) -> None:
        with self.assertLogs("harness", "INFO") as logs:
            pg = Postgres().start()
            pg.stop()
        self.assertNotIn(pg.secret, "\n".join(logs.output))
        self.assertIn(f"postgresql://postgres:***@127.0.0.1:{pg.port}/postgres",
                      "\n".join(logs.output))
        self.assertNotIn(pg.secret, repr(pg))
        self.assertNotIn(pg.secret, " ".join(pg.command))

    def test_runs_as_nobody_when_the_runner_is_root(self) -> None:
        uid = proc_uid(self.pg.pid)
        if IS_ROOT:
            self.assertEqual(uid, pwd.getpwnam("nobody").pw_uid)
        else:
            self.assertEqual(uid, os.geteuid())

    def test_errors_quote_postgresql(self) -> None:
        with self.assertRaises(PgError) as caught:
            self.pg.query("SELECT * FROM no_such_table")
        self.assertEqual(caught.exception.code, "42P01")
        self.assertIn('relation "no_such_table" does not exist', str(caught.exception))
        self.assertEqual(self.pg.query("SELECT 1"), [("1",)], "the server goes on after an error")

    def test_fresh_databases_are_new_and_empty(self) -> None:
        first, second = self.pg.fresh_database(), self.pg.fresh_database()
        self.assertNotEqual(first.name, second.name)
        first.query("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        self.assertEqual(first.query("SELECT x FROM t"), [("1",)])
        self.assertEqual(second.query("SELECT count(*) FROM pg_tables WHERE tablename = 't'"),
                         [("0",)])
        self.assertIn(f"dbname={first.name}", first.dsn)
        self.assertTrue(first.url.endswith("/" + first.name))

    def test_fresh_databases_live_in_memory_where_there_is_room(self) -> None:
        from harness.services.postgres import _memory_base
        database = self.pg.fresh_database()
        self.addCleanup(database.drop)
        rows = database.query("SELECT spcname FROM pg_database d JOIN pg_tablespace t "
                              "ON t.oid = d.dattablespace WHERE datname = current_database()")
        if _memory_base() is None:
            self.assertEqual(rows, [("pg_default",)])
            self.assertIsNone(self.pg.memory_dir)
        else:
            self.assertEqual(rows, [("harness_memory",)])
            self.assertTrue(self.pg.memory_dir.startswith("/dev/shm/"))

    def test_drop_and_with_block(self) -> None:
        with self.pg.fresh_database() as database:
            name = database.name
            self.assertIn(name, database_names(self.pg))
        wait_for(lambda: name not in database_names(self.pg), "dropped after its with block")
        database.drop()  # idempotent

    def test_a_database_made_outside_any_test_scope_lives_until_stop(self) -> None:
        from harness import _runner
        with _runner.outside_scope():  # as in setUpClass, or a session fixture's set-up
            self.assertIsNone(_runner.current_scope())
            database = self.pg.fresh_database()
        self.addCleanup(database.drop)
        scope = _runner.open_scope("a later test")
        scope.close()
        self.assertFalse(database.dropped)
        self.assertIn(database.name, database_names(self.pg))

    def test_the_test_scope_drops_what_the_test_made(self) -> None:
        from harness import _runner
        scope = _runner.open_scope("a test")
        database = self.pg.fresh_database()
        self.assertIn(database.name, database_names(self.pg))
        scope.close()
        self.assertTrue(database.dropped)
        wait_for(lambda: database.name not in database_names(self.pg), "dropped at the test's end")

    def test_psycopg_connects_with_dsn_and_url(self) -> None:
        try:
            import psycopg
        except ImportError:
            self.skipTest("psycopg is not installed")
        database = self.pg.fresh_database()
        self.addCleanup(database.drop)
        with psycopg.connect(database.dsn) as conn:
            conn.execute("CREATE TABLE items (name text)")
            conn.execute("INSERT INTO items VALUES ('a'), ('b')")
            conn.commit()
        with psycopg.connect(database.url) as conn:
            self.assertEqual(conn.execute("SELECT count(*) FROM items").fetchone()[0], 2)

    def test_a_wrong_password_is_refused(self) -> None:
        with self.assertRaises(PgError) as caught:
            _pgwire.connect(host="127.0.0.1", port=self.pg.port, password="wrong", timeout=10)
        self.assertIn("password authentication failed", str(caught.exception))

    @needs_root
    def test_another_local_user_cannot_connect(self) -> None:
        port, socket_dir = self.pg.port, self.pg.socket_dir

        def attempts() -> dict:
            out = {}
            for label, kwargs in (("tcp, no password", {"host": "127.0.0.1", "port": port}),
                                  ("tcp, guessed", {"host": "127.0.0.1", "port": port,
                                                    "password": "postgres"}),
                                  ("unix socket", {"unix_path": os.path.join(
                                      socket_dir, f".s.PGSQL.{port}")})):
                try:
                    _pgwire.connect(timeout=10, **kwargs).close()
                    out[label] = "connected"
                except Exception as exc:
                    out[label] = f"{type(exc).__name__}: {exc}"
            return out
        for uid in (OTHER_UID, self.pg.spec.uid):  # a stranger; the server's own user
            outcome = run_as(uid, attempts)
            self.assertEqual(outcome.how, "returned", outcome)
            for label, result in outcome.value.items():
                self.assertNotEqual(result, "connected", f"uid {uid} got in by {label}")
        self.assertIn("PermissionError", run_as(OTHER_UID, attempts).value["unix socket"])


@needs_postgres
class TemplateTest(NoKeptLogsMixin, unittest.TestCase):
    def test_setup_sql_file_fills_every_fresh_database(self) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write("CREATE TABLE users (id serial PRIMARY KEY, name text);\n"
                    "INSERT INTO users (name) VALUES ('ada'), ('alan');\n")
        self.addCleanup(os.unlink, f.name)
        with Postgres(setup=f.name) as pg:
            first, second = pg.fresh_database(), pg.fresh_database()
            first.query("DELETE FROM users")
            self.assertEqual(second.query("SELECT name FROM users ORDER BY id"),
                             [("ada",), ("alan",)])

    def test_setup_callable_runs_once(self) -> None:
        calls = []

        def setup(template: Database) -> None:
            calls.append(template.name)
            template.query("CREATE TABLE seen (x int); INSERT INTO seen VALUES (42)")
        with Postgres(setup=setup, databases_ahead=1) as pg:
            for _ in range(3):
                self.assertEqual(pg.fresh_database().query("SELECT x FROM seen"), [("42",)])
        self.assertEqual(len(calls), 1)

    def test_bad_setup_arguments(self) -> None:
        with self.assertRaises(ValueError):
            Postgres(setup="/no/such/file.sql")
        with self.assertRaises(TypeError):
            Postgres(setup=42)


@needs_postgres
class SettingsAndVersionsTest(NoKeptLogsMixin, unittest.TestCase):
    def test_settings_reach_the_server(self) -> None:
        with Postgres(settings={"work_mem": "7MB", "enable_seqscan": False}) as pg:
            self.assertEqual(pg.query("SHOW work_mem"), [("7MB",)])
            self.assertEqual(pg.query("SHOW enable_seqscan"), [("off",)])
            self.assertEqual(pg.query("SHOW fsync"), [("off",)], "harness's defaults stay")

    def test_a_bad_setting_quotes_postgresqls_fatal_line(self) -> None:
        pg = Postgres(settings={"no_such_parameter": "1"})
        with self.assertRaises(ServerStartError) as caught:
            pg.start()
        remove_kept(caught.exception.log_path)
        message = str(caught.exception)
        self.assertIn('FATAL:  unrecognized configuration parameter "no_such_parameter"', message)
        self.assertIsNone(pg.home, "nothing is left of a failed start")

    def test_a_bad_value_quotes_postgresql(self) -> None:
        with self.assertRaises(ServerStartError) as caught:
            Postgres(settings={"shared_buffers": "lots"}).start()
        remove_kept(caught.exception.log_path)
        self.assertIn('invalid value for parameter "shared_buffers"', str(caught.exception))

    def test_bad_arguments_are_named_before_anything_starts(self) -> None:
        for kwargs, kind in (({"settings": {"x": object()}}, TypeError),
                             ({"settings": "fsync=off"}, TypeError),
                             ({"version": "fifteen"}, ValueError),
                             ({"auth": "ident"}, ValueError),
                             ({"databases_ahead": -1}, ValueError),
                             ({"argv": ["postgres"]}, TypeError)):
            with self.subTest(kwargs=kwargs), self.assertRaises(kind) as caught:
                Postgres(**kwargs)
            self.assertIn(list(kwargs)[0], str(caught.exception))

    def test_the_version_asked_for(self) -> None:
        major = Postgres().major
        with Postgres(version=major) as pg:
            self.assertTrue(pg.query("SHOW server_version")[0][0].startswith(f"{major}."))

    def test_a_missing_version_says_what_to_install(self) -> None:
        pg = Postgres(version=99)
        reason = pg.unavailable()
        self.assertIn("no PostgreSQL 99", reason)
        self.assertIn("apt-get install postgresql", reason)
        with self.assertRaises(ServiceUnavailable) as caught:
            pg.start()
        self.assertIn("apt-get install postgresql", str(caught.exception))

    def test_databases_on_disk_when_asked(self) -> None:
        with Postgres(databases_in_memory=False, databases_ahead=1) as pg:
            self.assertIsNone(pg.memory_dir)
            database = pg.fresh_database()
            self.assertEqual(database.query("SELECT count(*) FROM pg_tablespace"), [("2",)])
        with self.assertRaises(TypeError):
            Postgres(databases_in_memory="yes")

    def test_auth_methods(self) -> None:
        for auth in ("md5", "password", "trust"):
            with self.subTest(auth=auth), Postgres(auth=auth, databases_ahead=0) as pg:
                self.assertEqual(pg.query("SELECT 1"), [("1",)])
                rows = pg.query("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host'")
                self.assertEqual({row[0] for row in rows}, {auth})
                if auth != "trust":
                    self.assertNotIn(auth == "md5" and "SCRAM" or "md5",
                                     pg.query("SELECT rolpassword FROM pg_authid "
                                              "WHERE rolname = 'postgres'")[0][0][:5])
                    with self.assertRaises(PgError):
                        _pgwire.connect(host=pg.host, port=pg.port, password="x",
                                        timeout=10).close()
                else:
                    self.assertNotIn("password", pg.dsn)


@needs_postgres
class ScopesTest(NoKeptLogsMixin, unittest.TestCase):
    """Per test and per class under the unittest mixin."""

    def test_mixin_drops_each_tests_database_and_keeps_the_class_server(self) -> None:
        seen = {}

        class Inner(ServerTestMixin, unittest.TestCase):
            @classmethod
            def setUpClass(cls) -> None:
                super().setUpClass()
                cls.pg = Postgres().start()
                cls.addClassCleanup(cls.pg.stop)

            def setUp(self) -> None:
                super().setUp()
                self.db = self.pg.fresh_database()

            def test_a(self) -> None:
                seen["a"] = self.db
                self.db.query("CREATE TABLE t (x int)")

            def test_b(self) -> None:
                seen["b"] = self.db
                seen["a dropped in b"] = seen["a"].dropped
                self.db.query("CREATE TABLE t (x int)")  # a fresh one: no clash
                seen["names"] = database_names(self.pg)

            def test_per_test_server(self) -> None:
                own = Postgres(databases_ahead=0)
                self.addCleanup(own.stop)
                own.start()
                seen["own_home"] = own.home
        result = unittest.TestResult()
        unittest.defaultTestLoader.loadTestsFromTestCase(Inner).run(result)
        self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
        self.assertTrue(seen["a dropped in b"], "test_a's database outlived test_a")
        self.assertIn(seen["b"].name, seen["names"])
        self.assertTrue(seen["b"].dropped)
        self.assertFalse(os.path.exists(seen["own_home"]))


@needs_postgres
class NothingLeftTest(NoKeptLogsMixin, unittest.TestCase):
    def test_stop_leaves_nothing(self) -> None:
        pg = Postgres().start()
        pids = [pg.pid] + [int(p) for p in _children(pg.pid)]
        self.assertTrue(shm_segments([pg.pid]), "the postmaster's segment is seen while it runs")
        self.assertEqual(pg.query("SHOW dynamic_shared_memory_type"), [("mmap",)],
                         "no PostgreSQL.* segments in /dev/shm")
        dirs = [pg.home, pg.memory_dir]
        pg.fresh_database()
        pg.stop()
        self.assertEqual(pg.returncode, 0, "a fast shutdown, not a kill")
        self.assertEqual([d for d in dirs if d and os.path.exists(d)], [])
        self.assertEqual([p for p in pids if alive(p)], [])
        self.assertEqual(shm_segments(pids), set())

    def test_a_sigkilled_runner_leaves_nothing(self) -> None:
        code = ("import json, os, sys, threading\n"
                "from harness.services import Postgres, Redis, Memcached\n"
                "servers = [Postgres().start(), Redis().start(), Memcached().start()]\n"
                "servers[0].fresh_database()\n"
                "homes = [s.home for s in servers] + [servers[0].memory_dir]\n"
                "kids = [int(p) for p in open(f'/proc/{servers[0].pid}/task/{servers[0].pid}"
                "/children').read().split()]\n"
                "print(json.dumps({'pids': [s.pid for s in servers] + kids, 'homes': homes}),"
                " flush=True)\n"
                "threading.Event().wait()\n")
        proc = subprocess.Popen([sys.executable, "-c", code], env=python_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True)
        self.addCleanup(proc.wait)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.addCleanup(proc.stderr.close)
        self.addCleanup(proc.stdout.close)
        line = proc.stdout.readline()
        if not line:
            self.fail("the runner failed: " + proc.stderr.read())
        info = json.loads(line)
        # The three servers run; their children are only looked for afterwards (a
        # backend of a session that just ended may be leaving as they are listed).
        self.assertTrue(all(alive(p) for p in info["pids"][:3]))
        self.assertTrue(shm_segments(info["pids"][:1]), "the postmaster's segment exists")
        proc.kill()
        proc.wait()
        wait_for(lambda: not any(alive(p) for p in info["pids"]), "every service process ended")
        wait_for(lambda: not any(h and os.path.exists(h) for h in info["homes"]),
                 "homes (and the tablespace in /dev/shm) removed")
        self.assertEqual(shm_segments(info["pids"]), set(), "a shared-memory segment is left")


@needs_postgres
class CacheTest(NoKeptLogsMixin, unittest.TestCase):
    def run_once(self, cache: str) -> str:
        code = ("import sys\nfrom harness.services import Postgres\n"
                "with Postgres(databases_ahead=0) as pg:\n"
                "    print(pg.took_spare, pg.query('SELECT 1'), flush=True)\n")
        self.temp = tempfile.mkdtemp()  # the run's TMPDIR (as /tmp: a service user's too)
        os.chmod(self.temp, 0o1777)
        self.addCleanup(shutil.rmtree, self.temp, True)
        env = dict(python_env(), HARNESS_CACHE_DIR=cache, TMPDIR=self.temp)
        done = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=HANG * 2)
        self.assertEqual(done.returncode, 0, done.stdout)
        return done.stdout

    def test_a_cache_dir_other_users_can_write_is_refused(self) -> None:
        cache = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, cache, True)
        os.chmod(cache, 0o777)  # anyone could plant a cluster there, to be run by us
        os.environ["HARNESS_CACHE_DIR"] = cache
        self.addCleanup(os.environ.pop, "HARNESS_CACHE_DIR")
        pg = Postgres()
        with self.assertRaisesRegex(HarnessError, "is not yours alone"):
            pg.start()
        self.assertFalse(pg.running)
        self.assertEqual(os.listdir(cache), [])

    def test_a_cold_cache_is_filled_and_a_short_run_leaves_nothing_unfinished(self) -> None:
        cache = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, cache, True)
        self.assertIn("False [('1',)]", self.run_once(cache))   # cold: its own initdb
        entries = [name for name in os.listdir(cache) if not name.endswith(".lock")]
        self.assertEqual(len(entries), 1, entries)
        self.assertEqual(os.listdir(self.temp), [],
                         "the stopped server's directory is gone when its runner exits")
        entry = os.path.join(cache, entries[0])
        self.assertTrue(os.path.isdir(os.path.join(entry, "ready")), "filled after the start")
        self.assertEqual([n for n in os.listdir(entry) if n.startswith(".")], [])
        self.run_once(cache)
        self.run_once(cache)
        spares = os.listdir(os.path.join(entry, "spares"))
        self.assertEqual([n for n in spares if n.startswith(".")], [],
                         "an unfinished copy outlived its runner")
        self.assertIn("True [('1',)]", self.run_once(cache) if spares else "True [('1',)]")


@needs_postgres
@needs_root
class NonRootRunnerTest(NoKeptLogsMixin, unittest.TestCase):
    """The whole runner as an ordinary user (nobody: initdb needs a passwd entry):
    Postgres runs as that user, no user= needed."""

    def test_an_unprivileged_runner(self) -> None:
        runner = pwd.getpwnam("nobody")
        uid, gid = runner.pw_uid, runner.pw_gid
        python = shutil.which("python3", path="/usr/bin:/bin")
        if not python:
            self.skipTest("no /usr/bin/python3 for the other user")
        work = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, work, True)
        shutil.copytree(os.path.join(ROOT, "harness"), os.path.join(work, "harness"))
        for top, dirs, files in os.walk(work):
            for name in dirs + files + [""]:
                os.chown(os.path.join(top, name), uid, gid)
        code = ("import json, os\n"
                "from harness.services import Postgres\n"
                "with Postgres() as pg:\n"
                "    db = pg.fresh_database()\n"
                "    db.query('CREATE TABLE t (x int)')\n"
                "    print(json.dumps({'uid': os.getuid(), 'server_uid': int([l for l in open("
                "f'/proc/{pg.pid}/status') if l.startswith('Uid:')][0].split()[1]),"
                " 'user': pg.spec.uid, 'rows': pg.query('SELECT 1')}))\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": work,
               "HOME": work, "TMPDIR": work, "HARNESS_CACHE_DIR": os.path.join(work, "cache")}

        def become() -> None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        done = subprocess.run([python, "-c", code], env=env, cwd=work, preexec_fn=become,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=HANG * 2)
        self.assertEqual(done.returncode, 0, done.stdout)
        facts = json.loads(done.stdout.strip().splitlines()[-1])
        self.assertEqual(facts, {"uid": uid, "server_uid": uid, "user": None,
                                 "rows": [["1"]]})


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except OSError:
        return []


if __name__ == "__main__":
    unittest.main()
