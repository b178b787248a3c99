"""``bytelocker forget`` at central: a person's face data goes from everywhere it was stored.

Stranger sightings of their unrecognised visits, crops of events naming them
(also as an ambiguous face's ``nearest``), events sent later by an offline
door, a second forget, and a relative snapshot folder; on SQLite and on
PostgreSQL through the same code.
"""

import datetime as dt
import json
import os
import types

import numpy as np
import pytest

from bytelocker import contract
from bytelocker.errors import StorageError
from central import clusters, registry, retention, store
from central.db import open_database
from central.enrolment import forget_everywhere
from central.store import EventNearest, Snapshot, StoredEvent
from tests.postgres import postgres_cluster, postgres_url  # noqa: F401 (fixtures)

JPEG = b"\xff\xd8 a face crop \xff\xd9"


def face(seed):
    """A descriptor of unit length / 2, like dlib's (same-person distances 0.3-0.5)."""
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v) / 2


def near(descriptor, distance, seed=99):
    """A descriptor at exactly ``distance`` from ``descriptor``."""
    step = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return (descriptor + step / np.linalg.norm(step) * distance).astype(np.float32)


@pytest.fixture
def snaps(tmp_path):
    return str(tmp_path / "snaps")


def event(seq, event_type, details=None, jpeg=None, door="door-1"):
    return contract.Event.build(door, seq, event_type, details or {}, snapshot_jpeg=jpeg)


def stored(e):
    return StoredEvent.get(StoredEvent.event_id == str(e.event_id))


def files_under(folder):
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs)


def sighting(matcher, e, descriptor):
    """Cluster an unidentified event's face as central's alerter does."""
    row = stored(e)
    return matcher.assign(descriptor, event_id=row.event_id, door_id=row.door_id, seen_at=row.ts,
                          snapshot_path=row.snapshot_path)


def test_forget_deletes_the_persons_stranger_sightings_and_their_crops(central_db, snaps):
    alice = face(1)
    registry.enrol("alice", [alice])
    unknown = [event(i + 1, "unidentified", jpeg=JPEG) for i in range(3)]
    store.store_events(unknown, snaps)
    matcher = clusters.StrangerClusters(describer=object(), detector=object())
    # Alice came twice before she was enrolled; a real stranger once.
    hers = sighting(matcher, unknown[0], near(alice, 0.3))
    sighting(matcher, unknown[1], near(alice, 0.35, seed=7))
    theirs = sighting(matcher, unknown[2], face(2))
    stranger_crop = stored(unknown[2]).snapshot_path
    assert hers.id != theirs.id

    erased = forget_everywhere("alice", snaps)

    assert (erased.sightings, erased.snapshots) == (2, 2)
    assert files_under(snaps) == [stranger_crop]
    assert [s.event_id for s in clusters.Sighting.select()] == [str(unknown[2].event_id)]
    assert Snapshot.select().count() == 1
    assert [stored(e).snapshot_path for e in unknown[:2]] == [None, None]
    # Her visitor number is emptied, not reused; the stranger's is untouched.
    emptied = clusters.StrangerCluster.get_by_id(hers.id)
    assert (emptied.sightings, emptied.doors) == (0, [])
    assert clusters.StrangerCluster.get_by_id(theirs.id).sightings == 1
    # The matcher that held her face reloads: it no longer puts her into the old visitor.
    again = event(9, "unidentified", jpeg=JPEG)
    store.store_events([again], snaps)
    assert sighting(matcher, again, near(alice, 0.3)).id not in (hers.id, theirs.id)


def test_sightings_are_matched_within_the_given_threshold(central_db, snaps):
    alice = face(1)
    registry.enrol("alice", [alice])
    unknown = [event(1, "unidentified", jpeg=JPEG), event(2, "unidentified", jpeg=JPEG)]
    store.store_events(unknown, snaps)
    matcher = clusters.StrangerClusters(describer=object(), detector=object(), threshold=0.1)
    sighting(matcher, unknown[0], near(alice, 0.3))
    sighting(matcher, unknown[1], near(alice, 0.45))

    assert forget_everywhere("alice", snaps, threshold=0.4).sightings == 1
    assert [s.event_id for s in clusters.Sighting.select()] == [str(unknown[1].event_id)]


