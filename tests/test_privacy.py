"""What a door keeps about people who left, and database passwords in URLs.

A revoked or forgotten person's anti-passback passes leave the door cache and
the policy's memory; stale passes go after the daily reset.  A PostgreSQL
password in a URL's query string is a config error and never logged.
"""

import datetime as dt
import logging

import numpy as np
import pytest

from bytelocker.cli import main
from central.db import redact
from config import secrets
from config.policy import PolicySection
from edge import cache
from edge.policy import ENTRY, AccessPolicy, Passage

UTC = dt.timezone.utc
SECRET_VARS = ("BYTELOCKER_MQTT_PASSWORD", "BYTELOCKER_SIGNING_KEY", "BYTELOCKER_DATABASE_PASSWORD",
               "BYTELOCKER_MQTT_TLS_KEY", "CREDENTIALS_DIRECTORY")


def person(person_id):
    d = np.random.default_rng(abs(hash(person_id)) % 1000).normal(size=(1, 128)).astype(np.float32)
    return {"person_id": person_id, "name": person_id, "groups": ["staff"], "descriptors": d}


@pytest.fixture
def door_cache(tmp_path):
    cache.open_cache(str(tmp_path / "cache.db"))
    cache.apply_changes([("upsert", person("alice")), ("upsert", person("bob"))], 1)
    yield
    cache.close_cache()


@pytest.fixture
def policy(door_cache):
    return AccessPolicy(PolicySection(anti_passback="hard", cooldown_seconds=0), "UTC")


def passages():
    return sorted(p.person_id for p in Passage.select())


# ------------------------------------------------------------------ door

def test_removing_a_person_removes_their_passes_from_the_cache_and_the_policy(policy):
    assert policy.check("alice").allowed and policy.check("bob").allowed
    assert passages() == ["alice", "bob"]

    cache.apply_changes([("remove", {"person_id": "alice"})], 2)

    assert passages() == ["bob"]
    assert policy.last_passage("alice") is None and policy.last_passage("bob") is not None


def test_a_full_snapshot_drops_the_passes_of_people_not_in_it(policy):
    assert policy.check("alice").allowed and policy.check("bob").allowed

    cache.replace_all([person("bob")], 5)

    assert passages() == ["bob"]
    assert policy.last_passage("alice") is None
    # Re-enrolled later, alice starts afresh: no stale anti-passback denial.
    cache.apply_changes([("upsert", person("alice"))], 6)
    assert policy.check("alice").allowed


def test_a_relayed_pass_of_someone_not_enrolled_here_is_not_kept(policy):
    now = dt.datetime.now(UTC)
    assert not policy.record_remote("mallory", ENTRY, now)
    assert policy.record_remote("bob", ENTRY, now)
    assert passages() == ["bob"] and policy.last_passage("mallory") is None


def test_passes_from_before_the_anti_passback_reset_are_pruned(door_cache):
    section = PolicySection(anti_passback="hard", anti_passback_reset="04:00", cooldown_seconds=0)
    policy = AccessPolicy(section, "UTC")
    monday = dt.datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    assert policy.check("alice", monday).allowed
    assert policy.check("bob", monday).allowed
    assert passages() == ["alice", "bob"]

    # After Tuesday's reset the Monday passes decide nothing: the first check prunes them.
    assert policy.check("bob", monday + dt.timedelta(hours=9)).allowed

    assert passages() == ["bob"]
    assert policy.last_passage("alice") is None
    assert AccessPolicy(section, "UTC").last_passage("alice") is None


def test_a_policy_that_is_gone_is_not_called_on_removal(door_cache):
    AccessPolicy(PolicySection(), "UTC")  # dropped at once
    cache.remove_person("bob")
    assert cache.people().keys() == {"alice"}


# ------------------------------------------------------------- database url

@pytest.mark.parametrize("url", [
    "postgresql://bl@db/x?password=hunter2",
    "postgresql://bl@db/x?sslmode=require&password=hunter2",
    "postgresql://bl@db/x?sslpassword=hunter2",
])
def test_a_password_in_the_query_is_a_secret_in_the_url(url):
    assert secrets.url_has_password(url)
    assert "hunter2" not in redact(url)


def test_urls_without_a_password_are_not_flagged():
    assert not secrets.url_has_password("postgresql://bl@db/x?sslmode=require")
    assert not secrets.url_has_password("postgresql://bl@db/x?password=")
    assert redact("postgresql://bl@db/x?sslmode=require") == "postgresql://bl@db/x?sslmode=require"
    assert redact("postgresql://bl:pw@db/x") == "postgresql://bl:***@db/x"


def test_a_password_in_the_query_of_database_url_fails_check_config(tmp_path, capsys, monkeypatch):
    for name in SECRET_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "central.yaml").write_text(
        "version: 1\ndatabase:\n  url: postgresql://bl@db/x?password=hunter2\n", encoding="utf-8")

    code = main(["check-config", "--kind", "central", "central.yaml"])

    out = capsys.readouterr()
    printed = out.out + out.err
    assert code == 1
    assert "database.url has a password in it" in printed and "BYTELOCKER_DATABASE_PASSWORD" in printed
    assert "hunter2" not in printed


def test_the_collector_logs_the_database_url_without_its_password(caplog):
    from types import SimpleNamespace

    from central.collector import store_url

    config = SimpleNamespace(database=SimpleNamespace(url="postgresql://bl@db/x?password=hunter2"))
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("storing events in %s", store_url(config))
    assert "hunter2" not in caplog.text and "password=***" in caplog.text
