"""A throwaway PostgreSQL cluster for tests, in a temp dir on a free loopback port.

Never the machine's own PostgreSQL: ``initdb`` and ``pg_ctl`` from
``/usr/lib/postgresql/*/bin`` build a cluster that lives only for the test
session.  As root, PostgreSQL refuses to run, so the cluster is owned by
and run as the ``postgres`` user (``runuser``).  Import the fixtures into a
test module: ``from tests.postgres import postgres_cluster, postgres_url``.
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

import pytest

from tests.brokers import free_port


def postgres_bin():
    """The folder holding ``initdb`` and ``pg_ctl`` (newest version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) for x in p.split("/")[4].split(".") if x.isdigit()])
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class PostgresCluster:
    """One ``postgres`` server with trust auth on 127.0.0.1:``port``."""

    def __init__(self, bindir):
        self.bindir = bindir
        self.port = free_port()
        self.host = "127.0.0.1"
        # Not under pytest's tmp_path: as root that is mode 700 and the
        # postgres user could not reach it.
        self.folder = tempfile.mkdtemp(prefix="bytelocker-pg-")
        self.data = os.path.join(self.folder, "data")
        self._as = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.user = "postgres" if self._as else pwd.getpwuid(os.geteuid()).pw_name

    def _cmd(self, *args):
        return subprocess.run(self._as + list(args), capture_output=True, text=True, timeout=120)

    def start(self):
        result = self._cmd(os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust",
                           "-U", self.user, "-E", "UTF8", "--no-sync")
        if result.returncode:
            raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
        opts = (f"-p {self.port} -k {self.folder} -c listen_addresses={self.host} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        result = self._cmd(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", opts,
                           "-l", os.path.join(self.folder, "postgres.log"), "-w", "-t", "60", "start")
        if result.returncode:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr.strip() or result.stdout.strip()}")
        return self

    def stop(self):
        self._cmd(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database="postgres"):
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self):
        """Create an empty database and return its URL."""
        import psycopg2

        name = f"t_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        conn.close()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_cluster():
    """A temp PostgreSQL cluster for the whole session (skipped if PostgreSQL is not installed)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed; run scripts/system-packages.sh")
    pytest.importorskip("psycopg2")
    cluster = PostgresCluster(bindir).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster):
    """The URL of a fresh, empty database in the session's cluster."""
    return postgres_cluster.create_database()