def test_a_relative_snapshot_folder_is_not_joined_twice(central_db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    registry.enrol("bob", [face(3)])
    store.store_events([event(1, "granted", {"person_id": "bob"}, jpeg=JPEG)], "relsnaps")
    assert Snapshot.get().path.startswith("relsnaps" + os.sep)

    erased = forget_everywhere("bob", "relsnaps")

    assert erased.snapshots == 1
    assert files_under(tmp_path / "relsnaps") == []
    assert Snapshot.select().count() == 0


def test_a_crop_that_cannot_be_deleted_stops_the_forget_before_any_row_changes(central_db, snaps):
    registry.enrol("bob", [face(3)])
    e = event(1, "granted", {"person_id": "bob"}, jpeg=JPEG)
    store.store_events([e], snaps)
    path = stored(e).snapshot_path
    # A folder where the file should be: removing it fails, and not as "missing" (also as root).
    os.remove(path)
    os.mkdir(path)

    with pytest.raises(StorageError, match="Cannot delete the snapshot"):
        forget_everywhere("bob", snaps)

    assert stored(e).person_id == "bob" and stored(e).snapshot_path == path
    assert Snapshot.select().count() == 1
    assert registry.Person.get_or_none(registry.Person.person_id == "bob") is not None
    os.rmdir(path)
    assert forget_everywhere("bob", snaps).version is not None
    assert stored(e).person_id is None and Snapshot.select().count() == 0


def test_events_sent_by_an_offline_door_after_the_forget_are_stored_anonymised(central_db, snaps):
    registry.enrol("carol", [face(4)])
    late = event(7, "granted", {"person_id": "carol", "direction": "entry"}, jpeg=JPEG, door="door-2")
    late_ambiguous = event(8, "denied", {"reason": "ambiguous", "nearest": "carol"}, jpeg=JPEG, door="door-2")
    forget_everywhere("carol", snaps)

    assert store.store_events([late, late_ambiguous], snaps) == 2

    assert [stored(e).person_id for e in (late, late_ambiguous)] == [None, None]
    assert stored(late).details == {"direction": "entry"}
    assert [stored(e).snapshot_path for e in (late, late_ambiguous)] == [None, None]
    assert files_under(snaps) == [] and Snapshot.select().count() == 0
    assert EventNearest.select().count() == 0
    # The id itself is not stored, only its hash.
    assert registry.ForgottenPerson.get().digest == registry.forgotten_digest("carol") != "carol"


def test_forgetting_an_id_no_longer_enrolled_scrubs_again_instead_of_refusing(central_db, snaps):
    registry.enrol("carol", [face(4)])
    forget_everywhere("carol", snaps)
    # Stored before this fix knew the id was forgotten (e.g. by an older central).
    StoredEvent.create(event_id="late-1", door_id="door-2", seq=9, ts=store.utcnow(), type="granted",
                       person_id="carol", received_at=store.utcnow())
    version = registry.current_version()

    erased = forget_everywhere("carol", snaps)

    assert erased.version is None and erased.events == 1
    assert StoredEvent.get(StoredEvent.event_id == "late-1").person_id is None
    assert registry.current_version() == version  # no second removal for the doors


def test_enrolling_a_forgotten_id_again_names_them_in_their_new_events(central_db, snaps):
    registry.enrol("dave", [face(5)])
    forget_everywhere("dave", snaps)
    registry.enrol("dave", [face(5)])

    e = event(1, "granted", {"person_id": "dave"})
    store.store_events([e], snaps)

    assert stored(e).person_id == "dave"


def test_an_ambiguous_face_names_its_nearest_person_outside_details(central_db, snaps):
    e = event(1, "denied", {"reason": "ambiguous", "nearest": "erin"}, jpeg=JPEG)
    store.store_events([e], snaps)

    assert "nearest" not in stored(e).details_json and "erin" not in stored(e).details_json
    assert EventNearest.get().person_id == "erin"


def test_forget_scrubs_ambiguous_faces_nearest_to_the_person(central_db, snaps):
    registry.enrol("erin", [face(6)])
    e = event(1, "denied", {"reason": "ambiguous", "nearest": "erin"}, jpeg=JPEG)
    other = event(2, "denied", {"reason": "ambiguous", "nearest": "frank"})
    store.store_events([e, other], snaps)
    # A row stored before central kept ``nearest`` out of details.
    StoredEvent.create(event_id="old-1", door_id="door-1", seq=3, ts=store.utcnow(), type="denied",
                       details_json=json.dumps({"reason": "ambiguous", "nearest": "erin"}, separators=(",", ":")),
                       received_at=store.utcnow())
    StoredEvent.create(event_id="old-2", door_id="door-1", seq=4, ts=store.utcnow(), type="denied",
                       details_json='{"reason":"ambiguous","nearest":"erin2"}', received_at=store.utcnow())

    erased = forget_everywhere("erin", snaps)

    assert erased.events == 2 and erased.snapshots == 1
    assert stored(e).snapshot_path is None and files_under(snaps) == []
    assert [n.person_id for n in EventNearest.select()] == ["frank"]
    assert StoredEvent.get(StoredEvent.event_id == "old-1").details == {"reason": "ambiguous"}
    assert StoredEvent.get(StoredEvent.event_id == "old-2").details["nearest"] == "erin2"


def test_forget_command_erases_sightings_and_says_when_the_id_was_already_gone(tmp_path, capsys):
    from bytelocker.cli import main

    snaps = tmp_path / "snaps"
    config = tmp_path / "central.yaml"
    config.write_text(f"database:\n  url: sqlite:///{tmp_path / 'central.db'}\n"
                      f"storage:\n  snapshot_dir: {snaps}\n"
                      "alerts:\n  stranger_threshold: 0.4\n")
    db = open_database(f"sqlite:///{tmp_path / 'central.db'}")
    try:
        alice = face(1)
        registry.enrol("alice", [alice])
        unknown = [event(1, "unidentified", jpeg=JPEG), event(2, "unidentified", jpeg=JPEG)]
        store.store_events(unknown, str(snaps))
        matcher = clusters.StrangerClusters(describer=object(), detector=object())
        sighting(matcher, unknown[0], near(alice, 0.3))
        sighting(matcher, unknown[1], near(alice, 0.45))
    finally:
        db.close()

    assert main(["forget", "-c", str(config), "--yes", "alice"]) == 0
    out = capsys.readouterr().out
    # alerts.stranger_threshold of central.yaml decides: 0.3 is her, 0.45 is not.
    assert "1 snapshot(s) and 1 stranger sighting(s) deleted" in out
    assert main(["forget", "-c", str(config), "--yes", "alice"]) == 0
    assert "was no longer enrolled" in capsys.readouterr().out
    # A typo is not a success: nobody of that id was ever enrolled or forgotten.
    assert main(["forget", "-c", str(config), "--yes", "alcie"]) == 1
    assert "No person with id 'alcie'" in capsys.readouterr().err


def test_enrol_refuses_a_door_central_does_not_list(tmp_path, capsys):
    from bytelocker.cli import main

    config = tmp_path / "central.yaml"
    config.write_text(f"database:\n  url: sqlite:///{tmp_path / 'central.db'}\n"
                      f"storage:\n  snapshot_dir: {tmp_path / 'snaps'}\n"
                      "doors:\n  front-in:\n  lab:\n")
    assert main(["enroll", "-c", str(config), "--id", "kit", "--door", "fornt-in", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "'fornt-in' is not one of the doors" in err and "Did you mean 'front-in'?" in err


def test_forget_erases_everywhere_on_postgresql(postgres_url, tmp_path):
    snaps = str(tmp_path / "snaps")
    db = open_database(postgres_url)
    try:
        alice = face(1)
        registry.enrol("alice", [alice])
        unknown = event(1, "unidentified", jpeg=JPEG)
        ambiguous = event(2, "denied", {"reason": "ambiguous", "nearest": "alice"}, jpeg=JPEG)
        store.store_events([unknown, ambiguous, event(3, "granted", {"person_id": "alice"}, jpeg=JPEG)], snaps)
        sighting(clusters.StrangerClusters(describer=object(), detector=object()), unknown, near(alice, 0.3))

        erased = forget_everywhere("alice", snaps)

        assert (erased.events, erased.snapshots, erased.sightings) == (2, 3, 1)
        assert files_under(snaps) == [] and clusters.Sighting.select().count() == 0
        assert EventNearest.select().count() == 0
        late = event(4, "granted", {"person_id": "alice"}, jpeg=JPEG, door="door-2")
        store.store_events([late], snaps)
        assert stored(late).person_id is None and files_under(snaps) == []
        assert forget_everywhere("alice", snaps).version is None
        assert StoredEvent.select().where(StoredEvent.person_id == "alice").count() == 0
    finally:
        db.close()


def test_sighting_search_reads_the_table_in_batches(central_db):
    alice = face(1)
    matcher = clusters.StrangerClusters(describer=object(), detector=object(), threshold=0.01)
    now = dt.datetime(2026, 11, 25)
    for i in range(7):
        matcher.assign(near(alice, 0.2 if i % 2 else 0.9, seed=i), event_id=f"e{i}", door_id="door-1",
                       seen_at=now)

    found = clusters.sightings_near([alice], 0.5, batch=3)

    assert sorted(e for e, _ in found) == ["e1", "e3", "e5"]


def test_retention_deletes_the_nearest_rows_with_their_events(central_db, snaps):
    old = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    store.store_events([contract.Event.build("door-1", 1, "denied", {"reason": "ambiguous", "nearest": "zed"},
                                             ts=old)], snaps)
    assert EventNearest.select().count() == 1

    retention.purge(types.SimpleNamespace(snapshot_retention_days=30, event_retention_days=365))

    assert EventNearest.select().count() == 0 and StoredEvent.select().count() == 0


def test_ctrl_d_at_the_forget_prompt_erases_nothing(tmp_path, capsys, monkeypatch):
    import builtins
    import sys

    from bytelocker.cli import main

    config = tmp_path / "central.yaml"
    config.write_text(f"database:\n  url: sqlite:///{tmp_path / 'central.db'}\n"
                      f"storage:\n  snapshot_dir: {tmp_path / 'snaps'}\n")
    db = open_database(f"sqlite:///{tmp_path / 'central.db'}")
    registry.enrol("alice", [face(1)])
    db.close()
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)

    def end_of_input(prompt=""):
        raise EOFError

    monkeypatch.setattr(builtins, "input", end_of_input)
    assert main(["forget", "-c", str(config), "alice"]) == 1
    out, err = capsys.readouterr()
    assert "Nothing erased." in out and "Traceback" not in err
    open_database(f"sqlite:///{tmp_path / 'central.db'}")
    assert registry.Person.get_or_none(registry.Person.person_id == "alice") is not None
