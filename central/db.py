"""Central's database, bound at start-up from ``database.url``.

Every central model declares ``database = database`` (a peewee
``DatabaseProxy``); :func:`open_database` points it at SQLite (WAL) or
PostgreSQL, the same code either way.
"""

import os
import re

import peewee as pw
from playhouse.db_url import connect

from bytelocker.errors import StorageError

database = pw.DatabaseProxy()

SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "normal", "foreign_keys": 1, "busy_timeout": 10000}


class BaseModel(pw.Model):
    class Meta:
        database = database


_models = []


def register(model):
    """Class decorator: tables created by :func:`open_database`."""
    _models.append(model)
    return model


def open_database(url, password=None, *, create=True):
    """Connect to ``url`` (``sqlite:///path`` or ``postgresql://...``) and create tables.

    ``create=False`` (reports) refuses a SQLite file that does not exist
    instead of making an empty one: a typo in the path must not look like a
    site with no events.  A SQLite file created by root (a command run with
    sudo before the service ever started) is given to the owner of its folder,
    so the ``bytelocker`` service can still write it.
    """
    new_file = None
    try:
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///"):]
            if path not in ("", ":memory:"):
                if not os.path.exists(path):
                    if not create:
                        raise StorageError(
                            f"There is no central database at {path}: check --database or database.url "
                            "(central creates it when 'bytelocker central run' first starts).")
                    new_file = path
                os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
            db = pw.SqliteDatabase(path, pragmas=SQLITE_PRAGMAS)
        else:
            kwargs = {"password": password} if password else {}
            db = connect(url, **kwargs)
        database.initialize(db)
        db.connect(reuse_if_open=True)
        db.create_tables(_models)
        if new_file is not None:
            _give_to_folder_owner(new_file)
    except (pw.PeeweeException, OSError, ValueError, RuntimeError) as exc:
        # RuntimeError: playhouse's "Unrecognized or unsupported scheme" for a URL typo.
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"Cannot open the central database {redact(url)}: {exc}.") from exc
    return db


def _give_to_folder_owner(path):
    if os.geteuid() != 0:
        return
    folder = os.stat(os.path.dirname(os.path.abspath(path)))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        if os.path.exists(name):
            os.chown(name, folder.st_uid, folder.st_gid)


def write_transaction():
    """A transaction that will write: on SQLite it takes the write lock first.

    ``BEGIN IMMEDIATE`` matters because a WAL transaction that reads and then
    writes cannot upgrade its lock and fails at once with "database is
    locked" whenever another process (the service, the command line, the
    dashboard) committed in between.
    """
    if isinstance(database.obj, pw.SqliteDatabase):
        return database.atomic(lock_type="IMMEDIATE")
    return database.atomic()


# Any number will do as long as nothing else on the server takes the same
# advisory lock; these are the letters "BLFG".
ERASURE_LOCK_KEY = 0x424C4647


def erasure_lock(*, exclusive):
    """Order erasing a person against storing events, inside the caller's transaction.

    ``bytelocker forget`` takes it ``exclusive``; storing events takes it
    shared (stores do not wait for each other).  Without it, on PostgreSQL
    an event naming the person could be stored by a transaction that
    started before the erasure committed and be missed by both.  On SQLite
    :func:`write_transaction` already runs writers one at a time, so this
    does nothing there.  The lock ends with the transaction.
    """
    if isinstance(database.obj, pw.PostgresqlDatabase):
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        database.execute_sql(f"SELECT {function}(%s)", (ERASURE_LOCK_KEY,))


# A password given as a query parameter (libpq reads ?password=...).
_QUERY_PASSWORD = re.compile(r"([?&][^=&#]*(?:password|passwd|pwd)=)[^&#]*", re.IGNORECASE)


def redact(url):
    """``url`` with any password replaced by ``***`` (for logs and errors).

    Both places a database URL can carry one are masked: ``user:pw@host``
    and a ``password=`` query parameter.
    """
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        # The last "@": a password may hold one.  An "@" in the query can make
        # this mask more than the password, never less.
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        url = f"{scheme}://{creds}@{host}"
    return _QUERY_PASSWORD.sub(r"\1***", url)
