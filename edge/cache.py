"""The door's local SQLite cache of enrolled people (peewee, WAL mode).

The door keeps working with the network down because everything it needs to
decide lives here.  Models are declared once against a deferred database that
:func:`open_cache` binds at start-up, the peewee way.

A person who leaves the cache (revoked, forgotten, or missing from a full
snapshot) leaves with their descriptors and their anti-passback passages;
:func:`when_removed` tells the in-memory holders (:class:`edge.policy.AccessPolicy`).
"""

import json
import logging
import os
import weakref

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


class Passage(BaseModel):
    """A person's last known pass in the area (at this unit, or relayed from another), for anti-passback and direction.

    Kept by :class:`edge.policy.AccessPolicy`; it lives here so that removing
    a person removes their passes too.
    """

    person_id = pw.CharField(primary_key=True, max_length=128)
    area = pw.CharField(max_length=64)
    direction = pw.CharField(max_length=8)
    at = pw.DateTimeField()


MODELS = (Person, Descriptor, Meta, Passage)

# Callbacks told which people left the cache; weak, so a listener goes with its object.
_removal_listeners = []


def when_removed(callback):
    """Call ``callback(person_ids)`` after people left the cache (a removal or a full snapshot).

    It runs on the thread that changed the cache, after the change committed.
    A bound method is held weakly: it stops being called when its object goes.
    """
    ref = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else (lambda: callback)
    _removal_listeners.append(ref)


def _removed(person_ids):
    person_ids = sorted(set(person_ids))
    if not person_ids:
        return
    for ref in list(_removal_listeners):
        callback = ref()
        if callback is None:
            _removal_listeners.remove(ref)
            continue
        try:
            callback(person_ids)
        except Exception:  # one listener's bug must not stop the cache update reaching the others
            logger.exception("a cache removal listener failed")


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
    """Delete a person, their descriptors and their passages; returns True if they existed."""
    with database.atomic():
        existed = _remove(person_id)
    _removed([person_id])
    return existed


def _remove(person_id):
    Descriptor.delete().where(Descriptor.person == person_id).execute()
    # A revoked or forgotten person's comings and goings are not kept either.
    Passage.delete().where(Passage.person_id == person_id).execute()
    return Person.delete().where(Person.person_id == person_id).execute() > 0


def apply_changes(changes, version):
    """Apply ``[(op, person_dict), ...]`` and record ``version``, all in one transaction.

    ``op`` is ``"upsert"`` (``person_dict`` has the keyword arguments of
    :func:`upsert_person` plus ``person_id`` and ``descriptors``) or
    ``"remove"`` (only ``person_id``).  Either everything is applied, with the
    new version, or nothing is.
    """
    removed = []
    with database.atomic(lock_type="IMMEDIATE"):
        for op, person in changes:
            if op == "upsert":
                _upsert(person, version)
            elif op == "remove":
                _remove(person["person_id"])
                removed.append(person["person_id"])
            else:
                raise ValueError(f"unknown cache change {op!r}")
        set_cache_version(version)
    _removed(removed)


def replace_all(persons, version):
    """Replace every cached person with ``persons`` and record ``version``, atomically.

    The passages of people not in ``persons`` go too.
    """
    persons = list(persons)
    keep = {p["person_id"] for p in persons}
    with database.atomic(lock_type="IMMEDIATE"):
        gone = {p for (p,) in Person.select(Person.person_id).tuples()} - keep
        gone |= {p for (p,) in Passage.select(Passage.person_id).tuples()} - keep
        Descriptor.delete().execute()
        Person.delete().execute()
        ordered = sorted(gone)
        for start in range(0, len(ordered), 500):
            Passage.delete().where(Passage.person_id.in_(ordered[start:start + 500])).execute()
        for person in persons:
            _upsert(person, version)
        set_cache_version(version)
    _removed(gone)


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
