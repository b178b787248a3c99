"""The door's local SQLite cache of enrolled people (peewee, WAL mode).

The door keeps working with the network down because everything it needs to
decide lives here.  Models are declared once against a deferred database that
:func:`open_cache` binds at start-up, the peewee way.
"""

import datetime as dt
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


def utcnow():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
