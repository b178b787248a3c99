"""Central's people registry: people, their descriptors, groups, validity, and
the versioned change log that doors sync from.

Every change that can alter what a door lets in (enrol, more photos, revoke,
forget) is one row of :class:`Change` with the next version number, written
in the same transaction as the change itself.  The version counter is one
row updated inside that transaction, so versions are committed in order even
with several writers (the CLI and central's service at once, or PostgreSQL):
a publisher never sees version 8 before 7.

The log holds no face data: only the person id, the kind of change and which
doors it is for.  What is sent to a door is built from the registry *at the
time of sending* (:mod:`central.sync`), so erasing a person erases them from
everything that can still be sent.

Times are naive UTC datetimes.
"""

import datetime as dt
import hashlib
import json
import logging

import numpy as np
import peewee as pw

from bytelocker import contract
from bytelocker.errors import EnrolmentError
from central.db import BaseModel, _models, database, register, write_transaction

logger = logging.getLogger(__name__)

ACTIVE = "active"
REVOKED = "revoked"

UPSERT = "upsert"
REMOVE = "remove"

DESCRIPTOR_BYTES = 128 * 4


def utcnow():
    """Now as a naive UTC datetime, to the second (how registry times are stored)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


@register
class Person(BaseModel):
    """An enrolled person.  ``status`` is ``active`` or ``revoked`` (kept for history)."""

    person_id = pw.CharField(primary_key=True, max_length=128)
    name = pw.CharField(max_length=256, default="")
    groups_json = pw.TextField(default="[]")
    # NULL: every door; else a JSON list of door ids.
    doors_json = pw.TextField(null=True)
    valid_from = pw.DateTimeField(null=True)
    valid_until = pw.DateTimeField(null=True)
    status = pw.CharField(max_length=16, default=ACTIVE)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    revoked_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "people"

    @property
    def groups(self):
        return json.loads(self.groups_json)

    @property
    def doors(self):
        """The door ids this person may open, or None for every door."""
        return None if self.doors_json is None else json.loads(self.doors_json)

    @property
    def active(self):
        return self.status == ACTIVE

    def serves(self, door_id):
        """True if this person is active and enrolled at ``door_id``."""
        return self.active and (self.doors is None or door_id in self.doors)


@register
class FaceDescriptor(BaseModel):
    """One 128-d float32 descriptor of a person, from one enrolment photo."""

    person = pw.ForeignKeyField(Person, backref="descriptors", on_delete="CASCADE")
    vector = pw.BlobField()
    source = pw.CharField(max_length=512, default="", help_text="file name of the photo")
    added_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "face_descriptors"


@register
class Change(BaseModel):
    """One versioned enrolment change: an upsert or a removal of one person."""

    version = pw.BigIntegerField(primary_key=True)
    op = pw.CharField(max_length=16)
    person_id = pw.CharField(max_length=128, index=True)
    # NULL: every door; else a JSON list of door ids.
    target_json = pw.TextField(null=True)
    reason = pw.CharField(max_length=32, default="")
    created_at = pw.DateTimeField(default=utcnow)
    published_at = pw.DateTimeField(null=True, index=True)

    class Meta:
        table_name = "enrolment_changes"

    @property
    def target(self):
        """The door ids this change is for, or None for every door."""
        return None if self.target_json is None else json.loads(self.target_json)

    def concerns(self, door_id):
        target = self.target
        return target is None or door_id in target


@register
class RegistryCounter(BaseModel):
    """Named counters: ``version`` (last change) and ``log_start`` (oldest complete version)."""

    key = pw.CharField(primary_key=True, max_length=32)
    value = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "registry_counters"


@register
class ForgottenPerson(BaseModel):
    """A person erased with ``bytelocker forget``, known only by :func:`forgotten_digest` of their id.

    Doors that were offline still send events naming them; these rows let
    :func:`central.store.store_events` anonymise such events as the erasure
    did.  Enrolling the id again removes its row.
    """

    digest = pw.CharField(primary_key=True, max_length=64)
    forgotten_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "forgotten_people"


REGISTRY_MODELS = (Person, FaceDescriptor, Change, RegistryCounter)


def forgotten_digest(person_id):
    """The hex SHA-256 under which a forgotten person's id is kept.

    A plain hash: it keeps the id out of sight in the table, but a guessable
    id (a staff number) can be found by trying them all.
    """
    return hashlib.sha256(b"bytelocker forgotten person\0" + person_id.encode("utf-8")).hexdigest()


def mark_forgotten(person_id):
    """Remember that ``person_id`` was erased, so later events naming them are anonymised."""
    ForgottenPerson.insert(digest=forgotten_digest(person_id)).on_conflict_ignore().execute()


def forgotten_among(person_ids):
    """The ids among ``person_ids`` that were forgotten (and not enrolled again), as a set."""
    by_digest = {forgotten_digest(p): p for p in set(person_ids) if p}
    digests = list(by_digest)
    found = set()
    for start in range(0, len(digests), 500):
        found.update(by_digest[d] for (d,) in ForgottenPerson.select(ForgottenPerson.digest)
                     .where(ForgottenPerson.digest.in_(digests[start:start + 500])).tuples())
    return found


def _counter(key):
    row = RegistryCounter.get_or_none(RegistryCounter.key == key)
    return row.value if row else 0


def current_version():
    """The version of the newest change (0 before any)."""
    return _counter("version")


def log_start():
    """Changes after this version are all still in the log (older ones were pruned)."""
    return _counter("log_start")


def _next_version():
    # Must run inside the caller's transaction: the UPDATE takes the row lock
    # that orders concurrent writers until commit.
    RegistryCounter.insert(key="version", value=0).on_conflict_ignore().execute()
    RegistryCounter.update(value=RegistryCounter.value + 1).where(RegistryCounter.key == "version").execute()
    return RegistryCounter.get(RegistryCounter.key == "version").value


def _log(op, person_id, target, reason):
    version = _next_version()
    Change.create(version=version, op=op, person_id=person_id,
                  target_json=None if target is None else json.dumps(sorted(target)), reason=reason)
    # Not the id: journald outlives 'forget'; the change log row (which doors need) has it.
    logger.info("enrolment change %d: %s (%s)", version, op, reason)
    return version


def get_person(person_id):
    """The :class:`Person` with ``person_id``; raises :class:`EnrolmentError` if unknown."""
    person = Person.get_or_none(Person.person_id == person_id)
    if person is None:
        raise EnrolmentError(f"No person with id {person_id!r} is enrolled.")
    return person


def descriptors_of(person_id):
    """``(n, 128)`` float32 descriptors of one person."""
    rows = (FaceDescriptor.select(FaceDescriptor.vector)
            .where(FaceDescriptor.person == person_id).order_by(FaceDescriptor.id).tuples())
    return np.array([np.frombuffer(blob, dtype=np.float32) for (blob,) in rows],
                    dtype=np.float32).reshape(-1, 128)


def descriptors_by_person(*, active_only=True):
    """``{person_id: ndarray[n,128]}`` of every (active) person, for duplicate checks."""
    query = (FaceDescriptor.select(FaceDescriptor.person, FaceDescriptor.vector)
             .join(Person).order_by(FaceDescriptor.person, FaceDescriptor.id))
    if active_only:
        query = query.where(Person.status == ACTIVE)
    out = {}
    for row in query.tuples():
        out.setdefault(row[0], []).append(np.frombuffer(row[1], dtype=np.float32))
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def check_person_fields(person_id, *, name=None, groups=None):
    """Refuse an id, name or groups the doors would refuse.

    A door rejects a whole signed update that holds one person it cannot
    take, and stays at its old version, so one bad id (an empty ``--id
    "$ID"`` in a script) would stop every later change, revocations
    included, from reaching it.  Raises :class:`EnrolmentError`.
    """
    max_id, max_name = contract.MAX_PERSON_ID_CHARS, contract.MAX_PERSON_NAME_CHARS
    if not isinstance(person_id, str) or not person_id or len(person_id) > max_id:
        raise EnrolmentError(f"A person id must be 1 to {max_id} characters, not {str(person_id)[:40]!r}.")
    if person_id != person_id.strip() or any(ord(c) < 0x20 or ord(c) == 0x7f for c in person_id):
        raise EnrolmentError(f"The person id {person_id!r} starts or ends with a space or holds a control "
                             "character; use a plain id such as a staff number.")
    if name is not None and len(name) > max_name:
        raise EnrolmentError(f"The name of {person_id!r} is {len(name)} characters; at most {max_name}.")
    for group in groups or ():
        if not isinstance(group, str) or not group.strip():
            raise EnrolmentError(f"{person_id!r} has an empty group name.")


def enrol(person_id, descriptors, *, name=None, sources=(), groups=None, doors=None,
          valid_from=None, valid_until=None, reinstate=False, replace_doors=False):
    """Add ``descriptors`` to ``person_id`` (creating them), log the change; return its version.

    Enrolling an existing id adds descriptors; ``name``, ``groups``,
    ``valid_from`` and ``valid_until`` replace the stored ones when given.
    ``doors`` (a list of door ids) limits the person to those doors; None
    keeps the current setting (every door for a new person) unless
    ``replace_doors`` is set.  A revoked person is only enrolled again with
    ``reinstate=True``.
    """
    check_person_fields(person_id, name=name, groups=groups)
    descriptors = np.asarray(descriptors, dtype=np.float32).reshape(-1, 128)
    if not np.all(np.isfinite(descriptors)):
        raise EnrolmentError(f"The descriptors for {person_id!r} contain NaN or infinite values.")
    if valid_from and valid_until and valid_until <= valid_from:
        raise EnrolmentError(f"The validity of {person_id!r} ends ({valid_until}) before it starts ({valid_from}).")
    sources = list(sources) + [""] * (len(descriptors) - len(sources))
    now = utcnow()
    with write_transaction():
        person = Person.get_or_none(Person.person_id == person_id)
        if person is None:
            if len(descriptors) == 0:
                raise EnrolmentError(f"Cannot enrol {person_id!r} without at least one usable photo.")
            person = Person(person_id=person_id, name=name or person_id, created_at=now)
            old_doors = None
            is_new = True
        else:
            if not person.active and not reinstate:
                raise EnrolmentError(
                    f"{person_id!r} ({person.name}) was revoked on {person.revoked_at:%Y-%m-%d %H:%M} UTC; "
                    "enrol with --reinstate to give them access again."
                )
            old_doors = person.doors
            is_new = False
        if name:
            person.name = name
        if groups is not None:
            person.groups_json = json.dumps(sorted(set(groups)))
        if doors is not None or replace_doors:
            person.doors_json = None if doors is None else json.dumps(sorted(set(doors)))
        if valid_from is not None:
            person.valid_from = valid_from
        if valid_until is not None:
            person.valid_until = valid_until
        if person.valid_from and person.valid_until and person.valid_until <= person.valid_from:
            raise EnrolmentError(f"The validity of {person_id!r} would end before it starts.")
        person.status = ACTIVE
        person.revoked_at = None
        person.updated_at = now
        person.save(force_insert=is_new)
        # The id is a person's again: their events must keep naming them.
        ForgottenPerson.delete().where(ForgottenPerson.digest == forgotten_digest(person_id)).execute()
        if len(descriptors):
            FaceDescriptor.insert_many([
                {"person": person_id, "vector": d.tobytes(), "source": str(src)[:512], "added_at": now}
                for d, src in zip(descriptors, sources)
            ]).execute()
        new_doors = person.doors
        # A door that loses this person must be told; a removal for every door
        # followed by the upsert for the remaining ones is simplest and safe.
        if not is_new and old_doors != new_doors and (
                new_doors is not None and (old_doors is None or set(old_doors) - set(new_doors))):
            _log(REMOVE, person_id, None, "doors changed")
        return _log(UPSERT, person_id, new_doors, "reinstate" if reinstate else ("enrol" if is_new else "update"))


def revoke(person_id):
    """Remove ``person_id``'s access at every door now; keep them (and their history) as revoked.

    Returns the change version.  Revoking a revoked person is an error.
    """
    with write_transaction():
        person = get_person(person_id)
        if not person.active:
            raise EnrolmentError(f"{person_id!r} ({person.name}) is already revoked.")
        now = utcnow()
        person.status = REVOKED
        person.revoked_at = now
        person.updated_at = now
        person.save()
        return _log(REMOVE, person_id, None, "revoke")


def forget(person_id):
    """Privacy erasure in the registry: delete the person, their descriptors and their
    earlier log rows, and log a removal for every door.  Returns the version.

    The removal row keeps only the bare id, which doors need to find what to
    delete.  Events and snapshots are erased by :func:`central.enrolment.forget_everywhere`.
    """
    if isinstance(database.obj, pw.SqliteDatabase):
        # Overwrite the deleted rows instead of leaving them in free pages.
        database.execute_sql("PRAGMA secure_delete = ON")
    with write_transaction():
        get_person(person_id)
        FaceDescriptor.delete().where(FaceDescriptor.person == person_id).execute()
        Person.delete().where(Person.person_id == person_id).execute()
        # The removal below supersedes them for every door, so the log stays complete.
        Change.delete().where(Change.person_id == person_id).execute()
        mark_forgotten(person_id)
        return _log(REMOVE, person_id, None, "forget")


def list_people():
    """Every person with their descriptor count, ordered by id: ``[(Person, count)]``."""
    count = pw.fn.COUNT(FaceDescriptor.id)
    query = (Person.select(Person, count.alias("n"))
             .join(FaceDescriptor, pw.JOIN.LEFT_OUTER).group_by(Person).order_by(Person.person_id))
    return [(p, p.n) for p in query]


def changes_after(version):
    """Every logged change newer than ``version``, oldest first."""
    return list(Change.select().where(Change.version > version).order_by(Change.version))


def unpublished_changes(limit=500):
    """Changes not yet published to the broker, oldest first."""
    return list(Change.select().where(Change.published_at.is_null())
                .order_by(Change.version).limit(limit))


def mark_published(version):
    """Record that change ``version`` reached the broker (or was superseded and skipped)."""
    Change.update(published_at=utcnow()).where(Change.version == version).execute()


def prune_log(keep):
    """Delete all but the newest ``keep`` changes; doors older than that get a snapshot."""
    with write_transaction():
        newest = current_version()
        cutoff = newest - keep
        if cutoff <= log_start():
            return 0
        deleted = Change.delete().where(Change.version <= cutoff).execute()
        # Insert-then-update rather than REPLACE, which PostgreSQL lacks.
        RegistryCounter.insert(key="log_start", value=0).on_conflict_ignore().execute()
        RegistryCounter.update(value=cutoff).where(RegistryCounter.key == "log_start").execute()
    return deleted


def active_people():
    """Every active person, ordered by id."""
    return list(Person.select().where(Person.status == ACTIVE).order_by(Person.person_id))


def anonymise_person_rows(person_id, placeholder=None):
    """Clear ``person_id`` from every other registered table with a ``person_id`` column.

    The events table (central's store) names the person of each event; this
    sets those references to ``placeholder`` (NULL by default) without
    needing to know the table.  Returns ``{table_name: rows_changed}``.
    """
    changed = {}
    for model in _models:
        if model in REGISTRY_MODELS:
            continue
        field = model._meta.fields.get("person_id")
        if field is None:
            continue
        if placeholder is not None:
            value = placeholder
        else:
            value = None if field.null else "forgotten"
        updates = {field: value}
        name_field = model._meta.fields.get("person_name")
        if name_field is not None:
            updates[name_field] = None if name_field.null else ""
        n = model.update(updates).where(field == person_id).execute()
        changed[model._meta.table_name] = n
    return changed


def advance_version(at_least):
    """Move the change counter up to ``at_least`` (if it is lower); return the version now.

    For a registry restored from a backup: doors hold versions it never
    issued, and would refuse every later change as a replay.  The skipped
    versions have no log rows, so ``log_start`` moves up too and every door
    gets a full snapshot at the new version.
    """
    with write_transaction():
        current = current_version()
        if at_least <= current:
            return current
        for key in ("version", "log_start"):
            RegistryCounter.insert(key=key, value=0).on_conflict_ignore().execute()
            RegistryCounter.update(value=at_least).where(RegistryCounter.key == key).execute()
    return at_least
