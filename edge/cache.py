"""The door's local SQLite cache of enrolled people (peewee, WAL mode).

The door keeps working with the network down because everything it needs to
decide lives here.  Models are declared once against a deferred database that
:func:`open_cache` binds at start-up, the peewee way.
"""

import json
import logging
import os

import numpy as np
import peewee as pw

from bytelocker.errors import StorageError
from edge.match import Gallery

logger = logging.getLogger(__name__)

database = pw.SqliteDatabase(None)

PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": 5000,
    # Deleted people (revoked, forgotten) are overwritten, not left in free pages.
    "secure_delete": 1,
}


class BaseModel(pw.Model):
    class Meta:
        database = database


class Person(BaseModel):
    """An enrolled person as the door knows them."""

    person_id = pw.CharField(primary_key=True, max_length=128)
    name = pw.CharField(max_length=256, default="")
    groups_json = pw.TextField(default="[]")
    valid_from = pw.DateTimeField(null=True)
    valid_until = pw.DateTimeField(null=True)
    updated_version = pw.BigIntegerField(default=0)

    @property
    def groups(self):
        return json.loads(self.groups_json)


class Descriptor(BaseModel):
    """One 128-d float32 face descriptor of a person (stored as 512 raw bytes)."""

    person = pw.ForeignKeyField(Person, backref="descriptors", on_delete="CASCADE")
    vector = pw.BlobField()


class Meta(BaseModel):
    """Key/value facts about the cache, such as the applied enrolment version."""

    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()


MODELS = (Person, Descriptor, Meta)


def open_cache(path):
    """Bind the cache models to the SQLite file at ``path`` and create tables."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        if not database.is_closed():
            database.close()
        database.init(path, pragmas=PRAGMAS)
        database.connect(reuse_if_open=True)
        database.create_tables(MODELS)
    except (pw.DatabaseError, OSError) as exc:
        raise StorageError(f"Cannot open the door cache {path}: {exc}.") from exc
    return database


def close_cache():
    if not database.is_closed():
        database.close()


def cache_version():
    """The enrolment version this cache has applied (0 when empty)."""
    row = Meta.get_or_none(Meta.key == "version")
    return int(row.value) if row else 0


def set_cache_version(version):
    Meta.insert(key="version", value=str(int(version))).on_conflict_replace().execute()


def upsert_person(person_id, descriptors, *, name="", groups=(), valid_from=None,
                  valid_until=None, version=0):
    """Insert or replace a person and all their descriptors, atomically."""
    descriptors = np.asarray(descriptors, dtype=np.float32).reshape(-1, 128)
    with database.atomic():
        Person.insert(
            person_id=person_id, name=name, groups_json=json.dumps(sorted(groups)),
            valid_from=valid_from, valid_until=valid_until, updated_version=version,
        ).on_conflict_replace().execute()
        Descriptor.delete().where(Descriptor.person == person_id).execute()
        Descriptor.insert_many(
            [{"person": person_id, "vector": d.tobytes()} for d in descriptors]
        ).execute()


def remove_person(person_id):
    """Delete a person and their descriptors; returns True if they existed."""
    with database.atomic():
        Descriptor.delete().where(Descriptor.person == person_id).execute()
        return Person.delete().where(Person.person_id == person_id).execute() > 0


def apply_changes(changes, version):
    """Apply ``[(op, person_dict), ...]`` and record ``version``, all in one transaction.

    ``op`` is ``"upsert"`` (``person_dict`` has the keyword arguments of
    :func:`upsert_person` plus ``person_id`` and ``descriptors``) or
    ``"remove"`` (only ``person_id``).  Either everything is applied, with the
    new version, or nothing is.
    """
    with database.atomic(lock_type="IMMEDIATE"):
        for op, person in changes:
            if op == "upsert":
                _upsert(person, version)
            elif op == "remove":
                remove_person(person["person_id"])
            else:
                raise ValueError(f"unknown cache change {op!r}")
        set_cache_version(version)


def replace_all(persons, version):
    """Replace every cached person with ``persons`` and record ``version``, atomically."""
    with database.atomic(lock_type="IMMEDIATE"):
        Descriptor.delete().execute()
        Person.delete().execute()
        for person in persons:
            _upsert(person, version)
        set_cache_version(version)


def _upsert(person, version):
    fields = dict(person)
    upsert_person(fields.pop("person_id"), fields.pop("descriptors"), version=version, **fields)


def check_cache():
    """Raise :class:`StorageError` if the cache file is damaged or holds malformed rows."""
    try:
        result = database.execute_sql("PRAGMA quick_check").fetchone()
        if not result or result[0] != "ok":
            raise StorageError(f"The door cache {database.database} failed its integrity check: {result}.")
        cache_version()
        for (blob,) in Descriptor.select(Descriptor.vector).tuples():
            if blob is None or len(blob) != 512:
                raise StorageError(f"The door cache {database.database} holds a malformed descriptor.")
    except (pw.DatabaseError, ValueError) as exc:
        raise StorageError(f"The door cache {database.database} is damaged: {exc}.") from exc


def reset_cache():
    """Drop and recreate every cache table: version 0, no people (for a damaged cache)."""
    with database.atomic():
        database.drop_tables(MODELS, safe=True)
        database.create_tables(MODELS)


def load_gallery():
    """Return every cached descriptor as one :class:`~edge.match.Gallery`."""
    by_person = {}
    query = (Descriptor.select(Descriptor.person, Descriptor.vector)
             .order_by(Descriptor.person, Descriptor.id).tuples())
    for person_id, blob in query:
        by_person.setdefault(person_id, []).append(np.frombuffer(blob, dtype=np.float32))
    return Gallery.from_people(by_person)


def people():
    """All cached people, by id."""
    return {p.person_id: p for p in Person.select()}
