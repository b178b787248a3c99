"""Central's people registry and its versioned change log."""

import datetime as dt
import threading

import pytest

from bytelocker.errors import EnrolmentError
from central import registry
from central.db import open_database
from central.sync import answer_body, change_body
from tests.postgres import postgres_cluster, postgres_url  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def faces(detector, describer, astronaut, grace_hopper):
    """Real descriptors of two different people, computed once for this module."""
    return {name: describer.describe(image, detector.detect(image)[:1])[0]
            for name, image in (("eileen", astronaut), ("grace", grace_hopper))}


@pytest.fixture(autouse=True)
def central_db(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'central.db'}")
    yield db
    db.close()


def ops():
    return [(c.version, c.op, c.person_id, c.target) for c in registry.changes_after(0)]


def test_every_change_gets_the_next_version(faces):
    assert registry.current_version() == 0
    assert registry.enrol("eileen", [faces["eileen"]]) == 1
    assert registry.enrol("grace", [faces["grace"]]) == 2
    assert registry.revoke("eileen") == 3
    assert registry.current_version() == 3
    assert [v for v, *_ in ops()] == [1, 2, 3]


def test_enrolling_the_same_id_again_adds_descriptors_and_keeps_the_rest(faces):
    registry.enrol("eileen", [faces["eileen"]], name="Eileen Collins", groups=["crew"],
                   valid_until=dt.datetime(2030, 1, 1))
    registry.enrol("eileen", [faces["eileen"]])
    person = registry.get_person("eileen")
    assert registry.descriptors_of("eileen").shape == (2, 128)
    assert (person.name, person.groups, person.valid_until) == ("Eileen Collins", ["crew"], dt.datetime(2030, 1, 1))


def test_revoke_keeps_the_person_and_their_history(faces):
    registry.enrol("eileen", [faces["eileen"]])
    registry.revoke("eileen")
    person = registry.get_person("eileen")
    assert person.status == registry.REVOKED and person.revoked_at is not None
    assert registry.descriptors_of("eileen").shape == (1, 128)
    assert ops() == [(1, "upsert", "eileen", None), (2, "remove", "eileen", None)]


def test_revoked_person_is_enrolled_again_only_with_reinstate(faces):
    registry.enrol("eileen", [faces["eileen"]])
    registry.revoke("eileen")
    with pytest.raises(EnrolmentError, match="'eileen'.*revoked.*--reinstate"):
        registry.enrol("eileen", [faces["eileen"]])
    registry.enrol("eileen", [], reinstate=True)
    assert registry.get_person("eileen").active


def test_revoking_twice_or_an_unknown_id_is_an_error_naming_them(faces):
    registry.enrol("eileen", [faces["eileen"]])
    registry.revoke("eileen")
    with pytest.raises(EnrolmentError, match="'eileen'.*already revoked"):
        registry.revoke("eileen")
    with pytest.raises(EnrolmentError, match="'nobody'"):
        registry.revoke("nobody")


def test_forget_leaves_only_a_bare_removal_in_the_log(faces):
    registry.enrol("eileen", [faces["eileen"]], name="Eileen Collins")
    registry.enrol("grace", [faces["grace"]])
    registry.enrol("eileen", [faces["eileen"]])
    version = registry.forget("eileen")
    assert ops() == [(2, "upsert", "grace", None), (version, "remove", "eileen", None)]
    assert registry.Person.get_or_none(registry.Person.person_id == "eileen") is None
    assert registry.FaceDescriptor.select().where(registry.FaceDescriptor.person == "eileen").count() == 0


def test_narrowing_a_persons_doors_removes_them_everywhere_before_the_upsert(faces):
    registry.enrol("grace", [faces["grace"]])
    registry.enrol("grace", [], doors=["door-2"])
    assert ops()[1:] == [(2, "remove", "grace", None), (3, "upsert", "grace", ["door-2"])]


def test_validity_ending_before_it_starts_is_refused(faces):
    with pytest.raises(EnrolmentError, match="'eileen'"):
        registry.enrol("eileen", [faces["eileen"]], valid_from=dt.datetime(2030, 1, 2),
                       valid_until=dt.datetime(2030, 1, 1))


def test_changes_wait_in_the_log_until_published(faces):
    registry.enrol("eileen", [faces["eileen"]])
    registry.enrol("grace", [faces["grace"]])
    assert [c.version for c in registry.unpublished_changes()] == [1, 2]
    registry.mark_published(1)
    assert [c.version for c in registry.unpublished_changes()] == [2]


def test_pruning_the_log_moves_its_start(faces):
    for _ in range(5):
        registry.enrol("eileen", [faces["eileen"]])
    assert registry.prune_log(keep=2) == 3
    assert registry.log_start() == 3
    assert [c.version for c in registry.changes_after(0)] == [4, 5]


def test_upsert_superseded_by_a_revocation_is_not_sent(faces):
    registry.enrol("eileen", [faces["eileen"]])
    registry.revoke("eileen")
    first, second = registry.changes_after(0)
    assert change_body(first) is None
    assert change_body(second)["op"] == "remove"


def test_catch_up_answer_gives_the_current_state_of_changed_people(faces):
    registry.enrol("eileen", [faces["eileen"]])
    registry.enrol("grace", [faces["grace"]], doors=["door-2"])
    registry.revoke("eileen")
    registry.enrol("eileen", [faces["eileen"]], reinstate=True)
    body = answer_body("door-1", 1, "nonce-123")
    assert (body["kind"], body["from_version"], body["to_version"], body["nonce"]) == ("batch", 1, 4, "nonce-123")
    assert [(c["op"], c["person"]["id"]) for c in body["changes"]] == [("upsert", "eileen")]
    assert len(body["changes"][0]["person"]["descriptors"]) == 2


def test_door_with_empty_cache_or_behind_the_log_gets_a_snapshot(faces):
    registry.enrol("eileen", [faces["eileen"]])
    registry.enrol("grace", [faces["grace"]], doors=["door-2"])
    registry.enrol("eileen", [faces["eileen"]])
    empty = answer_body("door-1", 0, "nonce-123")
    assert empty["kind"] == "snapshot" and empty["version"] == 3
    assert [p["id"] for p in empty["people"]] == ["eileen"]
    registry.prune_log(keep=1)
    assert answer_body("door-2", 1, "nonce-456")["kind"] == "snapshot"
    assert answer_body("door-2", 2, "nonce-456")["kind"] == "batch"


def test_concurrent_writers_get_distinct_versions_in_commit_order(faces):
    errors = []

    def enrol_many(person_id):
        try:
            for _ in range(5):
                registry.enrol(person_id, [faces["eileen"]])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=enrol_many, args=(p,), name=f"writer-{p}") for p in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert [v for v, *_ in ops()] == list(range(1, 16))


def test_registry_works_on_postgresql(faces, postgres_url):
    db = open_database(postgres_url)
    try:
        registry.enrol("eileen", [faces["eileen"]], groups=["crew"])
        registry.enrol("grace", [faces["grace"]], doors=["door-2"])
        registry.enrol("grace", [faces["grace"]])
        registry.revoke("eileen")
        assert [(p.person_id, n) for p, n in registry.list_people()] == [("eileen", 1), ("grace", 2)]
        registry.prune_log(keep=2)
        assert registry.log_start() == 2
        version = registry.forget("grace")
        assert ops() == [(4, "remove", "eileen", None), (version, "remove", "grace", None)]
        assert answer_body("door-2", 0, "nonce-123")["people"] == []
    finally:
        db.close()
